"""The store: one DuckDB database, one writer.

The daemon (or the app collecting for itself) owns a `Store`; every batch goes
in through `write`, one transaction per call, Arrow in, no per-row Python.
Readers elsewhere go through the daemon's Quack endpoint or open the file
read-only when no daemon holds it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.batch import Batch, BatchError, concat_batches
from storage.columns import TABLE_COLUMNS, UPSERT_KEYS
from storage.key_ids import KeyIds
from storage.keyed import KEYED, LINKS, Keyed
from storage.live import LiveSnapshot
from storage.migrate import check_version, migrate

log = logging.getLogger("fleettui.store")


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message is one line for a person."""


class StoreFailure(StoreError):
    """The database failed, not the batch: disk full, I/O error, or DuckDB invalidated
    the database after a fatal error (then every later statement fails until the
    process reopens it; the file itself stays intact). Batches are kept and retried."""

    def __init__(self, message: str, invalidated: bool):
        super().__init__(message)
        self.invalidated = invalidated


# Signs that the database (not the data) failed; anything else is the batch's fault.
_FAILURE_MARKERS = (
    "No space left",
    "Could not write file",
    "I/O Error",
    "IO Error",
    "Disk quota",
    "Read-only file system",
    "Failed to commit",
)


def as_store_failure(path: str, exc: BaseException) -> StoreFailure | None:
    """A StoreFailure for a DuckDB error that is the database's fault, else None."""
    if isinstance(exc, StoreFailure):
        return exc
    if not isinstance(exc, duckdb.Error):
        return None
    msg = str(exc).strip()
    invalidated = isinstance(exc, duckdb.FatalException) or "invalidated" in msg
    if not (
        invalidated
        or isinstance(exc, duckdb.IOException)
        or any(m in msg for m in _FAILURE_MARKERS)
    ):
        return None
    first = msg.splitlines()[0]
    if invalidated and "Original error:" in msg:  # the cause is more telling than "invalidated"
        first = "invalidated after: " + msg.split("Original error:", 1)[1].strip().strip('"')
    return StoreFailure(f"{path}: store failed: {first[:300]}", invalidated)


def default_memory_limit() -> str:
    """DuckDB's memory limit unless configured: 25% of RAM, at most 4 GiB (DuckDB's own
    default, 80% of RAM, lets the store crowd out the rest of the host)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 16 << 30
    return f"{max(64 << 20, min(ram // 4, 4 << 30)) >> 20}MiB"


_UPSERT_TABLES = frozenset(UPSERT_KEYS)
# Tables merged on a one-column key that is also their PRIMARY KEY (the migrations; a
# test checks): a batch of new keys may be inserted there, the key refusing one that is
# not. The other merged tables have no key index since 0025 (each took a block of its
# own in every file): every write to them is a MERGE. `alerts` lost its key in 0027;
# its new ids are checked by `_insert_new_alerts` instead.
_PRIMARY_KEYED = frozenset({"silences"})

# A new alert id held already lies in a row started in the second the id names (the
# engine's `alert_id`); rows started before the batch's earliest second cannot hold one.
_ALERT_IDS_HELD = (
    "SELECT count(*) FROM alerts"
    " WHERE started_at >= ? AND alert_id IN (SELECT alert_id FROM _batch)"
)

# DuckDB compresses appended rows when it checkpoints. Its default (a checkpoint
# after 16 MB of WAL, seconds at a few thousand GPUs) leaves row groups in many
# part-filled segments, each with its own dictionary and header, and frees the
# blocks it rewrites: measured 7.3 vs 4.1 bytes per value for the same two minutes
# of a 3,040-GPU fleet (benchmarks/README.md, "Store size"). Appends not yet
# checkpointed sit in memory, so the threshold stays a quarter of the memory limit.
CHECKPOINT_THRESHOLD_BYTES = 256 << 20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B\s*$", re.I)


def checkpoint_threshold(memory_limit: str) -> str:
    """DuckDB's `checkpoint_threshold` for a store with this memory limit."""
    m = _SIZE.match(memory_limit)
    if m is None:
        return "16MB"  # DuckDB's default
    base = 1024 if m.group(3) else 1000
    limit = float(m.group(1)) * base ** "_KMGT".index(m.group(2).upper() or "_")
    return f"{max(16 << 20, min(CHECKPOINT_THRESHOLD_BYTES, int(limit) // 4)) >> 20}MiB"


