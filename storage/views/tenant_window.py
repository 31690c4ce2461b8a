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
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.keyed import GPUS, SLICES
from storage.reader import LocalReader
from storage.views.query import Source, run

SLOT_US = 1_000_000
# Slots kept beyond the window on either side: a cursor stepping back a second or two
# (time travel, a refresh shown one second behind) reads nothing again.
MARGIN_SLOTS = 2
_EPOCH = datetime(1970, 1, 1)

# sample table -> (rows table, its decoded form for readers, id column)
_ROWS = {
    "gpu_samples": (GPUS.rows, GPUS.rows_read, GPUS.id_col),
    "slice_samples": (SLICES.rows, SLICES.rows_read, SLICES.id_col),
}
# Rows per slot of (lo, hi] (µs; both on slot bounds): `ts` alone is decoded.
_COUNTS = """
SELECT (epoch_us(ts) - 1) // 1000000 AS slot, count(*) AS n
FROM {rows} WHERE ts > $lo AND ts <= $hi GROUP BY ALL
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
    """One span's rows folded per key: `rows` (how many were read), util_pct's sum and
    count (dense), each key's newest non-NULL memory (keys `mem_ids`, unique)."""

    rows: int
    size: int  # the largest key id + 1
    total: np.ndarray
    count: np.ndarray
    mem_ids: np.ndarray
    mem: np.ndarray
    mem_ts: np.ndarray


@dataclass
class _Kept:
    slots: dict[int, _Slot] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


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
    key = slot * size + ids
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
    bounds = np.searchsorted(slot[pick], np.arange(k + 1))
    n_rows = np.bincount(slot, minlength=k)
    total, count = total.reshape(k, size), count.reshape(k, size)
    return [
        _Slot(
            int(n_rows[j]),
            size,
            total[j],
            count[j],
            ids[pick[bounds[j] : bounds[j + 1]]],
            m[pick[bounds[j] : bounds[j + 1]]],
            ts[pick[bounds[j] : bounds[j + 1]]],
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


def window_sums(src: LocalReader, table: str, at: datetime, window_s: float) -> Sums:
    """Per key of `table` over (at - window_s, at]: the kept slots checked against the
    rows per slot now, the changed and new ones read, the part seconds read."""
    kept_all = src.__dict__.setdefault("_tenant_window", {})
    kept: _Kept = kept_all.setdefault(table, _Kept())
    lo_us, hi_us = _us(at - timedelta(seconds=window_s)), _us(at)
    j0 = -(-lo_us // SLOT_US)  # the first slot wholly inside
    j1 = hi_us // SLOT_US  # slots j0..j1 - 1 are
    with kept.lock:
        if j1 <= j0:  # under a second: no whole slot
            return _combine(_fold(_read(src, table, lo_us, hi_us)))
        counts = run(
            src,
            _COUNTS.format(rows=_ROWS[table][0]),
            {"lo": _ts(j0 * SLOT_US), "hi": _ts(j1 * SLOT_US)},
        )
        now = dict(
            zip(counts.column("slot").to_pylist(), counts.column("n").to_pylist(), strict=True)
        )
        stale = [
            j
            for j in range(j0, j1)
            if (hit := kept.slots.get(j)) is None or hit.rows != now.get(j, 0)
        ]
        for first, last in _runs(stale):
            kept.slots.update(_slots_of(src, table, first, last))
        for j in [j for j in kept.slots if j < j0 - MARGIN_SLOTS or j >= j1 + MARGIN_SLOTS]:
            del kept.slots[j]
        # newest first: an older slot then only fills the keys no newer one had
        spans = [kept.slots[j] for j in range(j1 - 1, j0 - 1, -1)]
    if hi_us > j1 * SLOT_US:
        spans[:0] = _fold(_read(src, table, j1 * SLOT_US, hi_us))
    if lo_us < j0 * SLOT_US:
        spans += _fold(_read(src, table, lo_us, j0 * SLOT_US))
    return _combine(spans)


def _combine(spans: list[_Slot]) -> Sums:
    """The spans' sums added; each key's newest memory over them. `spans` newest
    first, their times never the same (each holds its own part of the window): an
    older span only fills keys no newer one had, and one with the same keys as a
    newer one (a fleet reporting every second) fills none."""
    size = max((s.size for s in spans), default=0)
    out = Sums.empty(size)
    for s in spans:
        out.total[: len(s.total)] += s.total
        out.count[: len(s.count)] += s.count
    applied: list[np.ndarray] = []
    for s in spans:
        if any(len(a) == len(s.mem_ids) and np.array_equal(a, s.mem_ids) for a in applied):
            continue
        fill = ~out.has_mem[s.mem_ids]
        ids = s.mem_ids[fill]
        out.mem[ids] = s.mem[fill]
        out.mem_ts[ids] = s.mem_ts[fill]
        out.has_mem[ids] = True
        applied.append(s.mem_ids)
    return out
