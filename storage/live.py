"""The newest sample of every GPU and slice, kept beside the store for the live views.

The writer appends samples as before; after each committed write it only keeps
a reference to the batch (no work per write). At most every `publish_s` it
folds the batches since into its in-memory snapshot (Arrow, one row per key,
newest sample wins, a late one never replaces a newer one) and replaces
`fleettui_live.<gpu|slice>_latest` in an in-memory catalog of the same DuckDB
instance, so the app in this process and the daemon's Quack clients read it
like any table. A live view then reads one row per GPU, not the stale window
of history (`storage/views/live.py`).

Rows keep their place: a key's row stays where it first appeared, new keys are
appended, so a reader may keep its row positions while `keys_version` is the
same. Each row carries its group's newest sample time (`host_ts` for a GPU,
`gpu_ts` for a slice), the views' "newest report" rule without an aggregate.

The snapshot is derived data, never persisted: on open it is filled from the
last `FILL_WINDOW_S` of history. `fleettui_live.snapshot` says what it covers:
per table, `since` (every key with a sample after it is there), `through` (its
newest sample), `keys_version` and `layout_version` (bumped when `gpus`,
`hosts`, `slices` or `assignments` changed: the rack layout is cached on it).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.keyed import KEYED
from storage.live_window import (
    FILL_SPAN_S,
    LINK_FILL_SQL,
    LINK_MARKS_FILL_SQL,
    SLOT_US,
    WINDOW_FILL_S,
    WINDOW_SLOTS,
    LinkState,
    WindowSums,
)

log = logging.getLogger("fleettui.live")

LIVE_CATALOG = "fleettui_live"

# sample table -> (its snapshot in LIVE_CATALOG, key column, group column, group's newest ts)
LIVE_TABLES: dict[str, tuple[str, str, str, str]] = {
    "gpu_samples": ("gpu_latest", "gpu_uuid", "host", "host_ts"),
    "slice_samples": ("slice_latest", "slice_id", "gpu_uuid", "gpu_ts"),
}

# History read on open; a view whose stale window reaches further back reads history.
FILL_WINDOW_S = 120.0

# The fill on open in a thread (the app's) yields the CPU to the first frame's work:
# it starts when told (`go`: the app's first frame is on screen) or after
# FILL_START_S, and runs niced. (It shares the GIL with the UI: started at once, it
# made the first frame at 100k GPUs 1.1 s slower.)
FILL_START_S = 5.0
FILL_NICE = 10

# How often the writer folds new batches into the snapshot (wall seconds): at most
# every PUBLISH_S, and less often while publishing would cost more than
# LIVE_CPU_SHARE of the writer's own CPU for the writes (a fleet too large for the
# writer's core then stores first and refreshes the snapshot less often), but at
# least every MAX_PUBLISH_S.
PUBLISH_S = 1.0
LIVE_CPU_SHARE = 0.15
MAX_PUBLISH_S = 10.0
# ... or, whatever the writes cost, while publishing stays within this share of one
# core over the snapshot's life. A small fleet's writes are cheap: the writer's share
# alone held a 300-GPU demo's snapshot (~50 ms a publish with the window state) to
# MAX_PUBLISH_S, and the app showed data up to 10 s old.
CORE_SHARE = 0.15

# Tables the rack grid's layout is built from; a write to them may change it.
LAYOUT_TABLES = frozenset({"gpus", "hosts", "slices", "assignments"})
LAYOUT_FINGERPRINT_SQL = """
SELECT (SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(gpu_uuid, host, gpu_index, name,
            mig_mode, mem_total_bytes)), 0)::VARCHAR FROM main.gpus)
    || '/' || (SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(host, cluster, rack,
            rack_slot, model, nvlink_domain, first_seen)), 0)::VARCHAR FROM main.hosts)
    || '/' || (SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(slice_id, gpu_uuid)), 0)::VARCHAR
            FROM main.slices)
    || '/' || (SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(tenant, gpu_uuid, slice_id,
            fraction, valid_from, valid_to)), 0)::VARCHAR FROM main.assignments)
