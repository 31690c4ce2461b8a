"""The store on DuckLake: several daemons write one store, any DuckDB reads it.

The catalog lives in PostgreSQL, the data in Parquet files under a shared
directory. Each process runs its own in-memory DuckDB that ATTACHes the lake;
the extensions (`ducklake`, `postgres`) are LOADed from their PyPI packages'
files, as Quack's are, so nothing is downloaded at run time.

What differs from the file (SCHEMA.md, "On DuckLake"):

- DuckLake has no PRIMARY KEY, UNIQUE, CHECK or indexes: the migrations run with
  those clauses taken out (`lake_sql`). Dimension tables are still merged on
  their key (the file's MERGE), and rollup state is MERGEd too.
- Exactly once, with no key to refuse a second row: every write transaction
  first updates the one row of `lake_commit_lock`, so two daemons' overlapping
  commits conflict and the later one retries (its MERGE then sees the other's
  new hosts, GPUs, ...); sample rows whose key (table's `SAMPLE_KEYS`) is
  already stored in the batch's time range are skipped, so a report the broker
  redelivers to the other daemon, or an agent replays, is stored once.
- Commit conflicts (DuckLake's optimistic concurrency) are retried with a
  jittered backoff; only after `CONFLICT_RETRIES` does the batch fail.
- Readers' cursors see the lake's tables by their plain names through views in
  the in-memory database, so every query of the file backend runs unchanged.

The password never reaches a log line: `redact` scrubs it from every message.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from storage.batch import Batch, BatchError, concat_batches
from storage.columns import TABLE_COLUMNS, UPSERT_KEYS
from storage.keyed import KEYED
from storage.migrate import check_version, migrate
from storage.store import SIDE_WRITER_WAIT_S, Store, StoreError, as_store_failure

log = logging.getLogger("fleettui.lake")

CATALOG = "lake"  # the lake's name inside each process's DuckDB
CONFLICT_RETRIES = 20

# The key of one sample: a second row with the same key is a redelivered report.
SAMPLE_KEYS: dict[str, tuple[str, ...]] = {
    "gpu_samples": ("ts", "gpu_uuid", "source"),
    "slice_samples": ("ts", "slice_id", "source"),
    "link_samples": ("ts", "host", "kind", "port", "gpu_uuid", "source"),
    "gpu_mem_samples": ("ts", "gpu_uuid", "source"),
    "processes": ("ts", "host", "gpu_uuid", "slice_id", "pid", "source"),
    "events": ("ts", "host", "gpu_uuid", "kind", "code", "source"),
    "latency_samples": ("ts", "endpoint", "source"),
    # the MQTT source's record of stored reports: `ts` is when a daemon received it, so
    # a redelivery has a later ts; looked up over REPORT_LOOKBACK instead
    "report_seqs": ("host", "boot", "seq"),
}
REPORT_LOOKBACK = "INTERVAL 1 HOUR"

_UPSERT_TABLES = frozenset(UPSERT_KEYS)
_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact(text: str) -> str:
    """`text` with any libpq `password=...` replaced: errors may echo the DSN."""
    return _PASSWORD.sub(r"\1***", text)


def _strip_checks(sql: str) -> str:
    out, i = [], 0
    for m in re.finditer(r"\s+CHECK\s*\(", sql, re.I):
        if m.start() < i:
            continue
        depth, j = 1, m.end()
        while depth and j < len(sql):
            depth += {"(": 1, ")": -1}.get(sql[j], 0)
            j += 1
        out.append(sql[i : m.start()])
        i = j
    out.append(sql[i:])
    return "".join(out)


def lake_sql(sql: str) -> str:
    """A migration as DuckLake takes it: no PRIMARY KEY, UNIQUE or CHECK constraints,
    no column compression (Parquet files compress their own)."""
    sql = re.sub(r"\s+PRIMARY\s+KEY\b", "", sql, flags=re.I)
    sql = re.sub(r"\s+USING\s+COMPRESSION\s+\w+", "", sql, flags=re.I)
    sql = re.sub(r"\s+UNIQUE\b", "", sql, flags=re.I)
    return _strip_checks(sql)


def is_conflict(exc: BaseException) -> bool:
    """DuckLake refused a commit because another writer got there first."""
    msg = str(exc)
    return isinstance(exc, duckdb.Error) and (
        "Transaction conflict" in msg or "conflict" in msg.lower() and "commit" in msg.lower()
    )


def _extension_file(module_name: str, ext: str) -> Path:
    module = __import__(module_name)
    base = Path(str(module.__file__)).parent / "extensions"
    found = sorted(base.glob(f"*/{ext}.duckdb_extension"))
    if not found:
        raise StoreError(f"{module_name}: {ext}.duckdb_extension not found under {base}")
    return found[-1]


def load_lake_extensions(con: duckdb.DuckDBPyConnection) -> None:
    """LOAD ducklake and postgres from their packages. The postgres package's file is
    named postgres.duckdb_extension but its entry point is postgres_scanner's, and DuckDB
    derives the entry point from the file name: it is loaded through a link so named."""
    pg = _extension_file("duckdb_extension_postgres", "postgres")
    tmp = Path(tempfile.mkdtemp(prefix="fleettui-ext-"))
    try:
        link = tmp / "postgres_scanner.duckdb_extension"
        link.symlink_to(pg.resolve())
        con.execute(f"LOAD '{link}'")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    con.execute(f"LOAD '{_extension_file('duckdb_extension_ducklake', 'ducklake')}'")


@dataclass(frozen=True)
class LakeTarget:
    """Where the lake is: the catalog's libpq DSN (no password), the password (kept out
    of every message), the data directory."""

    catalog: str
    data_path: str
    password: str | None = None

    def __str__(self) -> str:
        return f"ducklake (catalog {redact(self.catalog)}, data {self.data_path})"

    def dsn(self) -> str:
        if not self.password:
            return self.catalog
        quoted = self.password.replace("\\", "\\\\").replace("'", "\\'")
        return f"{self.catalog} password='{quoted}'"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class LakeStore(Store):
    """A `Store` whose database is a DuckLake; `write` and `writer` as the file's."""

    # Several daemons write one lake: a daemon's own newest samples are only its share
    # of the fleet, so the views read the lake's history, never a per-process snapshot.
    live_snapshot = False
    # other daemons add link ids too: every write joins (storage/key_ids.py)
    keeps_key_ids = False

    def __init__(self, con, target: LakeTarget, read_only: bool, memory_limit: str | None):
        super().__init__(con, str(target), read_only, memory_limit)
        self.target = target
        self.conflicts = 0  # commits retried after another writer's conflicting commit
        self.duplicates_skipped = 0  # sample rows already in the lake (redelivered)
        if self._writer is not None:
            self._writer.execute(f"USE {CATALOG}")

    @classmethod
    def open_lake(
        cls, target: LakeTarget, *, read_only: bool = False, memory_limit: str | None = None
    ) -> LakeStore:
        from storage.store import default_memory_limit

        limit = memory_limit or default_memory_limit()
        con = _connect_lake(target, read_only, limit)
        return cls(con, target, read_only, limit)

    def _connect_again(self) -> duckdb.DuckDBPyConnection:
        return _connect_lake(self.target, self.read_only, self.memory_limit or "1GiB")

    def _after_reconnect(self) -> None:
        if self._writer is not None:
            self._writer.execute(f"USE {CATALOG}")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self.con.cursor()
        cur.execute(f"USE {CATALOG}")
        return cur

    def checkpoint(self) -> None:
        """Nothing to flush: every commit is in the catalog and Parquet already
        (compaction is `LakeMaintenanceTask`'s, on the one evaluating daemon)."""

    def serialize_commit(self, cur: duckdb.DuckDBPyConnection) -> None:
        cur.execute("UPDATE lake_commit_lock SET commits = commits + 1")

    def write(self, batches: Iterable[Batch]) -> int:
        """Append or merge every batch in one transaction, exactly once across daemons
        (see the module's doc); retried when another daemon's commit conflicts."""
        if self._writer is None:
            raise StoreError(f"{self.path}: store is open read-only")
        merged = concat_batches(list(batches), _UPSERT_TABLES)
        if not merged:
            return 0
        for b in merged:
            if b.table not in TABLE_COLUMNS:
                raise BatchError(f"unknown table {b.table!r}")
        sqls = [(b, self._lake_insert_sql(b)) for b in merged]
        for attempt in range(CONFLICT_RETRIES + 1):
            rows = skipped = 0
            try:
                with self.writer() as cur:
                    self.serialize_commit(cur)
                    for b, sql in sqls:
                        cur.register("_batch", b.data)
                        try:
                            res = self._lake_store(cur, b, sql)
                        finally:
                            cur.unregister("_batch")
                        n = int(res[0]) if res and res[0] is not None else b.rows
                        rows += n
                        if b.table in SAMPLE_KEYS:
                            skipped += b.rows - n
                self.failure = None
                self.duplicates_skipped += skipped
                return rows
            except duckdb.Error as exc:
                if is_conflict(exc) and attempt < CONFLICT_RETRIES:
                    self.conflicts += 1
                    time.sleep(random.uniform(0.01, 0.05) * min(2**attempt, 16))
                    continue
                failure = as_store_failure(self.path, exc)
                if failure is None:
                    raise type(exc)(redact(str(exc))) from None
                self.failure = redact(str(failure))
                raise type(failure)(self.failure, failure.invalidated) from None
        raise AssertionError("unreachable")

    def _lake_store(self, cur: duckdb.DuckDBPyConnection, b: Batch, sql: str | None) -> tuple:
        """Store one batch; (rows stored,) or the statement's own result row."""
        if (keyed := KEYED.get(b.table)) is not None:  # storage/keyed.py
            keys = SAMPLE_KEYS.get(b.table)
            usable = keys is not None and all(k in b.data.column_names for k in keys)
            return (keyed.write(cur, b.data.column_names, b.rows, keys if usable else None),)
        assert sql is not None  # _lake_insert_sql gives one for every table not keyed
        return cur.execute(sql).fetchone() or ()

    def _lake_insert_sql(self, b: Batch) -> str | None:
        if b.table in KEYED:
            return None  # written by `_lake_store`
        keys = SAMPLE_KEYS.get(b.table)
        if keys is None or any(k not in b.data.column_names for k in keys):
            return self._insert_sql(b)
        # a key seen twice in the batch, or already in the lake within the batch's time
        # range (file statistics keep the scan to the newest files), is stored once
        part = ", ".join(keys)
        on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)
        if "ts" in keys:
            window = "t.ts BETWEEN (SELECT min(ts) FROM _batch) AND (SELECT max(ts) FROM _batch)"
        else:
            window = f"t.ts >= (SELECT min(ts) FROM _batch) - {REPORT_LOOKBACK}"
        return (
            f"INSERT INTO {b.table} BY NAME "
            f"SELECT * FROM (SELECT * FROM _batch QUALIFY row_number() OVER (PARTITION BY {part}) = 1) s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {b.table} t WHERE {window} AND {on})"
        )

    def lake_file_bytes(self) -> int:
        """Bytes of the data and delete files the catalog lists (storage/footprint.py):
        the lake's size wherever its data path is (a directory, or object storage)."""
        cur = self.cursor()
        try:
            row = cur.execute(
                "SELECT coalesce(sum(file_size_bytes + delete_file_size_bytes), 0)"
                f" FROM ducklake_table_info({_quote(CATALOG)})"
            ).fetchone()
        finally:
            cur.close()
        return int(row[0]) if row else 0

    def close(self, side_wait_s: float = SIDE_WRITER_WAIT_S) -> None:
        self._let_side_writers_finish(side_wait_s)
        self.con.close()


