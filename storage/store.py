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
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb

from storage.batch import Batch, BatchError, concat_batches
from storage.columns import TABLE_COLUMNS, UPSERT_KEYS
from storage.migrate import check_version, migrate

log = logging.getLogger("fleettui.store")


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message is one line for a person."""


_UPSERT_TABLES = frozenset(UPSERT_KEYS)

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


def _make_private(path: str) -> None:
    """Stores made before files were private: the owner's own files become 0600."""
    for p in (path, path + ".wal"):
        try:
            if os.stat(p).st_uid == os.getuid():
                os.chmod(p, 0o600)
        except (FileNotFoundError, PermissionError):
            pass


class Store:
    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, read_only: bool):
        self.con = con
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        self._writer = None if read_only else con.cursor()

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False) -> Store:
        """Open (creating and migrating if writable) the database at `path` (":memory:" ok)."""
        path = str(path)
        if read_only and path != ":memory:" and not Path(path).exists():
            raise StoreError(f"{path}: no such database (run `fleettui daemon` to create one)")
        if not read_only and path != ":memory:":
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # the file and its WAL: owner only. DuckDB creates the WAL lazily, so the
        # fleettui CLI also runs with umask 077; this covers library callers' first open.
        mask = os.umask(0o077)
        try:
            try:
                con = duckdb.connect(path, read_only=read_only)
            except duckdb.Error as exc:
                raise _open_error(path, exc) from exc
            try:
                if read_only:
                    check_version(con, path)
                else:
                    migrate(con, path)
                    _make_private(path)
            except Exception:
                con.close()
                raise
        finally:
            os.umask(mask)
        return cls(con, path, read_only)

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
        rows = 0
        with self.writer() as cur:
            for b in merged:
                cur.register("_batch", b.data)
                try:
                    cur.execute(self._insert_sql(b))
                finally:
                    cur.unregister("_batch")
                rows += b.rows
        return rows

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
                cur.execute("ROLLBACK")
                raise

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for reads on this process's connection (thread-safe to use per thread)."""
        return self.con.cursor()

    def checkpoint(self) -> None:
        if self._writer is not None:
            with self._lock:
                self._writer.execute("CHECKPOINT")

    def close(self) -> None:
        try:
            if self._writer is not None:
                self.checkpoint()
        except duckdb.Error as exc:
            # e.g. a reader cursor still holds a half-read result; closing the
            # connection still persists the WAL, so nothing is lost.
            log.warning("%s: checkpoint on close skipped: %s", self.path, str(exc).splitlines()[0])
        finally:
            self.con.close()
