"""Window state kept with the live snapshot, for the fabric and tenants views.

Both views aggregate a short window `(at - w, at]` of samples; scanning it costs
fleet x window (5.5 M link rows and 3 M GPU rows at 100,000 GPUs over 30 s).
The writer keeps, at each publish (`storage/live.py`), what makes any such window
one row per key to read, and exact at any cursor at or after the newest sample:

- **Links** (`link_keys`: host, kind, port and GPU, one row per link in stable
  order, published when a link came or its GPU changed; `link_latest`): the
  newest row's time and, per column, the newest non-NULL value with its time
  (a window's `arg_max` is that value when its time is inside the window), plus
  `link_marks`: the rows with errors or the link down, for `MARKS_KEEP_S` (few:
  a window's error sum and down count are sums over them).
- **GPU and slice utilisation** (`<gpu|slice>_window_<p>`, rows aligned with the
  snapshot's `<gpu|slice>_latest`): per 1 s slot the cumulative sum and count of
  `util_pct` over every slot up to it, for the last `WINDOW_SLOTS` slots, and the
  raw rows of each slot (`..._edge_<p>`). A window is then the newest slot's sums
  minus those of the slot holding `at - w`, plus that slot's rows after `at - w`;
  the newest slot's table also holds each key's newest non-NULL memory in use.

`fleettui_live.snapshot` says, per sample table, which slots are kept (`lo`..`hi`)
and the publish generation (`gen`): a reader that saw the same generation before
and after its reads read one publish.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.key_ids import RunKeys

# Error and link-down rows kept for a fabric window (a longer window reads history).
MARKS_KEEP_S = 60.0
# History read into the window state when a store opens: a short span where the
# fill is on the open path (60 s of links and 33 s of GPU rows took ~8 s at 100k GPUs);
# the state claims only what it read, and covers longer windows as time passes.
FILL_SPAN_S = 10.0
# 1 s slots of utilisation sums kept: windows up to WINDOW_MAX_S read the state.
SLOT_US = 1_000_000
WINDOW_MAX_S = 30.0
WINDOW_SLOTS = int(WINDOW_MAX_S) + 2
# The GPU and slice sums' span where the fill runs in a thread, off the open path (the
# app's, `Store.open(live_background=True)`): every slot kept, so the tenants' 30 s
# window reads the state as soon as the fill publishes. A fill on the open path (the
# daemon's) still reads FILL_SPAN_S: 32 s there added ~2-4 s CPU to a 100k-GPU open.
WINDOW_FILL_S = float(WINDOW_SLOTS)

LINK_KEY = ("host", "kind", "port")
# link columns whose newest non-NULL value (and its time) a window's arg_max reads
LINK_NEWEST = ("gpu_uuid", "tx_bytes_per_s", "rx_bytes_per_s", "line_rate_bytes_per_s", "link_up")
_SEP = "\x1f"

# The link state from history (on open): per link the newest row and the newest
# non-NULL value of each column with its time; the rows with errors or down.
LINK_FILL_SQL = (
    "SELECT host, kind, port, max(ts) AS ts, "
    + ", ".join(
        f"arg_max({c}, ts) AS {c}, max(ts) FILTER (WHERE {c} IS NOT NULL) AS {c}_ts"
        for c in LINK_NEWEST
    )
    + ", max(ts) FILTER (WHERE errors IS NOT NULL) AS errors_ts "
    "FROM main.link_samples WHERE ts > $since "
    "AND host IS NOT NULL AND kind IS NOT NULL AND port IS NOT NULL GROUP BY ALL"
)
LINK_MARKS_FILL_SQL = (
    "SELECT ts, host, kind, port, errors, coalesce(NOT link_up, false) AS down "
    "FROM main.link_samples WHERE ts > $since AND (errors <> 0 OR NOT link_up) "
    "AND host IS NOT NULL AND kind IS NOT NULL AND port IS NOT NULL ORDER BY ts"
)


def _ts_us(a: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(a, pa.int64()).to_numpy(zero_copy_only=False)


def _ts_array(us: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    return pa.array(us, pa.int64(), mask=None if valid is None else ~valid).cast(pa.timestamp("us"))


def _link_key(t: pa.Table) -> pa.Array:
    key = pc.binary_join_element_wise(*(t.column(c) for c in LINK_KEY), _SEP)
    return key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key


class LinkState:
    """Per link: newest row time, newest non-NULL value and time of each column in
    LINK_NEWEST, newest non-NULL `errors` time; and the rows with errors or down."""

    def __init__(self) -> None:
        self.keys = pa.array([], pa.string())
        self.key_cols: dict[str, np.ndarray] = {c: np.array([], dtype=object) for c in LINK_KEY}
        self.ts = np.array([], dtype=np.int64)  # newest row (us)
        self.values: dict[str, pa.Array] = {
            c: pa.array(
                [],
                pa.bool_() if c == "link_up" else pa.string() if c == "gpu_uuid" else pa.float64(),
            )
            for c in LINK_NEWEST
        }
        self.value_ts: dict[str, np.ndarray] = {
            c: np.array([], dtype=np.int64) for c in (*LINK_NEWEST, "errors")
        }
        self.marks = pa.table(
            {
                "ts": pa.array([], pa.timestamp("us")),
                "row": pa.array([], pa.int64()),
                "errors": pa.array([], pa.int64()),
                "down": pa.array([], pa.bool_()),
            }
        )
        self.keys_n = 1
        self.through_us: int | None = None
        self._rows = RunKeys(("host", "kind"), "port")  # link -> its row in the state

    def fold(self, new: pa.Table) -> None:
        # the store keys a link by host, kind and port, never NULL: such a row is not stored
        ok = pc.and_(
            pc.and_(pc.is_valid(new.column("host")), pc.is_valid(new.column("kind"))),
            pc.is_valid(new.column("port")),
        )
        if not pc.all(ok).as_py():
            new = new.filter(ok)
        if new.num_rows == 0:
            return
        # known links by their runs of rows (storage/key_ids.py); else by one string each
        row = self._rows.find(new)
        if row is None:
            row = self._key_rows(new)
        n = len(self.keys)
        ts = _ts_us(new.column("ts"))
        # Each link's rows ordered by time (the input order among equal times: a later
        # row wins); a batch holds one row per link as a rule, then no sort is needed.
        distinct = np.bincount(row, minlength=n).max() == 1
        order = np.arange(len(row)) if distinct else np.lexsort((np.arange(len(row)), ts, row))

        def last_per_row(idx: np.ndarray) -> np.ndarray:
            if distinct:
                return idx
            r = row[idx]
            last = np.ones(len(idx), dtype=bool)
            last[:-1] = r[1:] != r[:-1]
            return idx[last]

        newest = last_per_row(order)
        self.ts[row[newest]] = np.maximum(self.ts[row[newest]], ts[newest])
        for c in (*LINK_NEWEST, "errors"):
            col = new.column(c) if c in new.column_names else None
            if col is None:
                continue
            valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
            if not valid.any():
                continue
            pick = last_per_row(order[valid[order]])
            rows, times = row[pick], ts[pick]
            newer = times >= self.value_ts[c][rows]
            rows, times = rows[newer], times[newer]
            self.value_ts[c][rows] = times
            if c == "errors" or len(rows) == 0:
                continue
            src_idx = pick[newer]
            vals = col.take(pa.array(src_idx))
            if isinstance(vals, pa.ChunkedArray):
                vals = vals.combine_chunks()
            cur = self.values[c]
            # scatter: cur with `rows` replaced by `vals`
            at_row = np.full(n, -1, dtype=np.int64)
            at_row[rows] = np.arange(len(rows))
            hit = at_row >= 0
            if c == "gpu_uuid" and len(rows):
                old = cur.take(pa.array(rows))
                if not pc.all(pc.fill_null(pc.equal(old, vals.cast(cur.type)), False)).as_py():
                    self.keys_n += 1  # a link's GPU changed: readers' per-link layout is stale
            self.values[c] = pc.if_else(
                pa.array(hit), vals.cast(cur.type).take(pa.array(np.maximum(at_row, 0))), cur
            )
        # the rows a window sums: errors other than 0, or the link down
        err = new.column("errors") if "errors" in new.column_names else None
        up = new.column("link_up") if "link_up" in new.column_names else None
        mark = np.zeros(new.num_rows, dtype=bool)
        if err is not None:
            mark |= pc.fill_null(pc.not_equal(err, 0), False).to_numpy(zero_copy_only=False)
        if up is not None:
            mark |= pc.fill_null(pc.invert(up), False).to_numpy(zero_copy_only=False)
        if mark.any():
            idx = pa.array(np.flatnonzero(mark))
            marks = pa.table(
                {
                    "ts": new.column("ts").take(idx).cast(pa.timestamp("us")),
                    "row": pa.array(row[mark], pa.int64()),
                    "errors": err.take(idx).cast(pa.int64())
                    if err is not None
                    else pa.nulls(len(idx), pa.int64()),
                    "down": pc.fill_null(pc.invert(up.take(idx)), False)
                    if up is not None
                    else pa.array(np.zeros(len(idx), dtype=bool)),
                }
            )
            self.marks = pa.concat_tables([self.marks, marks]).combine_chunks()
        top = int(ts.max())
        self.through_us = top if self.through_us is None else max(self.through_us, top)
        keep_from = self.through_us - int(MARKS_KEEP_S * 1e6)
        if self.marks.num_rows and _ts_us(self.marks.column("ts")).min() <= keep_from:
            self.marks = self.marks.filter(pa.array(_ts_us(self.marks.column("ts")) > keep_from))

    def _key_rows(self, new: pa.Table) -> np.ndarray:
        """Each row's link, by its key as one string; new links appended."""
        key = _link_key(new)
        uniq = pc.unique(key)
        fresh = pc.filter(uniq, pc.invert(pc.is_in(uniq, value_set=self.keys)))
        if len(fresh):
            first = pc.index_in(fresh, value_set=key).to_numpy()
            self.keys = pa.concat_arrays([self.keys, fresh])
            for c in LINK_KEY:
                vals = new.column(c).take(pa.array(first)).to_numpy(zero_copy_only=False)
                self.key_cols[c] = np.concatenate([self.key_cols[c], vals.astype(object)])
            grow = len(fresh)
            new_rows = np.arange(len(self.keys) - grow, len(self.keys))
            self._rows.add(new.select(list(LINK_KEY)).take(pa.array(first)), new_rows)
            self.ts = np.concatenate([self.ts, np.full(grow, np.iinfo(np.int64).min)])
            for c, a in self.value_ts.items():
                self.value_ts[c] = np.concatenate([a, np.full(grow, np.iinfo(np.int64).min)])
            for c, v in self.values.items():
                self.values[c] = pa.concat_arrays([v, pa.nulls(grow, v.type)])
            self.keys_n += 1
        return pc.index_in(key, value_set=self.keys).to_numpy()

    def load(self, agg: pa.Table, marks: pa.Table) -> None:
        """The state from history: `agg` one row per link (LINK_FILL_SQL), `marks` the
        rows with errors or down (LINK_MARKS_FILL_SQL)."""
        none = np.iinfo(np.int64).min
        n = agg.num_rows
        self.keys = _link_key(agg) if n else pa.array([], pa.string())
        self._rows.clear()
        self._rows.add(agg.select(list(LINK_KEY)), np.arange(n))
        for c in LINK_KEY:
            self.key_cols[c] = agg.column(c).to_numpy(zero_copy_only=False).astype(object)

        def us(c: str) -> np.ndarray:
            a = agg.column(c)
            # a copy: Arrow's buffers are read-only, and folds write into these
            filled = pc.fill_null(pc.cast(a, pa.int64()), none)
            return filled.to_numpy(zero_copy_only=False).astype(np.int64, copy=True)

        self.ts = us("ts")
        for c in LINK_NEWEST:
            v = agg.column(c).cast(self.values[c].type)
            self.values[c] = v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
            self.value_ts[c] = us(f"{c}_ts")
        self.value_ts["errors"] = us("errors_ts")
        if marks.num_rows:
            key = _link_key(marks)
            self.marks = pa.table(
                {
                    "ts": marks.column("ts").cast(pa.timestamp("us")),
                    "row": pc.index_in(key, value_set=self.keys).cast(pa.int64()),
                    "errors": marks.column("errors").cast(pa.int64()),
                    "down": marks.column("down").cast(pa.bool_()),
                }
            ).combine_chunks()
        if n and (self.ts != none).any():
            self.through_us = int(self.ts.max())

    def keys_table(self) -> pa.Table:
        """`link_keys`: each link's key and GPU (published when `keys_n` changed)."""
        return pa.table(
            {
                "row": pa.array(np.arange(len(self.ts)), pa.int64()),
                **{c: pa.array(self.key_cols[c], pa.string()) for c in LINK_KEY},
                "gpu_uuid": self.values["gpu_uuid"],
            }
        )

    def latest(self) -> pa.Table:
        """`link_latest`: per link in `link_keys` order, the newest row's time and each
        column's newest non-NULL value and time (no strings: published every time)."""
        none = np.iinfo(np.int64).min
        cols: dict[str, pa.Array] = {"ts": _ts_array(self.ts, self.ts != none)}
        for c in LINK_NEWEST:
            if c != "gpu_uuid":
                cols[c] = self.values[c]
            cols[f"{c}_ts"] = _ts_array(self.value_ts[c], self.value_ts[c] != none)
        cols["errors_ts"] = _ts_array(self.value_ts["errors"], self.value_ts["errors"] != none)
        return pa.table(cols)