def _attach_sql(target: LakeTarget, read_only: bool) -> str:
    opts = [f"DATA_PATH {_quote(target.data_path)}"]
    if read_only:
        opts.append("READ_ONLY")
    return f"ATTACH {_quote('ducklake:postgres:' + target.dsn())} AS {CATALOG} ({', '.join(opts)})"


def _connect_lake(
    target: LakeTarget, read_only: bool, memory_limit: str
) -> duckdb.DuckDBPyConnection:
    if not read_only:
        try:
            Path(target.data_path).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{target}: cannot create the data directory: {exc.strerror}"
            ) from None
    con = duckdb.connect(config={"memory_limit": memory_limit})
    try:
        load_lake_extensions(con)
        _attach(con, target, read_only)
        cur = con.cursor()
        cur.execute(f"USE {CATALOG}")
        if read_only:
            check_version(cur, str(target))
        else:
            _migrate_lake(cur, target)
        cur.execute("USE memory")
        _expose(con)
        con.execute(f"USE {CATALOG}")
    except BaseException:
        con.close()
        raise
    return con


def _attach(con: duckdb.DuckDBPyConnection, target: LakeTarget, read_only: bool) -> None:
    """ATTACH the lake. Two daemons creating a new catalog at once collide in PostgreSQL
    (a duplicate catalog table): the later one waits and attaches what the first made."""
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            con.execute(_attach_sql(target, read_only))
            return
        except duckdb.Error as exc:
            msg = str(exc)
            if creation_race(msg) and attempt < CONFLICT_RETRIES:
                time.sleep(random.uniform(0.1, 0.5))
                continue
            if "creating a new DuckLake is explicitly disabled" in msg:  # a reader, first
                raise StoreError(
                    f"{target}: no lake there yet; a daemon with this [store] creates it"
                ) from None
            first = redact(msg.strip().splitlines()[0])
            raise StoreError(f"{target}: cannot attach the lake: {first[:300]}") from None


