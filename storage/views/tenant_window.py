"""A sample table's window sums per key, kept between refreshes in 1 s slots.

The tenants' history path (storage/views/tenants.py) needs, per key of `gpu_samples`
or `slice_samples` over `(at - w, at]`: util_pct's sum and count and the newest
non-NULL memory in use. Read whole, that is 3 M rows at 100,000 GPUs over 30 s on
every refresh; a refresh one second later shares 29 of those seconds. Here each whole
second of the window (slot j: `ts` in `(j s, (j + 1) s]`) is read once and kept on
the reader (the app's, for as long as it lives), with the number of rows it had;
a refresh counts the window's rows per slot (`ts` only) and reads again only the
slots whose count changed (rows written late, retention) or are new, plus the
window's part seconds at either end. The rows tables are appended to and deleted
from, never updated (storage/store.py, storage/retention.py): a slot whose count
did not change holds the rows it held.

Kept only on a reader in this process (`LocalReader`): its object lives with the
connection it reads; a bare connection or a remote reader reads the window whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.keyed import GPUS, SLICES
from storage.live_window import SLOT_US, padded
from storage.reader import LocalReader
from storage.views.query import Source, run

# Slots kept beyond the window on either side: a cursor stepping back a second or two
# (time travel, a refresh shown one second behind) reads nothing again.
MARGIN_SLOTS = 2
# Runs of this many seconds or more to read are read as one span by an aggregate (the
# first refresh reads the window so, at the cost of the plain aggregate); the span's
# seconds are taken away one by one as they leave the window.
BLOCK_SLOTS = 4
# Slot changes to a window's running sums before they are added up again from the slots.
REBASE_STEPS = 600
_EPOCH = datetime(1970, 1, 1)

# sample table -> (rows table, its decoded form for readers, id column)
_ROWS = {
    "gpu_samples": (GPUS.rows, GPUS.rows_read, GPUS.id_col),
    "slice_samples": (SLICES.rows, SLICES.rows_read, SLICES.id_col),
}
# Rows per slot of (lo, hi] (µs; both on slot bounds): `ts` alone is decoded.
_COUNTS = """
SELECT '{table}' AS t, (epoch_us(ts) - 1) // 1000000 AS slot, count(*) AS n
FROM {rows} WHERE ts > $lo AND ts <= $hi GROUP BY ALL
"""
# Several seconds per key at once (their memory: the aggregate's arg_max, as tenants.py).
_BLOCK = """
SELECT {id} AS id, sum(util_pct) AS s, count(util_pct) AS n,
       arg_max(mem_used_bytes, ts) FILTER (WHERE mem_used_bytes IS NOT NULL) AS mem,
       max(ts) FILTER (WHERE mem_used_bytes IS NOT NULL) AS mem_ts
FROM {rows} WHERE ts > $lo AND ts <= $hi GROUP BY {id}
"""
_READ = """
SELECT {id} AS id, ts, util_pct, mem_used_bytes AS mem
FROM {rows} WHERE ts > $lo AND ts <= $hi
"""


@dataclass
class Sums:
    """Per key id (dense arrays, index = id): util_pct's sum and count; the newest
    non-NULL memory in use, its time (µs) and whether there is one."""

    total: np.ndarray
    count: np.ndarray
    mem: np.ndarray
    mem_ts: np.ndarray
    has_mem: np.ndarray

    @classmethod
    def empty(cls, size: int) -> Sums:
        return cls(
            np.zeros(size),
            np.zeros(size, dtype=np.int64),
            np.zeros(size, dtype=np.int64),
            np.zeros(size, dtype=np.int64),
            np.zeros(size, dtype=bool),
        )


@dataclass
class _Slot:
    """Consecutive seconds' rows per key: from second `first`, the rows each second
    had (`counts`); util_pct's sum and count (dense); each key's newest non-NULL
    memory (keys `mem_ids`, unique). A part second's `first` is -1."""

    first: int
    counts: tuple[int, ...]
    size: int  # the largest key id + 1
    total: np.ndarray
    count: np.ndarray
    mem_ids: np.ndarray
    mem: np.ndarray
    mem_ts: np.ndarray