"""


def _newest_per_key(t: pa.Table, key: str) -> pa.Table:
    """`t` reduced to its newest row per key (the first of equal times kept)."""
    if pc.count_distinct(t.column(key)).as_py() == t.num_rows:
        return t
    t = t.take(pc.sort_indices(t, sort_keys=[("ts", "descending")]))
    keys = t.column(key)
    return t.take(pc.index_in(pc.unique(keys), value_set=keys))


class _Latest:
    """One sample table's snapshot: Arrow columns in stable row order."""

    def __init__(self, table: str, state: pa.Table):
        self.name, self.key, self.group, self.group_ts = LIVE_TABLES[table]
        self.schema = state.schema
        self.state = state
        self.keys_n = 1

    def align(self, b: pa.Table) -> pa.Table:
        """A batch with the snapshot's columns (a missing one NULL, as the store has it)."""
        return pa.table(
            {
                f.name: b.column(f.name).cast(f.type)
                if f.name in b.column_names
                else pa.nulls(b.num_rows, f.type)
                for f in self.schema
            }
        )

    def fold(self, new: pa.Table) -> None:
        if not self._fold_known(new):
            self._fold_any(new)

    def _fold_known(self, new: pa.Table) -> bool:
        """The usual fold, every key of `new` already in the state: the keys are
        matched once, then each key's newest row is picked and placed by row number
        (numpy) rather than by a second and third lookup of the strings. False (and
        nothing changed) when some key is new or NULL: `_fold_any` then."""
        state, key = self.state, self.key
        pos = pc.index_in(new.column(key), value_set=state.column(key))
        if pos.null_count:
            return False
        p = pos.to_numpy(zero_copy_only=False).astype(np.int64)
        ts = new.column("ts")
        if ts.null_count:
            return False
        t = pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False)
        # each key's newest row, the first of equal times (as `_newest_per_key`)
        if np.bincount(p, minlength=state.num_rows).max(initial=0) <= 1:
            sel = np.arange(len(p))
        else:
            order = np.lexsort((np.arange(len(p)), -t, p))
            first = np.ones(len(order), dtype=bool)
            first[1:] = p[order][1:] != p[order][:-1]
            sel = order[first]
        rows = p[sel]
        # a snapshot row without a time is replaced, as `_fold_any` does
        old_t = pc.fill_null(pc.cast(state.column("ts"), pa.int64()), np.iinfo(np.int64).min)
        newer = t[sel] >= old_t.to_numpy(zero_copy_only=False)[rows]
        sel, rows = sel[newer], rows[newer]
        if not len(sel):
            return True
        repl = new.take(pa.array(sel))
        rows_a = pa.array(rows)
        moved = pc.any(
            pc.not_equal(state.column(self.group).take(rows_a), repl.column(self.group))
        ).as_py()
        # each state row's replacement: a row of `repl`, or itself
        where = np.arange(state.num_rows, dtype=np.int64)
        where[rows] = state.num_rows + np.arange(len(rows))
        both = pa.concat_tables([state, repl]).combine_chunks()
        self.state = both.take(pa.array(where))
        if moved:
            self.keys_n += 1  # a key changed group: readers' row lookups are stale
        return True

    def _fold_any(self, new: pa.Table) -> None:
        new = _newest_per_key(new, self.key)
        state, key = self.state, self.key
        pos = pc.index_in(new.column(key), value_set=state.column(key))
        known = pc.is_valid(pos)
        old_ts = state.column("ts").take(pos)
        newer = pc.and_(known, pc.fill_null(pc.greater_equal(new.column("ts"), old_ts), True))
        repl = new.filter(newer)
        if repl.num_rows:
            # each state row: the row of `repl` that replaces it, or null
            rep = pc.index_in(state.column(key), value_set=repl.column(key))
            hit = pc.is_valid(rep)
            moved = pc.any(
                pc.not_equal(
                    state.column(self.group).filter(hit),
                    repl.column(self.group).take(rep.filter(hit)),
                )
            ).as_py()
            state = pa.table(
                {
                    f.name: pc.if_else(hit, repl.column(f.name).take(rep), state.column(f.name))
                    for f in self.schema
                }
            )
            if moved:
                self.keys_n += 1  # a key changed group: readers' row lookups are stale
        fresh = new.filter(pc.invert(known))
        if fresh.num_rows:
            state = pa.concat_tables([state, fresh])
            self.keys_n += 1
        self.state = state

    def published(self) -> pa.Table:
        """The state with each row's group newest time."""
        s = self.state
        newest = s.group_by(self.group, use_threads=False).aggregate([("ts", "max")])
        idx = pc.index_in(s.column(self.group), value_set=newest.column(self.group))
        return s.append_column(self.group_ts, newest.column("ts_max").take(idx))