def creation_race(msg: str) -> bool:
    """Whether an ATTACH failed because another process was creating the same new
    catalog: PostgreSQL reports the second CREATE TABLE as a duplicate key of its own
    catalog or, a moment later, as a relation that already exists."""
    return "Failed to initialize DuckLake" in msg and (
        "duplicate key" in msg or "already exists" in msg
    )


def _migrate_lake(cur: duckdb.DuckDBPyConnection, target: LakeTarget) -> None:
    """Migrations (constraints taken out) and the commit lock row; two daemons starting
    together conflict, and the later one finds the work done on retry."""
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            migrate(cur, str(target), transform=lake_sql)
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute("CREATE TABLE IF NOT EXISTS lake_commit_lock (commits BIGINT NOT NULL)")
                cur.execute(
                    "INSERT INTO lake_commit_lock SELECT 0 "
                    "WHERE NOT EXISTS (SELECT 1 FROM lake_commit_lock)"
                )
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS lake_evaluator"
                    " (daemon VARCHAR NOT NULL, heartbeat TIMESTAMP NOT NULL)"
                )
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise
            return
        except duckdb.Error as exc:
            if not is_conflict(exc) or attempt == CONFLICT_RETRIES:
                raise StoreError(
                    f"{target}: cannot migrate the lake: {redact(str(exc).splitlines()[0])[:300]}"
                ) from None
            time.sleep(random.uniform(0.05, 0.2))


