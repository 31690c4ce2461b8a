"""Exposition text -> Snapshot, with prometheus_client's parser.

A real scrape can be wrong in many ways; each costs only what it spoils:
an HTML page (a proxy or login page) or an empty body gives no samples and
one reason; a body cut short loses its last, partial line; a line that is not
a sample (a title, a separator) is skipped; NaN/Inf values and series with too
many labels are skipped (see SnapshotBuilder). Every skip is one reason string.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from collectors.promtext.series import MAX_LABELS, Snapshot, SnapshotBuilder

_SAMPLE_LINE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?[ \t]+\S+([ \t]+-?\d+)?[ \t]*$")


def looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith("<") or "<html" in head or "<!doctype" in head


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
    kept = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            # HELP/TYPE dropped: mappers go by name, and prometheus_client renames
            # the samples of a `counter` family not ending in _total (x -> x_total).
            continue
        if _SAMPLE_LINE.match(s):
            kept.append(s)
        else:
            b.skipped.append(f"{where}: line {n} is not a sample, skipped: {s[:60]!r}")
    extra = dict(extra_labels or {})
    try:
        _add_families("\n".join(kept) + "\n", b, now, extra)
    except ValueError:
        # One bad line spoils prometheus_client's generator: parse line by line instead.
        b = _line_by_line(kept, b, now, extra, where, max_labels)
    return b.build()


def _add_families(text: str, b: SnapshotBuilder, now: float, extra: dict[str, str]) -> None:
    staged = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            staged.append(s)
    for s in staged:
        labels = {**extra, **s.labels} if extra else s.labels
        b.add(s.name, labels, s.value, s.timestamp if s.timestamp is not None else now)


def _line_by_line(
    lines: list[str],
    prev: SnapshotBuilder,
    now: float,
    extra: dict[str, str],
    where: str,
    max_labels: int,
) -> SnapshotBuilder:
    b = SnapshotBuilder(where, max_labels)
    b.skipped.extend(prev.skipped)
    for line in lines:
        try:
            _add_families(line + "\n", b, now, extra)
        except ValueError as exc:
            b.skipped.append(f"{where}: unparsable line skipped ({exc}): {line[:60]!r}")
    return b
