"""A target's body layout: the second scrape reads only the values.

An exporter's series are the same scrape after scrape; only the values (and
timestamps) change. After a body has been parsed in full and cleanly (no line
skipped, no NaN), its *layout* is kept: the body's bytes with every value and
timestamp token cut out (the skeleton), which lines are samples, and the
parsed names and labels. The next body of that target is split with a few
numpy passes over its bytes: the last one or two space-separated tokens of
each sample line are cut out, and if what remains equals the skeleton byte for
byte, the series are the same, in the same order, and only the tokens need
reading (float() on each, as the full parser does). Anything else (a new or
missing series, a changed label, a NaN, a bad value, a cut body) falls back to
the full parse, which learns the new layout.

Equal skeletons imply equal series: a cut token holds no space and no
newline, so with the same newlines in the same places, each line's text
before its value is the same bytes as before.

The layout object is also an identity: a Snapshot read through it carries it
(`Snapshot.layout`), so mappers can reuse per-series work while it holds.
"""

from __future__ import annotations

import numpy as np

from collectors.promtext.series import Snapshot

_NL, _SP = 10, 32


class Layout:
    """What a clean body of one target looked like (compared by identity)."""

    __slots__ = ("has_ts", "labels", "n_lines", "names", "rows", "skeleton")

    def __init__(
        self,
        names: list[str],
        labels: list,
        rows: np.ndarray,
        n_lines: int,
        skeleton: bytes,
        has_ts: bool,
    ):
        self.names, self.labels, self.rows = names, labels, rows
        self.n_lines, self.skeleton, self.has_ts = n_lines, skeleton, has_ts


def _tokens(body: bytes, rows: np.ndarray, has_ts: bool) -> tuple[bytes, list[bytes]] | None:
    """(skeleton, tokens) of `body` with the last 1 (value) or 2 (value, timestamp)
    space-separated tokens of each sample line (index in `rows`) cut out."""
    b = np.frombuffer(body, np.uint8)
    nl = np.flatnonzero(b == _NL)
    if not len(rows) or int(rows[-1]) >= len(nl):
        return None
    ends = nl[rows]
    sp = np.flatnonzero(b == _SP)
    last = np.searchsorted(sp, ends) - (2 if has_ts else 1)
    if len(last) and last[0] < 0:
        return None
    starts = sp[last]  # each token run starts at a space, ends at the newline
    line_starts = np.where(rows > 0, nl[rows - 1], -1)
    if not (starts > line_starts).all():  # a line with too few spaces: not this layout
        return None
    # runs lie inside their own lines, so they do not touch: the xor of their edges,
    # accumulated, is 1 exactly inside a run
    edge = np.zeros(len(b) + 1, np.bool_)
    edge[starts] = True
    edge[ends] = True
    cut = np.logical_xor.accumulate(edge)[: len(b)]
    return b[~cut].tobytes(), b[cut].tobytes().split()


def read(body: bytes, layout: Layout, now: float) -> Snapshot | None:
    """`body` through `layout`, or None when it does not fit (then parse it in full)."""
    if not body.endswith(b"\n") or body.count(b"\n") != layout.n_lines:
        return None
    got = _tokens(body, layout.rows, layout.has_ts)
    if got is None or got[0] != layout.skeleton:
        return None
    tokens = got[1]
    n = len(layout.names)
    if len(tokens) != (2 * n if layout.has_ts else n):
        return None
    try:
        if layout.has_ts:
            stamps = tokens[1::2]
            if not b"".join(stamps).isdigit():  # the full parser's `-?\d+`, less the sign
                return None
            values = np.fromiter(map(float, tokens[0::2]), np.float64, n)
            ts = np.fromiter(map(int, stamps), np.int64, n) / 1000.0
        else:
            values = np.fromiter(map(float, tokens), np.float64, n)
            ts = np.full(n, now)
    except ValueError:
        return None
    if not np.isfinite(values).all():  # NaN/Inf are skipped with a reason: the full parse does
        return None
    return Snapshot(layout.names, layout.labels, values, ts, [], layout)


def learn(body: bytes, snap: Snapshot, now: float) -> Layout | None:
    """The layout of a body `snap` was parsed from in full, if it can be read back exactly."""
    if snap.skipped or not len(snap) or not body.endswith(b"\n"):
        return None
    lines = body.split(b"\n")[:-1]
    rows = np.array(
        [i for i, line in enumerate(lines) if line.strip() and not line.strip().startswith(b"#")],
        dtype=np.int64,
    )
    if len(rows) != len(snap):
        return None
    for has_ts in (False, True):
        got = _tokens(body, rows, has_ts)
        if got is None:
            continue
        layout = Layout(snap.names, snap.labels, rows, len(lines), got[0], has_ts)
        back = read(body, layout, now)
        if (
            back is not None
            and np.array_equal(back.values, snap.values)
            and np.array_equal(back.ts, snap.ts)
        ):
            return layout
    return None