def _expose(con: duckdb.DuckDBPyConnection) -> None:
    """A view in the in-memory database for each table and view of the lake, so cursors
    (which start in `memory`) run the file backend's queries unchanged."""
    names = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
        "UNION SELECT view_name FROM duckdb_views() WHERE database_name = ? "
        "AND schema_name = 'main' AND NOT internal",
        [CATALOG, CATALOG],
    ).fetchall()
    for (name,) in names:
        con.execute(
            f'CREATE OR REPLACE VIEW memory.main."{name}" AS SELECT * FROM {CATALOG}.main."{name}"'
        )


class LakeMaintenanceTask:
    """Compaction on the one evaluating daemon: flush rows DuckLake inlined into the
    catalog, merge the many small Parquet files that per-second commits leave, expire
    old snapshots and delete the files no snapshot needs. A conflict with a writer just
    waits for the next tick."""

    name = "lake-maintenance"

    def __init__(self, store: LakeStore, interval_s: float = 300.0, keep_snapshots_h: float = 1.0):
        self.store = store
        self.interval_s = interval_s
        self.keep_snapshots_h = keep_snapshots_h
        self.runs = 0

    def run_once(self) -> None:
        keep_s = int(self.keep_snapshots_h * 3600)
        cur = self.store.cursor()
        try:
            for sql in (
                f"CALL ducklake_flush_inlined_data('{CATALOG}')",
                f"CALL ducklake_merge_adjacent_files('{CATALOG}')",
                f"CALL ducklake_expire_snapshots('{CATALOG}', older_than => "
                f"now() - to_seconds({keep_s}))",
                f"CALL ducklake_cleanup_old_files('{CATALOG}', older_than => "
                f"now() - to_seconds({keep_s}))",
            ):
                # read as Arrow: their TIMESTAMPTZ columns as Python objects need pytz
                cur.execute(sql).to_arrow_table()
        finally:
            cur.close()
        self.runs += 1

    async def tick(self, now) -> None:
        import asyncio

        await asyncio.to_thread(self.run_once)