# The on-disk format a new store file is created with. DuckDB writes v0.10.2's format
# unless told otherwise, which leaves out the newer codecs: Roaring validity (NULL
# masks) and DICT_FSST strings, and small tables then fill whole blocks. The pinned
# DuckDB's own format: 3.15 -> 2.98 bytes per value at 3,040 GPUs (benchmarks/README.md, "Store
# size"). A file made before keeps its format; DuckDB older than this cannot open one
# made with it.
STORAGE_VERSION = "v1.5.0"

# The block size a new store file is made with. Every table with a row takes at least
# one block, and so does each key index, so DuckDB's default 256 KiB leaves ~28 blocks
# (7 MB) of small tables, indexes and metadata in a 3,040-GPU file. 128 KiB: 27.0 ->
# 23.7 MB at 120 s, 104.9 -> 100.9 MB at 600 s, and the 1-minute rollups no larger.
# Not 64 KiB (22.3 MB at 120 s): DuckDB then leaves the rollups' DECIMAL(38,6) sums
# uncompressed (+40 % rollup bytes); 32 and 16 KiB compress the sample columns badly
# too (35 MB). benchmarks/README.md, "Store size". A file keeps the block size it was
# made with; a DuckDB older than 1.2 cannot open one made with another than 256 KiB.
BLOCK_SIZE_BYTES = 128 << 10

# How long `close` waits for side-writer transactions (a rollup tick) to finish.
SIDE_WRITER_WAIT_S = 30.0

# Merge rules that are not "latest value wins" for a column.
_MERGE_EXPR = {
    ("hosts", "first_seen"): "least(t.first_seen, s.first_seen)",
    ("hosts", "last_seen"): "greatest(t.last_seen, s.last_seen)",
}


def _open_error(path: str, exc: Exception) -> StoreError:
    msg = str(exc).splitlines()[0]
    if "lock" in msg.lower():
        return StoreError(
            f"{path}: database is in use by another process (a running daemon?); "
            "query it with `fleettui sql` (which connects to the daemon) or stop that process"
        )
    return StoreError(f"{path}: cannot open database: {msg}")


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def _make_private(path: str) -> None:
    """Stores made before files were private: the owner's own files become 0600."""
    for p in (path, path + ".wal"):
        try:
            if os.stat(p).st_uid == os.getuid():
                os.chmod(p, 0o600)
        except (FileNotFoundError, PermissionError):
            pass


def _live_snapshot(
    con: duckdb.DuckDBPyConnection, wanted: bool = True, background: bool = False
) -> LiveSnapshot | None:
    if not wanted:
        return None
    try:
        return LiveSnapshot(con, background=background)
    except duckdb.Error as exc:  # the views then read history
        log.warning("no live snapshot: %s", str(exc).splitlines()[0])
        return None