class WindowSums:
    """`util_pct` sums per 1 s slot of one sample table, as cumulative sums per key
    row (the rows of its `_Latest` snapshot), and each slot's raw rows."""

    def __init__(self, name: str) -> None:
        self.name = name  # "gpu" or "slice"
        self.n = 0
        self.cum: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # slot -> (sum, count)
        self.edge: dict[int, pa.Table] = {}  # slot -> (row, ts, util_pct)
        self.hi: int | None = None
        # the oldest slot whose rows are all here: the fill on open reads a short span
        # of history (FILL_SPAN_S), so windows starting before it read history
        self.floor: int | None = None
        self.mem = np.array([], dtype=np.int64)
        self.mem_ts = np.array([], dtype=np.int64)
        self.changed: set[int] = set()  # slots whose sums to publish again
        self.edge_changed: set[int] = set()  # slots whose rows to publish again

    @property
    def lo(self) -> int | None:
        if self.hi is None:
            return None
        lo = self.hi - WINDOW_SLOTS + 1
        return lo if self.floor is None else max(lo, self.floor)

    def fold(self, rows: np.ndarray, n: int, ts: pa.ChunkedArray, util, mem) -> None:
        """New rows: `rows` their key rows (n keys now), their times, util_pct and
        mem_used_bytes columns (None: absent)."""
        none = np.iinfo(np.int64).min
        if n > self.n:
            self.mem = np.concatenate([self.mem, np.zeros(n - self.n, dtype=np.int64)])
            self.mem_ts = np.concatenate([self.mem_ts, np.full(n - self.n, none)])
            self.n = n
        if len(rows) == 0:
            return
        t = _ts_us(ts)
        if mem is not None:
            valid = pc.is_valid(mem).to_numpy(zero_copy_only=False)
            if valid.any():
                r, tt = rows[valid], t[valid]
                v = pc.fill_null(mem, 0).to_numpy(zero_copy_only=False).astype(np.int64)[valid]
                if np.bincount(r, minlength=n).max() == 1:  # one row per key: no sort
                    pick = np.arange(len(r))
                else:  # each key's newest row (the later of equal times)
                    order = np.lexsort((np.arange(len(r)), tt, r))
                    last = np.ones(len(order), dtype=bool)
                    last[:-1] = r[order][1:] != r[order][:-1]
                    pick = order[last]
                newer = tt[pick] >= self.mem_ts[r[pick]]
                pick = pick[newer]
                self.mem[r[pick]] = v[pick]
                self.mem_ts[r[pick]] = tt[pick]
        slot = t // SLOT_US
        hi = int(slot.max()) if self.hi is None else max(self.hi, int(slot.max()))
        lo = hi - WINDOW_SLOTS + 1
        if util is None:
            keep = np.zeros(len(rows), dtype=bool)
        else:
            keep = pc.is_valid(util).to_numpy(zero_copy_only=False) & (slot >= lo)
        touched: set[int] = set()
        if keep.any():
            u = pc.fill_null(util, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
            r, s, u, tt = rows[keep], slot[keep], u[keep], t[keep]
            order = np.argsort(s, kind="stable")
            r, s, u, tt = r[order], s[order], u[order], tt[order]
            bounds = np.flatnonzero(np.diff(s)) + 1
            for a, b in zip(
                np.concatenate(([0], bounds)), np.concatenate((bounds, [len(s)])), strict=True
            ):
                j = int(s[a])
                raw = pa.table(
                    {
                        "row": pa.array(r[a:b], pa.int64()),
                        "ts": _ts_array(tt[a:b]),
                        "util_pct": pa.array(u[a:b], pa.float64()),
                    }
                )
                old = self.edge.get(j)
                self.edge[j] = raw if old is None else pa.concat_tables([old, raw]).combine_chunks()
                touched.add(j)
                self.edge_changed.add(j)
        # The cumulative sums change from the first slot with new rows (or the first
        # new slot) on; below it they stay, so only those slots are published again.
        old_hi = self.hi
        # (the first fold writes every kept slot: a window may start before its rows)
        start = lo if old_hi is None else max(min([*touched, old_hi + 1]), lo)
        if old_hi is None:  # every ring position gets its tables once
            self.edge_changed.update(range(lo, hi + 1))
        if start - 1 in self.cum:
            prev_s, prev_n = self.cum[start - 1]
        elif old_hi is not None and old_hi in self.cum and start - 1 > old_hi:
            prev_s, prev_n = self.cum[old_hi]  # slots skipped over had no rows
        else:
            prev_s, prev_n = np.zeros(n), np.zeros(n, dtype=np.int64)
        for j in range(start, hi + 1):
            edge = self.edge.get(j)
            prev_s, prev_n = padded(prev_s, n), padded(prev_n, n)
            if edge is not None and edge.num_rows:
                r = edge.column("row").to_numpy()
                w = edge.column("util_pct").to_numpy()
                prev_s = prev_s + np.bincount(r, weights=w, minlength=n)
                prev_n = prev_n + np.bincount(r, minlength=n)
            self.cum[j] = (prev_s, prev_n)
            self.changed.add(j)
        self.hi = hi
        # slot lo - 1 stays: the base of the next fold's sums
        for j in [j for j in self.cum if j < lo - 1]:
            del self.cum[j]
        for j in [j for j in self.edge if j < lo]:
            del self.edge[j]
        self.changed = {j for j in self.changed if j >= lo} | {hi}  # hi holds the memory
        self.edge_changed = {j for j in self.edge_changed if j >= lo}

    def slot_table(self, j: int) -> pa.Table:
        """Slot j's cumulative sums; the newest slot's also holds each key's newest
        non-NULL memory in use and its time."""
        s, c = self.cum[j]
        cols = {"slot": pa.array(np.full(len(s), j), pa.int64()), "util_sum": s, "util_n": c}
        if j == self.hi:
            none = np.iinfo(np.int64).min
            ok = self.mem_ts[: len(s)] != none
            cols["mem_used_bytes"] = pa.array(self.mem[: len(s)], pa.int64(), mask=~ok)
            cols["mem_ts"] = _ts_array(self.mem_ts[: len(s)], ok)
        return pa.table(cols)

    def edge_table(self, j: int) -> pa.Table:
        edge = self.edge.get(j)
        if edge is None:
            edge = pa.table(
                {
                    "row": pa.array([], pa.int64()),
                    "ts": pa.array([], pa.timestamp("us")),
                    "util_pct": pa.array([], pa.float64()),
                }
            )
        return edge


def padded(a: np.ndarray, n: int) -> np.ndarray:
    """`a` with zeros added up to length n (`a` itself where it is that long)."""
    return a if len(a) >= n else np.concatenate([a, np.zeros(n - len(a), dtype=a.dtype)])