def _fold_window(latest: _Latest, window: WindowSums, new: pa.Table) -> None:
    """New rows of a sample table into its utilisation sums (after its `_Latest`)."""
    keys = latest.state.column(latest.key)
    rows = pc.index_in(new.column(latest.key), value_set=keys)
    ok = pc.is_valid(rows)
    if not pc.all(ok).as_py():  # a NULL key: not in the snapshot either
        new, rows = new.filter(ok), rows.filter(ok)
    window.fold(
        rows.to_numpy(zero_copy_only=False).astype(np.int64),
        len(keys),
        new.column("ts"),
        new.column("util_pct") if "util_pct" in new.column_names else None,
        new.column("mem_used_bytes") if "mem_used_bytes" in new.column_names else None,
    )


class PublishBudget:
    """The writer's CPU credit for live publishes: LIVE_CPU_SHARE of its CPU in writes,
    or CORE_SHARE of one core over wall time, whichever holds more. A publish goes out
    while that credit covers one as dear as the last, and is then paid from both.
    Credit banks at most one such publish: a burst after a quiet spell publishes at the
    same share as at any other time, not every PUBLISH_S on the spell's unspent credit
    (which made a 10,000-report burst pay 240-450 ms of publishes)."""

    def __init__(self, now: float):
        self.at = now  # wall credit counted up to here
        self.wall = 0.0
        self.writes = 0.0
        self.last = 0.0  # the last publish's CPU

    def note_write(self, cpu_s: float) -> None:
        self.writes += LIVE_CPU_SHARE * cpu_s

    def allows(self, now: float) -> bool:
        self.wall += CORE_SHARE * (now - self.at)
        self.at = now
        self.wall = min(self.wall, self.last)
        self.writes = min(self.writes, self.last)
        return max(self.wall, self.writes) >= self.last

    def spend(self, cpu_s: float) -> None:
        self.wall -= cpu_s
        self.writes -= cpu_s
        self.last = cpu_s


