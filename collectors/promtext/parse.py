"""Exposition text -> Snapshot, with prometheus_client's parser.

A real scrape can be wrong in many ways; each costs only what it spoils:
an HTML page (a proxy or login page) or an empty body gives no samples and
one reason; a body cut short loses its last, partial line; a line that is not
a sample (a title, a separator) is skipped; NaN/Inf values and series with too
many labels are skipped (see SnapshotBuilder). Every skip is one reason string.

Speed: dcgm-exporter repeats one label set on every field of a GPU, and
prometheus_client's label parser walks each character in Python (~20k
samples/s here). So each line is split by a regex into name, `{labels}`,
value and timestamp; prometheus_client parses each *distinct* label block
once, and values are read with float(). HELP/TYPE lines are not needed:
mappers go by metric name (and prometheus_client would rename the samples of
a `counter` family not ending in _total).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from collectors.promtext.series import (
    MAX_LABEL_CHARS,
    MAX_LABELS,
    Snapshot,
    SnapshotBuilder,
    storable,
)

# A sample's timestamp beyond this many ms (2**53: ~285,000 years, exact as a double and
# as int64 microseconds), or of more than 16 digits, is skipped with a reason, never
# converted (int() of 4,300 digits raises, a float of 400 overflows).
MAX_TS_MS = 2**53

# The blanks before `{` belong to the optional label group: `[ \t]*` then `[ \t]+` after
# a bare name could split one run of blanks any way, and a line of a name, a million
# spaces and three tokens took hours (quadratic backtracking).
_SAMPLE = re.compile(
    r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:[ \t]*(\{.*\}))?[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$"
)
# prometheus_client's label parser is superlinear in a block's length (80,000 chars:
# 0.5 s); 40 labels of 1,024 chars fit well below this: a longer block is not parsed
MAX_BLOCK_CHARS = 64 << 10

# A histogram bucket's `le` is split off so its other labels are parsed once per series.
_LE = re.compile(r'(?:^|,)le="([^"\\]*)"')


def looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith("<") or "<html" in head or "<!doctype" in head


def parse_labels(block: str) -> dict[str, str]:
    """A `{k="v",...}` block -> dict, by prometheus_client (escapes and all)."""
    for family in text_string_to_metric_families(f"x{block} 0\n"):
        for s in family.samples:
            return dict(s.labels)
    return {}


# Label blocks seen before, parsed: a target's blocks are the same scrape after
# scrape (one per GPU, port, bucket), so each is parsed once per process, not
# once per scrape. The dicts are shared: nothing downstream mutates labels.
_LABELS_CACHE: dict[str, dict[str, str]] = {}
_LABELS_CACHE_MAX = 200_000
_CACHED_BLOCK_CHARS = 4096  # a real exporter's blocks are a few hundred chars


def cached_labels(block: str) -> dict[str, str]:
    labels = _LABELS_CACHE.get(block)
    if labels is None:
        if len(block) > MAX_BLOCK_CHARS:
            raise ValueError(f"labels over {MAX_BLOCK_CHARS} chars")
        labels = parse_labels(block)  # ValueError: not cached, reported by the caller
        if len(block) > MAX_LABEL_CHARS and any(len(v) > MAX_LABEL_CHARS for v in labels.values()):
            raise ValueError(f"a label value over {MAX_LABEL_CHARS} chars")
        if not storable(block):  # a NUL byte in the body
            raise ValueError("a NUL character")
        if len(block) > _CACHED_BLOCK_CHARS:
            return labels  # parsed each time: 200,000 blocks of 64 KiB would be 13 GB
        if len(_LABELS_CACHE) >= _LABELS_CACHE_MAX:
            _LABELS_CACHE.clear()
        _LABELS_CACHE[block] = labels
    return labels


def parse_exposition(
    text: str,
    where: str,
    *,
    now: float | None = None,
    extra_labels: Mapping[str, str] | None = None,
    max_labels: int = MAX_LABELS,
    complete: bool = False,
) -> Snapshot:
    """Parse one `/metrics` body. `extra_labels` are added where a series lacks them
    (as Prometheus adds `instance`/`job` to what it scrapes). `complete` says the
    text is known to be whole (a file cut from a document, without its final newline)."""
    now = time.time() if now is None else now
    b = SnapshotBuilder(where, max_labels)
    if not text.strip():
        b.skipped.append(f"{where}: empty body, nothing parsed")
        return b.build()
    if looks_like_html(text):
        b.skipped.append(f"{where}: body is HTML, not metrics; scrape skipped")
        return b.build()
    lines = text.split("\n")
    if not text.endswith("\n") and not complete:
        # A complete exposition ends with a newline: the last line may be cut mid-value.
        b.skipped.append(f"{where}: truncated body, partial last line dropped: {lines[-1][:60]!r}")
        lines = lines[:-1]
    extra = dict(extra_labels or {})
    blocks: dict[str, Mapping[str, str] | None] = {"": extra}
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s[0] == "#":
            continue
        m = _SAMPLE.match(s)
        if m is None:
            b.skipped.append(f"{where}: line {n} is not a sample, skipped: {s[:60]!r}")
            continue
        name, block, raw, ts_ms = m.groups()
        block = block or ""
        le = None
        if 'le="' in block:
            inner = block[1:-1]
            lm = _LE.search(inner)
            if lm is not None:
                le = lm.group(1)
                rest = (inner[: lm.start()] + inner[lm.end() :]).strip(",")
                block = "{" + rest + "}" if rest else ""
        labels: Mapping[str, str] | None
        if block in blocks:
            labels = blocks[block]
        else:
            try:
                parsed = cached_labels(block)
                labels = {**extra, **parsed} if extra else parsed
            except ValueError as exc:
                labels = None
                b.skipped.append(f"{where}: line {n}: bad labels ({exc}), skipped: {s[:60]!r}")
            blocks[block] = labels
        if labels is None:
            continue
        if le is not None:
            labels = {**labels, "le": le}
        try:
            # Python's float() also takes "1_000" and non-ASCII digits; the exposition
            # format (Go's ParseFloat) does not
            if "_" in raw or not raw.isascii():
                raise ValueError(raw)
            value = float(raw)
        except ValueError:
            b.skipped.append(f"{where}: line {n}: value {raw[:20]!r} is not a number, skipped")
            continue
        ident = block if le is None else f"{block}le={le}"
        if ts_ms and (len(ts_ms.lstrip("-")) > 16 or abs(int(ts_ms)) > MAX_TS_MS):
            b.skipped.append(f"{where}: line {n}: timestamp {ts_ms[:24]!r} out of range, skipped")
            continue
        b.add(name, labels, value, int(ts_ms) / 1000.0 if ts_ms else now, ident=ident)
    return b.build()
