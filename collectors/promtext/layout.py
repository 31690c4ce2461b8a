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

from collectors.promtext.parse import MAX_TS_MS
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


def _cut(big: bytes, rows: np.ndarray, ntok: np.ndarray) -> tuple[list[int], list[int]] | None:
    """For the sample lines `rows` (line indices) of `big`, where the run of their
    last `ntok` space-separated tokens starts (at a space) and ends (at the newline)."""
    b = np.frombuffer(big, np.uint8)
    nl = np.flatnonzero(b == _NL)
    if not len(rows) or int(rows[-1]) >= len(nl):
        return None
    ends = nl[rows]
    sp = np.flatnonzero(b == _SP)
    last = np.searchsorted(sp, ends) - ntok
    if last[0] < 0:
        return None
    starts = sp[last]
    line_starts = np.where(rows > 0, nl[rows - 1], -1)
    if not (starts > line_starts).all():  # a line with too few spaces: not this layout
        return None
    return starts.tolist(), ends.tolist()


def _split(
    view: memoryview, start: int, stop: int, starts: list[int], ends: list[int]
) -> tuple[bytes, bytes]:
    """(skeleton, token runs) of view[start:stop], whose runs are starts[i]:ends[i]
    (inside their own lines, so in order and apart): slices joined, no per-byte pass."""
    skeleton = b"".join([view[a:z] for a, z in zip([start, *ends], [*starts, stop], strict=True)])
    return skeleton, b"".join([view[a:z] for a, z in zip(starts, ends, strict=True)])


def read_many(
    bodies: list[bytes], layouts: list[Layout | None], nows: list[float]
) -> list[Snapshot | None]:
    """Each body through its target's layout (None where it has none or does not fit:
    parse that one in full). One set of numpy passes over all the bodies at once, to
    find the runs; then slices, joined."""
    out: list[Snapshot | None] = [None] * len(bodies)
    todo: list[int] = []
    lays: list[Layout] = []
    for k, (body, lay) in enumerate(zip(bodies, layouts, strict=True)):
        if lay is not None and body.endswith(b"\n") and body.count(b"\n") == lay.n_lines:
            todo.append(k)
            lays.append(lay)
    if not todo:
        return out
    line0 = np.cumsum([0] + [lay.n_lines for lay in lays])
    rows = np.concatenate([lay.rows + line0[j] for j, lay in enumerate(lays)])
    per = [len(lay.rows) for lay in lays]
    ntok = np.repeat([2 if lay.has_ts else 1 for lay in lays], per)
    big = b"".join(bodies[k] for k in todo)
    got = _cut(big, rows, ntok)
    if got is None:  # some body does not fit: try each on its own
        if len(todo) == 1:
            return out
        for k in todo:
            out[k] = read_many([bodies[k]], [layouts[k]], [nows[k]])[0]
        return out
    starts, ends = got
    view = memoryview(big)
    first_row = [0, *np.cumsum(per).tolist()]
    offset = 0
    for j, k in enumerate(todo):
        lay, body_len = lays[j], len(bodies[k])
        r0, r1 = first_row[j], first_row[j + 1]
        skeleton, runs = _split(view, offset, offset + body_len, starts[r0:r1], ends[r0:r1])
        if skeleton == lay.skeleton:
            out[k] = _values(runs.split(), lay, nows[k])
        offset += body_len
    return out


def _values(tokens: list[bytes], layout: Layout, now: float) -> Snapshot | None:
    n = len(layout.names)
    if len(tokens) != (2 * n if layout.has_ts else n):
        return None
    try:
        if layout.has_ts:
            stamps = tokens[1::2]
            if stamps.count(stamps[0]) == n:  # one stamp for the body (an exporter's tick)
                first = stamps[0]
                if not (first.isdigit() and len(first) <= 16 and int(first) <= MAX_TS_MS):
                    return None
                ts = np.full(n, int(stamps[0]) / 1000.0)
            else:
                # the full parser's `-?\d+` (less the sign), in its range: no int64 overflow
                if not b"".join(stamps).isdigit() or max(map(len, stamps)) > 16:
                    return None
                ms = np.fromiter(map(int, stamps), np.int64, n)
                if (ms > MAX_TS_MS).any():
                    return None
                ts = ms / 1000.0
            raw = tokens[0::2]
        else:
            raw = tokens
            ts = np.full(n, now)
        if b"_" in b"".join(raw):  # float() takes "1_000"; the full parse skips it
            return None
        values = np.fromiter(map(float, raw), np.float64, n)
    except ValueError:
        return None
    if not np.isfinite(values).all():  # NaN/Inf are skipped with a reason: the full parse does
        return None
    return Snapshot(layout.names, layout.labels, values, ts, [], layout)


def read(body: bytes, layout: Layout, now: float) -> Snapshot | None:
    """`body` through `layout`, or None when it does not fit (then parse it in full)."""
    return read_many([body], [layout], [now])[0]


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
    stamped = bool((snap.ts != now).any())  # try the likelier shape first
    for has_ts in (stamped, not stamped):
        got = _cut(body, rows, np.full(len(rows), 2 if has_ts else 1))
        if got is None:
            continue
        skeleton, _ = _split(memoryview(body), 0, len(body), *got)
        layout = Layout(snap.names, snap.labels, rows, len(lines), skeleton, has_ts)
        back = read(body, layout, now)
        if (
            back is not None
            and np.array_equal(back.values, snap.values)
            and np.array_equal(back.ts, snap.ts)
        ):
            return layout
    return None