class LiveSnapshot:
    """Newest row per key of the sample tables, published in `fleettui_live`."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        publish_s: float = PUBLISH_S,
        background: bool = False,
    ):
        self.publish_s = publish_s
        self._pending: dict[str, list[pa.Table]] = {t: [] for t in LIVE_TABLES}
        self._lock = threading.Lock()
        self._last_publish = 0.0
        self.budget = PublishBudget(time.monotonic())
        self.publish_cpu_s = 0.0  # total CPU spent publishing (benchmarks)
        # the writer thread's CPU in writes and in publishes since the fill (benchmarks)
        self.write_thread_s = 0.0
        self.publish_thread_s = 0.0
        self._cur = con.cursor()
        self._cur.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {LIVE_CATALOG}")
        self._cur.execute(
            f"CREATE OR REPLACE TABLE {LIVE_CATALOG}.snapshot (sample_table VARCHAR, "
            "since TIMESTAMP, through TIMESTAMP, keys_version VARCHAR, layout_version VARCHAR, "
            # the window sums' slots kept and the publish that wrote them (live_window.py)
            "lo BIGINT, hi BIGINT, gen BIGINT)"
        )
        # a new token per snapshot: positions or a layout cached from another store
        # or run never match
        self._token = uuid.uuid4().hex[:12]
        self._layout_n = 0
        self._layout_fp = None
        self._layout_dirty = True
        self._latest: dict[str, _Latest] = {}
        # window state for the fabric and tenants views (storage/live_window.py)
        self._pending["link_samples"] = []
        self._links = LinkState()
        self._link_keys_n = 0
        self._published_marks = None
        self._windows = {t: WindowSums(LIVE_TABLES[t][0].split("_")[0]) for t in LIVE_TABLES}
        self._gen = 0
        # The fill reads history as of this moment: its own cursor in a transaction whose
        # snapshot the first read below pins, before this process commits any write. Every
        # later write reaches the state as a pending batch, so none is counted twice or
        # missed, whether the fill runs here or in a thread.
        self._state_lock = threading.RLock()  # the state and self._cur: fill vs publishes
        self._fill_done = threading.Event()
        self._fill_error: BaseException | None = None
        self._fill_thread: threading.Thread | None = None
        self._go = threading.Event()
        self._closing = False
        self._after_fill: list[Callable[[], None]] | None = []  # None: they ran
        self._fill_cur = con.cursor()
        self._fill_cur.execute("BEGIN TRANSACTION")
        # each table's newest time from its rows table (storage/keyed.py): max(ts) of
        # the view joined every row of history to its key (~0.1 s of the app's open at
        # 100k GPUs and 60 s of history, growing with the history kept)
        newest = {
            t: (
                self._fill_cur.execute(f"SELECT max(ts) FROM main.{KEYED[t].rows}").fetchone()
                or (None,)
            )[0]
            for t in (*LIVE_TABLES, "link_samples")
        }
        if not background or all(v is None for v in newest.values()):
            self._fill(newest)
        else:
            # the views read history until the fill publishes (views/live.py snapshot_state)
            self._fill_thread = threading.Thread(
                target=self._fill_behind, args=(newest,), name="fleettui-live-fill", daemon=True
            )
            # a process leaving while DuckDB still runs the fill's query aborts
            # ("terminate called"): stop it first
            atexit.register(self.close)
            self._fill_thread.start()

    def go(self) -> None:
        """Start the background fill now (the app's first frame is on screen)."""
        self._go.set()

    def after_fill(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the fill's thread (niced) once the fill has published: the app
        builds the live views' caches there, behind its first frame, not in the first
        refresh that reads the snapshot. Registered after the fill ended: in a thread
        of its own. A fill on the open path (no thread) runs none."""
        with self._state_lock:
            pending = self._after_fill
            if pending is not None:
                pending.append(fn)
                return
        if self._fill_thread is not None and not self._closing:
            threading.Thread(
                target=self._run_after_fill, args=([fn],), name="fleettui-live-warm", daemon=True
            ).start()

    def _run_after_fill(self, fns: list[Callable[[], None]]) -> None:
        for fn in fns:
            if self._closing or self._fill_error is not None:
                return
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - a cache not warmed is built when asked
                log.warning("after the live fill: %s", (str(exc).splitlines() or [""])[0])

    @property
    def filling(self) -> bool:
        """True while the fill on open has not published (the views read history)."""
        return not self._fill_done.is_set()

    def wait_filled(self, timeout_s: float | None = None) -> bool:
        """Wait for the fill on open (started now if it waited); False on timeout.
        Raises what the fill raised."""
        self._go.set()
        if not self._fill_done.wait(timeout_s):
            return False
        if self._fill_error is not None:
            raise self._fill_error
        return True

    def close(self) -> None:
        """Stop a fill still running (before its connection closes)."""
        t = self._fill_thread
        if t is None:
            return
        atexit.unregister(self.close)
        if t.is_alive():
            self._closing = True
            self._go.set()
            with contextlib.suppress(Exception):
                self._fill_cur.interrupt()
            t.join()

    def _fill_behind(self, newest: dict) -> None:
        """The fill in its thread, behind the app's own work: on Linux a thread has its
        own nice value, and DuckDB runs this thread's queries on it (one thread each)."""
        self._go.wait(FILL_START_S)
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), FILL_NICE)
        if self._closing:  # closed before it began: nothing to read
            with contextlib.suppress(duckdb.Error):
                self._fill_cur.close()
            self._fill_error = RuntimeError("store closed before the live snapshot filled")
            self._fill_done.set()
            return
        self._fill(newest)
        with self._state_lock:
            fns, self._after_fill = self._after_fill or [], None
        self._run_after_fill(fns)

    def _fill(self, newest: dict) -> None:
        """Read the state from history (the fill cursor's transaction), then publish it
        with the batches written since folded in."""
        try:
            cur = self._fill_cur
            try:
                # in a thread the sums read every slot kept (WINDOW_FILL_S)
                span = FILL_SPAN_S if self._fill_thread is None else WINDOW_FILL_S
                latest, windows, spans = self._read_history(cur, newest, span)
                links = LinkState()
                since = newest["link_samples"]
                since = since - timedelta(seconds=FILL_SPAN_S) if since is not None else None
                links.load(
                    cur.execute(LINK_FILL_SQL, {"since": since}).to_arrow_table(),
                    cur.execute(LINK_MARKS_FILL_SQL, {"since": since}).to_arrow_table(),
                )
                spans["link_samples"] = since
            finally:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("COMMIT")
                cur.close()
            with self._state_lock:
                self._latest, self._windows, self._links = latest, windows, links
                self._fold_pending()
                for table, since in spans.items():
                    self._cur.execute(
                        f"INSERT INTO {LIVE_CATALOG}.snapshot "
                        "VALUES (?, ?, NULL, NULL, NULL, NULL, NULL, NULL)",
                        [table, since],
                    )
                self._publish_tables([*LIVE_TABLES, "link_samples"])
                self._check_layout()
        except BaseException as exc:
            self._fill_error = exc
            if self._fill_thread is None:
                raise
            log.warning("live snapshot not filled: %s", (str(exc).splitlines() or [""])[0])
        finally:
            self._fill_done.set()

    def _read_history(
        self, cur: duckdb.DuckDBPyConnection, newest: dict, span_s: float
    ) -> tuple[dict[str, _Latest], dict[str, WindowSums], dict]:
        """Each sample table's newest row per key over the last FILL_WINDOW_S, and its
        utilisation sums over the last `span_s`; with the `since` of each."""
        latest: dict[str, _Latest] = {}
        windows: dict[str, WindowSums] = {}
        spans = {}
        for table, (name, key, _, _) in LIVE_TABLES.items():
            top = newest[table]
            # with no history yet, every key to come is covered from the beginning
            since = top - timedelta(seconds=FILL_WINDOW_S) if top is not None else None
            # each key's newest time, then those rows (a window over every row of
            # 120 s sorted them all: 1.9 s CPU at 100k GPUs); equal times: one kept
            state = cur.execute(
                f"SELECT s.* FROM main.{table} s SEMI JOIN (SELECT {key}, max(ts) AS ts "
                f"FROM main.{table} WHERE ts > $since GROUP BY {key}) m "
                f"ON m.{key} = s.{key} AND m.ts = s.ts WHERE s.ts > $since",
                {"since": since or top},
            ).to_arrow_table()
            latest[table] = _Latest(table, _newest_per_key(state, key))
            spans[table] = since
            # utilisation sums: the rows of the last `span_s`, claimed from the first
            # slot they fill whole
            windows[table] = w = WindowSums(name.split("_")[0])
            span_since = top - timedelta(seconds=span_s) if top else None
            rows = cur.execute(
                f"SELECT {key}, ts, util_pct, mem_used_bytes FROM main.{table} "
                "WHERE ts > $since ORDER BY ts",
                {"since": span_since or top},
            ).to_arrow_table()
            _fold_window(latest[table], w, rows)
            if span_since is not None:
                since_us = round((span_since - datetime(1970, 1, 1)) / timedelta(microseconds=1))
                w.floor = since_us // SLOT_US + 1
        return latest, windows, spans

    def _fold_window(self, table: str, new: pa.Table) -> None:
        _fold_window(self._latest[table], self._windows[table], new)

    def _check_layout(self) -> None:
        """A new layout version when what the rack layout is built from changed."""
        if not self._layout_dirty:
            return
        self._layout_dirty = False
        (fp,) = self._cur.execute(LAYOUT_FINGERPRINT_SQL).fetchone() or (None,)
        if fp != self._layout_fp:
            self._layout_fp = fp
            self._layout_n += 1
            self._cur.execute(
                f"UPDATE {LIVE_CATALOG}.snapshot SET layout_version = ?",
                [f"{self._token}-{self._layout_n}"],
            )

    def add(self, table: str, data: pa.Table) -> None:
        """A committed batch of `table` (cheap: a reference until the next publish)."""
        if table in LAYOUT_TABLES and not (
            table == "hosts" and set(data.column_names) <= {"host", "last_seen"}
        ):
            self._layout_dirty = True
        pending = self._pending.get(table)
        if pending is not None:
            with self._lock:
                pending.append(data)

    def note_write(self, thread_cpu_s: float) -> None:
        """The writer thread's CPU for one committed write (the publish budget)."""
        self.write_thread_s += thread_cpu_s
        self.budget.note_write(thread_cpu_s)

    def maybe_publish(self) -> None:
        if not self._fill_done.is_set():
            return  # the fill folds the pending batches in when it publishes
        if self._fill_error is not None:
            raise self._fill_error  # the store then drops the snapshot
        now = time.monotonic()
        since = now - self._last_publish
        if since < self.publish_s:
            return
        if not self.budget.allows(now) and since < MAX_PUBLISH_S:
            return  # over budget: fold more batches into the next publish
        t0 = time.thread_time()
        try:
            self.publish()
        finally:
            cost = time.thread_time() - t0
            self.budget.spend(cost)
            self.publish_thread_s += cost

    def publish(self) -> None:
        """Fold pending batches into the snapshot and replace its tables (after the
        fill on open, waited for)."""
        self.wait_filled()
        with self._state_lock:
            c0 = time.process_time()
            self._last_publish = time.monotonic()
            try:
                todo = self._fold_pending()
                if todo:
                    self._publish_tables(todo)
            except BaseException:
                # a snapshot that missed batches must not be read: views fall back to history
                with contextlib.suppress(duckdb.Error):
                    self._cur.execute(f"DELETE FROM {LIVE_CATALOG}.snapshot")
                raise
            self._check_layout()
            self.publish_cpu_s += time.process_time() - c0

    def _fold_pending(self) -> list[str]:
        """The batches added since the last fold into the state; the tables they changed."""
        with self._lock:
            todo = {t: b for t, b in self._pending.items() if b}
            for t in todo:
                self._pending[t] = []
        for table, batches in todo.items():
            if table == "link_samples":
                # chunked as they came: combining copied every string of a second's
                # ~180,000 link rows at 10,000 GPUs (LinkState reads chunked columns)
                self._links.fold(pa.concat_tables(batches, promote_options="default"))
                continue
            latest = self._latest[table]
            new = pa.concat_tables([latest.align(b) for b in batches])
            latest.fold(new)
            self._fold_window(table, new)
        return list(todo)

    def _publish_tables(self, tables: list[str]) -> None:
        """Replace the snapshot tables of `tables` and their rows in `snapshot`, in one
        transaction (a reader sees all of one publish or none of it)."""
        meta = []
        self._cur.execute("BEGIN TRANSACTION")
        try:
            self._gen += 1
            for table in tables:
                if table == "link_samples":
                    self._publish_links()
                    through = self._links.through_us
                    meta += [
                        table,
                        None
                        if through is None
                        else pc.cast(pa.scalar(through, pa.int64()), pa.timestamp("us")).as_py(),
                        f"{self._token}-{self._links.keys_n}",
                        None,
                        None,
                    ]
                    continue
                self._publish_window(table)
                latest = self._latest[table]
                data = latest.published()
                # registered, not a replacement scan: the daemon turns those off
                # with external access (ARCHITECTURE.md)
                self._cur.register("_live_new", data)
                try:
                    self._cur.execute(
                        f"CREATE OR REPLACE TABLE {LIVE_CATALOG}.{latest.name} "
                        "AS SELECT * FROM _live_new"
                    )
                finally:
                    self._cur.unregister("_live_new")
                through = pc.max(data.column("ts")).as_py()
                w = self._windows[table]
                meta += [table, through, f"{self._token}-{latest.keys_n}", w.lo, w.hi]
            rows = ", ".join("(?, ?::TIMESTAMP, ?, ?::BIGINT, ?::BIGINT)" for _ in tables)
            self._cur.execute(
                f"UPDATE {LIVE_CATALOG}.snapshot AS m SET through = v.through, "
                f"keys_version = v.keys, lo = v.lo, hi = v.hi, gen = {self._gen} "
                f"FROM (VALUES {rows}) v(sample_table, through, keys, lo, hi) "
                "WHERE m.sample_table = v.sample_table",
                meta,
            )
            self._cur.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                self._cur.execute("ROLLBACK")
            raise

    def _replace(self, name: str, data: pa.Table) -> None:
        # registered, not a replacement scan: the daemon turns those off with
        # external access (ARCHITECTURE.md)
        self._cur.register("_live_new", data)
        try:
            self._cur.execute(
                f"CREATE OR REPLACE TABLE {LIVE_CATALOG}.{name} AS SELECT * FROM _live_new"
            )
        finally:
            self._cur.unregister("_live_new")

    def _publish_links(self) -> None:
        if self._links.keys_n != self._link_keys_n:  # strings only when they changed
            self._replace("link_keys", self._links.keys_table())
            self._link_keys_n = self._links.keys_n
        self._replace("link_latest", self._links.latest())
        if self._links.marks is not self._published_marks:
            self._replace("link_marks", self._links.marks)
            self._published_marks = self._links.marks

    def _publish_window(self, table: str) -> None:
        """The slots whose sums or rows changed (the newest holds the memory)."""
        w = self._windows[table]
        for j in sorted(w.changed):
            self._replace(f"{w.name}_window_{j % WINDOW_SLOTS}", w.slot_table(j))
        for j in sorted(w.edge_changed):
            self._replace(f"{w.name}_edge_{j % WINDOW_SLOTS}", w.edge_table(j))
        w.changed.clear()
        w.edge_changed.clear()