LEASE_S = 90.0  # an evaluator silent this long may be replaced


class EvaluatorTaken(StoreError):
    """Another daemon evaluates this lake; one line for a person."""


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def claim_evaluator(store: LakeStore, who: str, now: datetime | None = None) -> None:
    """Take (or keep) the lake's one evaluator lease for `who`, in a commit serialized
    with every other write; raises EvaluatorTaken while another daemon's lease is fresh."""
    now = now or _utcnow()
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            with store.writer() as cur:
                cur.execute("UPDATE lake_commit_lock SET commits = commits + 1")
                other = cur.execute(
                    "SELECT daemon, heartbeat FROM lake_evaluator WHERE daemon <> ? "
                    "AND heartbeat > ? ORDER BY heartbeat DESC LIMIT 1",
                    [who, now - timedelta(seconds=LEASE_S)],
                ).fetchone()
                if other is not None:
                    age = max(0.0, (now - other[1]).total_seconds())
                    raise EvaluatorTaken(
                        f"{store.path}: {other[0]!r} already evaluates this lake "
                        f"(heartbeat {age:.0f} s ago); set [store] evaluator = false here, "
                        f"or stop that daemon and wait {LEASE_S:.0f} s"
                    )
                cur.execute("DELETE FROM lake_evaluator")
                cur.execute("INSERT INTO lake_evaluator VALUES (?, ?)", [who, now])
            return
        except duckdb.Error as exc:
            if not is_conflict(exc) or attempt == CONFLICT_RETRIES:
                raise
            time.sleep(random.uniform(0.01, 0.05) * min(2**attempt, 16))


def release_evaluator(store: LakeStore, who: str) -> None:
    """Give the lease up on a clean stop, so another evaluator can start at once."""
    with contextlib.suppress(duckdb.Error), store.writer() as cur:
        cur.execute("UPDATE lake_commit_lock SET commits = commits + 1")
        cur.execute("DELETE FROM lake_evaluator WHERE daemon = ?", [who])


class EvaluatorLeaseTask:
    """Keeps the lease fresh. Losing it (another daemon took it after this one stalled
    past LEASE_S) is logged loudly; the tasks go on until the operator fixes the configs."""

    name = "lake-evaluator-lease"

    def __init__(self, store: LakeStore, who: str, interval_s: float = LEASE_S / 3):
        self.store = store
        self.who = who
        self.interval_s = interval_s

    async def tick(self, now) -> None:
        import asyncio

        try:
            await asyncio.to_thread(claim_evaluator, self.store, self.who)
        except EvaluatorTaken as exc:
            log.error("%s", exc)