class Store:
    # A backend whose data other processes also write (storage/lake.py) must not keep a
    # snapshot of only its own writes: its views read history instead. A read-only store
    # has none either (DuckDB cannot attach the in-memory catalog there; nothing writes).
    live_snapshot = True
    # The writer keeps link ids (storage/key_ids.py): only where it alone adds keys.
    keeps_key_ids = True

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: str,
        read_only: bool,
        memory_limit: str | None = None,
        *,
        live_background: bool = False,
    ):
        self.con = con
        self.path = path
        self.read_only = read_only
        self.memory_limit = memory_limit
        self._lock = threading.Lock()
        # side-writer transactions in flight (rollup ticks): `close` lets them finish,
        # or its checkpoint is refused ("other write transactions active")
        self._side = threading.Condition()
        self._side_active = 0
        self._writer = None if read_only else con.cursor()
        self.failure: str | None = None  # the last StoreFailure's message, None while healthy
        # link ids kept by the writer (storage/key_ids.py): 144 per-link rows a report
        # no longer joined to every link on five strings
        keep = self.keeps_key_ids and not read_only
        self._key_ids: dict[str, KeyIds] = {LINKS.view: KeyIds(LINKS, "port")} if keep else {}
        self.reopens = 0
        self.on_reopen: list = []  # callables run with the store after a reopen (re-serve)
        # the snapshot's fill on open in a thread (the views read history meanwhile)
        self.live_background = live_background
        self.live = _live_snapshot(con, self.live_snapshot and not read_only, live_background)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        read_only: bool = False,
        memory_limit: str | None = None,
        live_background: bool = False,
        threads: int | None = None,
    ) -> Store:
        """Open (creating and migrating if writable) the database at `path` (":memory:" ok).

        `memory_limit` is DuckDB's (e.g. "2GiB"); None: `default_memory_limit()`.
        `live_background`: the live snapshot is filled from history in a thread, not
        before this returns (seconds at 100k GPUs); the views read history until then.
        `threads`: DuckDB's worker threads (None: its default), set before that fill."""
        path = str(path)
        limit = memory_limit or default_memory_limit()
        con = cls._connect(path, read_only, limit)
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        return cls(con, path, read_only, limit, live_background=live_background)

    @staticmethod
    def _connect(path: str, read_only: bool, memory_limit: str) -> duckdb.DuckDBPyConnection:
        if path != ":memory:":
            p = Path(path)
            if p.is_dir():
                raise StoreError(f"{path}: is a directory, not a database file")
            if read_only and not p.exists():
                raise StoreError(f"{path}: no such database (run `fleettui daemon` to create one)")
            if not read_only:
                try:
                    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"{path}: cannot create its directory {str(p.parent)!r}: {exc.strerror}"
                    ) from None
        # the file and its WAL: owner only. DuckDB creates the WAL lazily, so the
        # fleettui CLI also runs with umask 077; this covers library callers' first open.
        mask = os.umask(0o077)
        try:
            try:
                con = duckdb.connect(
                    path,
                    read_only=read_only,
                    config={
                        "memory_limit": memory_limit,
                        "storage_compatibility_version": STORAGE_VERSION,
                        "default_block_size": BLOCK_SIZE_BYTES,
                    },
                )
            except duckdb.Error as exc:
                raise _open_error(path, exc) from exc
            try:
                if not _stderr_is_tty():  # its bar is for a terminal: noise in a log (migrations)
                    con.execute("SET enable_progress_bar = false")
                if read_only:
                    check_version(con, path)
                else:
                    migrate(con, path)
                    _make_private(path)
                    threshold = checkpoint_threshold(memory_limit)
                    con.execute(f"SET checkpoint_threshold = '{threshold}'")
            except Exception:
                con.close()
                raise
        finally:
            os.umask(mask)
        return con

    def reopen(self) -> None:
        """Close and open the database again: the only way out of DuckDB's invalidated
        state (after `No space left on device` at a checkpoint). Raises StoreError while
        the file still cannot be opened; runs `on_reopen` hooks after success."""
        with self._lock:
            if self.live is not None:
                self.live.close()
            with contextlib.suppress(Exception):
                self.con.close()
            con = self._connect_again()
            self.con = con
            self._writer = None if self.read_only else con.cursor()
            self.forget_key_ids()
            self.live = _live_snapshot(
                con, self.live_snapshot and not self.read_only, self.live_background
            )
            self._after_reconnect()
            self.failure = None
            self.reopens += 1
        for hook in self.on_reopen:
            hook(self)

    # Hooks for another backend (storage/lake.py): how to open the database again.
    def _connect_again(self) -> duckdb.DuckDBPyConnection:
        return self._connect(self.path, self.read_only, self.memory_limit or default_memory_limit())

    def _after_reconnect(self) -> None:
        pass

    def write(self, batches: Iterable[Batch]) -> int:
        """Append or merge every batch in one transaction; returns rows written."""
        if self._writer is None:
            raise StoreError(f"{self.path}: store is open read-only")
        merged = concat_batches(list(batches), _UPSERT_TABLES)
        if not merged:
            return 0
        for b in merged:
            if b.table not in TABLE_COLUMNS:
                raise BatchError(f"unknown table {b.table!r}")
        t0 = time.thread_time()
        try:
            try:
                rows = self._write_merged(merged, insert_new=True)
            except duckdb.ConstraintException:
                if not any(b.new_keys for b in merged):
                    raise
                # A key said to be new was there after all (the transaction rolled
                # back): the same write again, merging every batch on its key.
                rows = self._write_merged(merged, insert_new=False)
        except BaseException as exc:
            self.forget_key_ids()  # ids it read inside the rolled-back transaction
            if not isinstance(exc, duckdb.Error):
                raise
            failure = as_store_failure(self.path, exc)
            if failure is None:
                raise
            self.failure = str(failure)
            raise failure from exc
        self.failure = None
        self._to_live(merged, time.thread_time() - t0)
        return rows

    def _write_merged(self, merged: list[Batch], *, insert_new: bool) -> int:
        """Every batch in one transaction. `insert_new`: a batch whose keys are all new
        (`Batch.new_keys`) to a table keyed by one column is inserted, not merged: a MERGE
        joins the batch to the whole table (every alert ever raised), and the first alert
        cycle after a start writes all its open alerts as new rows. A key that is there
        after all is merged (`alerts`: `_insert_new_alerts`) or refused by the table's
        primary key (ConstraintException; the transaction rolls back)."""
        rows = 0
        with self.writer() as cur:
            for b in merged:
                cur.register("_batch", b.data)
                try:
                    if (keyed := KEYED.get(b.table)) is not None:
                        self._write_keyed(cur, keyed, b)
                    elif insert_new and b.new_keys and b.table == "alerts":
                        self._insert_new_alerts(cur, b)
                    elif insert_new and b.new_keys and b.table in _PRIMARY_KEYED:
                        cur.execute(f"INSERT INTO {b.table} BY NAME SELECT * FROM _batch")
                    else:
                        cur.execute(self._insert_sql(b))
                finally:
                    cur.unregister("_batch")
                rows += b.rows
        return rows

    def _insert_new_alerts(self, cur: duckdb.DuckDBPyConnection, b: Batch) -> None:
        """A batch of new alert ids (registered as `_batch`): inserted where none is in
        the batch twice or in the table already, else merged, as the table's key made
        it before 0027. The table is in start order, so the look-up reads only the rows
        started in or after the batch's earliest second (zone maps skip the rest)."""
        ids = b.data.column("alert_id")
        first = pc.min(b.data.column("started_at")).as_py()
        if (
            first is None
            or ids.null_count
            or pc.count_distinct(ids).as_py() != len(ids)
            or cur.execute(_ALERT_IDS_HELD, [first.replace(microsecond=0)]).fetchone() != (0,)
        ):
            cur.execute(self._insert_sql(b))
            return
        cur.execute("INSERT INTO alerts BY NAME SELECT * FROM _batch")

    def _write_keyed(self, cur: duckdb.DuckDBPyConnection, keyed: Keyed, b: Batch) -> None:
        """A keyed table's batch (registered as `_batch`): with the ids the writer keeps
        where it holds every key's, else joined to the dimension."""
        key_ids = self._key_ids.get(keyed.view)
        ids = None if key_ids is None else key_ids.lookup(cur, b.data)
        if ids is None:
            keyed.write(cur, b.data.column_names, b.rows)
            return
        data = b.data.append_column(keyed.id_col, ids)
        ts = data.column("ts")
        if not ts.null_count:  # (ts, id) order here: numpy sorts 40k rows ~5x faster
            order = np.lexsort((ids.to_numpy(), ts.cast(pa.int64()).to_numpy()))
            data = data.take(pa.array(order))
        cur.unregister("_batch")
        cur.register("_batch", data)
        cur.execute(keyed.rows_by_id_sql(b.data.column_names, ordered=not ts.null_count))

    def forget_key_ids(self) -> None:
        """Drop the ids the writer keeps (a dimension lost rows: retention's prune)."""
        for key_ids in self._key_ids.values():
            key_ids.reset()

    def _to_live(self, merged: list[Batch], write_cpu_s: float) -> None:
        """Committed samples to the live snapshot (storage/live.py); its failure is
        logged and the views read history instead."""
        if self.live is None:
            return
        self.live.note_write(write_cpu_s)
        for b in merged:
            self.live.add(b.table, b.data)
        try:
            self.live.maybe_publish()
        except Exception as exc:  # noqa: BLE001 - the write is committed: never fail it
            log.warning("live snapshot dropped: %s", (str(exc).splitlines() or [""])[0])
            self.live = None

    def publish_live(self) -> None:
        """Publish what the writer holds for the live snapshot now (end of a fill)."""
        if self.live is not None:
            self.live.publish()

    @staticmethod
    def _insert_sql(b: Batch) -> str:
        keys = UPSERT_KEYS.get(b.table)
        if keys is None:
            return f"INSERT INTO {b.table} BY NAME SELECT * FROM _batch"
        cols = b.data.column_names
        missing = [k for k in keys if k not in cols and k != "slice_id"]
        if missing:
            raise BatchError(f"{b.table}: batch lacks key column(s) {', '.join(missing)}")
        keys = tuple(k for k in keys if k in cols)
        on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)
        sets = ", ".join(
            f"{c} = {_MERGE_EXPR.get((b.table, c), f'coalesce(s.{c}, t.{c})')}"
            for c in cols
            if c not in keys
        )
        part = ", ".join(keys)
        src = f"(SELECT * FROM _batch QUALIFY row_number() OVER (PARTITION BY {part}) = 1)"
        matched = f"WHEN MATCHED THEN UPDATE SET {sets} " if sets else ""
        return (
            f"MERGE INTO {b.table} AS t USING {src} AS s ON {on} "
            f"{matched}WHEN NOT MATCHED THEN INSERT BY NAME"
        )

    @contextlib.contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The writer cursor inside one transaction, for maintenance that is not
        an append (retention, alert state). Commits on success, rolls back on error."""
        if self._writer is None:
            raise StoreError(f"{self.path}: store is open read-only")
        with self._lock:
            cur = self._writer
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # an invalidated database refuses it too
                    cur.execute("ROLLBACK")
                raise

    def serialize_commit(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Make this writer transaction conflict with other writers' (the lake's several
        daemons: storage/lake.py); one process's file store has one writer already."""

    @contextlib.contextmanager
    def side_writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A transaction on a cursor of its own, beside the writer and without its lock:
        for long maintenance that writes only tables ingestion never writes (rollups),
        so that appends are not queued behind it. DuckDB runs both transactions at
        once (MVCC); they write different tables, so neither conflicts."""
        if self._writer is None:
            raise StoreError(f"{self.path}: store is open read-only")
        cur = self.cursor()
        with self._side:
            self._side_active += 1
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise
        finally:
            cur.close()
            with self._side:
                self._side_active -= 1
                self._side.notify_all()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for reads on this process's connection (thread-safe to use per thread)."""
        return self.con.cursor()

    def checkpoint(self) -> None:
        if self._writer is not None:
            with self._lock:
                self._writer.execute("CHECKPOINT")

    def _let_side_writers_finish(self, timeout_s: float) -> None:
        """Wait (bounded) for side-writer transactions, e.g. a rollup tick still
        running in its thread at shutdown, to commit."""
        with self._side:
            self._side.wait_for(lambda: self._side_active == 0, timeout=timeout_s)

    def close(self, side_wait_s: float = SIDE_WRITER_WAIT_S) -> None:
        self._let_side_writers_finish(side_wait_s)
        if self.live is not None:
            self.live.close()  # a fill still running stops before its connection closes
        try:
            if self._writer is not None:
                self.checkpoint()
        except duckdb.Error as exc:
            # e.g. a reader cursor still holds a half-read result; closing the
            # connection still persists the WAL, so nothing is lost.
            log.warning("%s: checkpoint on close skipped: %s", self.path, str(exc).splitlines()[0])
        finally:
            self.con.close()