@dataclass
class _Kept:
    """A table's kept slots, and the sums of those of the last window (`summed`),
    kept as the window moves: the slot that came in added, the one that left taken
    away (an order of additions other than the slots' own: the last bits of a sum
    differ; they are added up again from the slots every REBASE_STEPS changes)."""

    slots: dict[int, _Slot] = field(default_factory=dict)
    summed: dict[int, _Slot] = field(default_factory=dict)
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    count: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    steps: int = 0
    # the newest span's keys with memory: a span with the same keys shares the array,
    # so a window's memory skips it by identity (_combine)
    mem_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sum_window(self, want: dict[int, _Slot]) -> None:
        """`total` and `count` over the spans `want` (a span's id -> the span)."""
        gone = [j for j, s in self.summed.items() if want.get(j) is not s]
        new = [j for j, s in want.items() if self.summed.get(j) is not s]
        self.steps += len(gone) + len(new)
        size = max([len(self.total), *(want[j].size for j in new)])
        if self.steps > REBASE_STEPS or len(gone) + len(new) > len(want):
            self.steps, self.summed = 0, {}
            gone, new = [], list(want)
            self.total, self.count = np.zeros(size), np.zeros(size, dtype=np.int64)
        elif size > len(self.total):
            self.total, self.count = padded(self.total, size), padded(self.count, size)
        for j in gone:
            s = self.summed.pop(j)
            self.total[: s.size] -= s.total
            self.count[: s.size] -= s.count
        for j in new:
            s = self.summed[j] = want[j]
            self.total[: s.size] += s.total
            self.count[: s.size] += s.count

    def share_keys(self, slot: _Slot) -> None:
        if len(slot.mem_ids) == len(self.mem_keys) and np.array_equal(slot.mem_ids, self.mem_keys):
            slot.mem_ids = self.mem_keys
        else:
            self.mem_keys = slot.mem_ids


def _us(t: datetime) -> int:
    return round((t - _EPOCH) / timedelta(microseconds=1))


def _ts(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _fold(rows: _Rows, first: int = 0, k: int = 1) -> list[_Slot]:
    """Rows (in the order read) of k consecutive slots from `first` (one span: k = 1)
    to a _Slot each: sums per (slot, key); the newest memory per key, of rows as new
    as each other the first (the aggregate's arg_max)."""
    ids, ts, u, u_ok, m, m_ok = rows
    size = int(ids.max(initial=-1)) + 1
    slot = (ts - 1) // SLOT_US - first if k > 1 else np.zeros(len(ids), dtype=np.int64)
    key = slot * size + ids if k > 1 else ids
    total = np.zeros(k * size)
    count = np.zeros(k * size, dtype=np.int64)
    if len(key) < 2 or bool((key[1:] > key[:-1]).all()):
        # as written ((ts, id) order, one row per key and second): each (slot, key)
        # once, in slot order; sums are the values themselves
        total[key[u_ok]] = u[u_ok]
        count[key[u_ok]] = 1
        pick = np.flatnonzero(m_ok)
    else:
        total += np.bincount(key[u_ok], weights=u[u_ok], minlength=k * size)
        count += np.bincount(key[u_ok], minlength=k * size)
        pick = np.flatnonzero(m_ok)
        if len(pick) and np.bincount(key[pick]).max() > 1:  # a key twice in a slot
            order = np.lexsort((-pick, ts[pick], key[pick]))
            last = np.ones(len(order), dtype=bool)
            last[:-1] = key[pick][order][1:] != key[pick][order][:-1]
            pick = np.sort(pick[order[last]])
        # slot order, the order read within a slot
        pick = pick[np.argsort(slot[pick], kind="stable")]
    bounds = np.searchsorted(slot[pick], np.arange(k + 1)) if k > 1 else np.array([0, len(pick)])
    n_rows = np.bincount(slot, minlength=k) if k > 1 else np.array([len(ids)])
    return [
        _Slot(
            first + j if k > 1 else first,
            (int(n_rows[j]),),
            size,
            total[j * size : (j + 1) * size],
            count[j * size : (j + 1) * size],
            *(a[pick[bounds[j] : bounds[j + 1]]] for a in (ids, m, ts)),
        )
        for j in range(k)
    ]


def _values(col: pa.ChunkedArray, fill: float | int) -> tuple[np.ndarray, np.ndarray]:
    ok = pc.is_valid(col).to_numpy(zero_copy_only=False)
    return pc.fill_null(col, fill).to_numpy(zero_copy_only=False), ok


def _read(src: Source, table: str, lo_us: int, hi_us: int) -> _Rows:
    """The rows of (lo, hi]: ids, times (µs), util_pct and memory with where each is
    not NULL."""
    _, rows, id_col = _ROWS[table]
    t = run(src, _READ.format(id=id_col, rows=rows), {"lo": _ts(lo_us), "hi": _ts(hi_us)})
    ids = t.column("id").to_numpy().astype(np.int64, copy=False)
    ts = pc.cast(t.column("ts"), pa.int64()).to_numpy()
    u, u_ok = _values(t.column("util_pct"), 0.0)
    m, m_ok = _values(t.column("mem"), 0)
    return ids, ts, u.astype(np.float64, copy=False), u_ok, m.astype(np.int64, copy=False), m_ok


def _slots_of(src: Source, table: str, first: int, last: int) -> dict[int, _Slot]:
    """Slots first..last (inclusive) read in one statement."""
    rows = _read(src, table, first * SLOT_US, (last + 1) * SLOT_US)
    return dict(zip(range(first, last + 1), _fold(rows, first, last - first + 1), strict=True))


def _runs(slots: list[int]) -> list[tuple[int, int]]:
    """Sorted slot numbers as (first, last) runs of consecutive ones."""
    out: list[tuple[int, int]] = []
    for j in slots:
        if out and out[-1][1] == j - 1:
            out[-1] = (out[-1][0], j)
        else:
            out.append((j, j))
    return out


def window_sums(
    src: LocalReader,
    tables: list[str],
    at: datetime,
    window_s: float,
    dense: Callable[[Source], AbstractContextManager[Source]],
) -> dict[str, Sums]:
    """Per key of each of `tables` over (at - window_s, at]: the kept slots checked
    against the rows per slot now (one statement), the changed and new ones read, the
    part seconds read."""
    lo_us, hi_us = _us(at - timedelta(seconds=window_s)), _us(at)
    j0 = -(-lo_us // SLOT_US)  # the first slot wholly inside
    j1 = hi_us // SLOT_US  # slots j0..j1 - 1 are
    if j1 <= j0:  # under a second: no whole slot
        return {t: _combine(_fold(_read(src, t, lo_us, hi_us), -1), Sums.empty(0)) for t in tables}
    lock = src.__dict__.setdefault("_tenant_window_lock", threading.Lock())
    with lock:
        kept_all: dict[str, _Kept] = src.__dict__.setdefault("_tenant_window", {})
        counts = run(
            src,
            " UNION ALL ".join(_COUNTS.format(table=t, rows=_ROWS[t][0]) for t in tables),
            {"lo": _ts(j0 * SLOT_US), "hi": _ts(j1 * SLOT_US)},
        )
        now = {
            (t, j): n
            for t, j, n in zip(
                counts.column("t").to_pylist(),
                counts.column("slot").to_pylist(),
                counts.column("n").to_pylist(),
                strict=True,
            )
        }
        out = {}
        for table in tables:
            kept = kept_all.setdefault(table, _Kept())
            _refresh(src, table, kept, j0, j1, now, dense)
            sums = Sums.empty(0)
            sums.total, sums.count = kept.total.copy(), kept.count.copy()
            # newest first: an older span then only fills the keys no newer one had
            spans = sorted(kept.summed.values(), key=lambda x: -x.first)
            bounds = (lo_us, j0 * SLOT_US, j1 * SLOT_US, hi_us)
            out[table] = _with_parts(src, table, bounds, spans, sums)
    return out


def _refresh(
    src: LocalReader,
    table: str,
    kept: _Kept,
    j0: int,
    j1: int,
    now: dict[tuple[str, int], int],
    dense: Callable[[Source], AbstractContextManager[Source]],
) -> None:
    """`kept`'s spans made to cover seconds j0..j1 - 1 as they are now (`now`: rows
    per (table, second)), and its running sums theirs."""
    for span in {id(x): x for x in kept.slots.values()}.values():
        last = span.first + len(span.counts) - 1
        inside = range(max(span.first, j0), min(last, j1 - 1) + 1)
        changed = any(span.counts[j - span.first] != now.get((table, j), 0) for j in inside)
        if len(span.counts) > 1 and not changed and span.first < j0 <= last < j1:
            changed = not _trim(src, table, kept, span, j0)  # its older seconds left
        elif len(span.counts) > 1 and (span.first < j0 or last >= j1):
            changed = True  # (its newest memory may be in the seconds that left)
        if changed:
            for j in range(span.first, last + 1):
                if kept.slots.get(j) is span:
                    del kept.slots[j]
    stale = [j for j in range(j0, j1) if j not in kept.slots]
    for first, last in _runs(stale)[::-1]:  # newest first: its keys are shared
        if last - first + 1 >= BLOCK_SLOTS:
            counts = tuple(now.get((table, j), 0) for j in range(first, last + 1))
            with dense(src) as cur:
                got = {first: _block(cur, table, first, counts)}
        else:
            got = _slots_of(src, table, first, last)
        for j in sorted(got, reverse=True):
            kept.share_keys(got[j])
            kept.slots.update(dict.fromkeys(range(j, j + len(got[j].counts)), got[j]))
    for j in [j for j in kept.slots if j < j0 - MARGIN_SLOTS or j >= j1 + MARGIN_SLOTS]:
        del kept.slots[j]
    kept.sum_window({id(x): x for x in (kept.slots[j] for j in range(j0, j1))})


def _trim(src: Source, table: str, kept: _Kept, span: _Slot, j0: int) -> bool:
    """`span` (several seconds) without its seconds before j0, read again and taken
    away (they stay kept, as seconds of their own); False where they changed."""
    k = j0 - span.first
    old = _slots_of(src, table, span.first, j0 - 1)
    if tuple(old[j].counts[0] for j in range(span.first, j0)) != span.counts[:k]:
        return False
    total, count = span.total.copy(), span.count.copy()
    for x in old.values():
        total[: x.size] -= x.total
        count[: x.size] -= x.count
    # the span's newest memory of a key is its newest: one in the seconds taken away
    # means none in the rest
    keep = span.mem_ts > j0 * SLOT_US
    mem_ids = span.mem_ids if keep.all() else span.mem_ids[keep]
    rest = _Slot(
        j0, span.counts[k:], span.size, total, count, mem_ids, span.mem[keep], span.mem_ts[keep]
    )
    kept.slots.update(old)
    kept.slots.update(dict.fromkeys(range(j0, j0 + len(rest.counts)), rest))
    return True


def _block(cur: Source, table: str, first: int, counts: tuple[int, ...]) -> _Slot:
    """Seconds first.. (their rows per second `counts`, as counted) read as one span,
    by DuckDB's aggregate per key (a first refresh, a cursor moved far)."""
    _, rows, id_col = _ROWS[table]
    t = run(
        cur,
        _BLOCK.format(id=id_col, rows=rows),
        {"lo": _ts(first * SLOT_US), "hi": _ts((first + len(counts)) * SLOT_US)},
    )
    ids = t.column("id").to_numpy().astype(np.int64, copy=False)
    size = int(ids.max(initial=-1)) + 1
    total, count = np.zeros(size), np.zeros(size, dtype=np.int64)
    total[ids] = pc.fill_null(t.column("s"), 0.0).to_numpy(zero_copy_only=False)
    count[ids] = t.column("n").to_numpy()
    has = pc.is_valid(t.column("mem")).to_numpy(zero_copy_only=False)
    mem = pc.fill_null(t.column("mem"), 0).to_numpy(zero_copy_only=False)[has]
    mem_ts = pc.cast(t.column("mem_ts"), pa.int64()).to_numpy(zero_copy_only=False)[has]
    return _Slot(first, counts, size, total, count, ids[has], mem.astype(np.int64), mem_ts)


def _with_parts(
    src: Source, table: str, bounds: tuple[int, int, int, int], spans: list[_Slot], out: Sums
) -> Sums:
    """`out` (the whole slots' sums) with the part seconds at the window's ends
    (lo, j0] and (j1, hi] (bounds: lo, j0, j1, hi in µs), and the memory over all."""
    lo_us, j0_us, j1_us, hi_us = bounds
    parts: list[_Slot] = []
    if hi_us > j1_us:
        spans[:0] = parts = _fold(_read(src, table, j1_us, hi_us), -1)
    if lo_us < j0_us:
        spans += (left := _fold(_read(src, table, lo_us, j0_us), -1))
        parts = parts + left
    for p in parts:  # the part seconds' sums: the whole ones' are `out`'s
        out.total, out.count = padded(out.total, p.size), padded(out.count, p.size)
        out.total[: p.size] += p.total
        out.count[: p.size] += p.count
    return _combine(spans, out, sums=False)


def _combine(spans: list[_Slot], out: Sums, *, sums: bool = True) -> Sums:
    """Into `out`: the spans' sums added (`sums`); each key's newest memory over them.
    `spans` newest first, their times never the same (each holds its own part of the
    window): an older span only fills keys no newer one had, and one that shares its
    keys' array with a newer one (a fleet reporting every second) fills none."""
    size = max([len(out.total), *(s.size for s in spans)])
    out.total, out.count = padded(out.total, size), padded(out.count, size)
    out.mem, out.mem_ts = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    out.has_mem = np.zeros(size, dtype=bool)
    for s in spans if sums else []:
        out.total[: s.size] += s.total
        out.count[: s.size] += s.count
    applied: list[np.ndarray] = []
    for s in spans:
        if any(a is s.mem_ids for a in applied):
            continue
        fill = ~out.has_mem[s.mem_ids]
        ids = s.mem_ids[fill]
        out.mem[ids] = s.mem[fill]
        out.mem_ts[ids] = s.mem_ts[fill]
        out.has_mem[ids] = True
        applied.append(s.mem_ids)
    return out
