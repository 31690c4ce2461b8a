"""Retention: time-series rows older than a horizon are deleted, in small steps.

Which tables are time series is read from the schema, not from a hand list:
every table with a `ts` TIMESTAMP column that is not merged on a key (the
dimension tables in `UPSERT_KEYS`). That covers samples, processes, events,
collector runs and rejects, and any table a later migration adds. Alert
instances (no `ts`; they change state in place) and inventory are kept.

Each step deletes at most `step_rows` rows of one table in its own short
transaction, and the task yields between steps, so ingestion (which takes the
same writer lock) is never held up for longer than one step.

How large the store will grow at the configured retention is measured by
`storage/footprint.py` (shown by `fleettui status` and `/metrics`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from storage.columns import UPSERT_KEYS
from storage.keyed import KEYED, VIEW_OF
from storage.rollups import SPECS, TIERS, rollup_table
from storage.store import Store

STEP_ROWS = 50_000  # rows per delete step: a few tens of ms on 2 cores


def time_series_tables(store: Store) -> list[str]:
    """Tables with a `ts` TIMESTAMP column that are append-only, from the schema."""
    rows = (
        store.cursor()
        .execute(
            "SELECT table_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND column_name = 'ts' AND data_type LIKE 'TIMESTAMP%' "
            "AND table_name IN (SELECT table_name FROM duckdb_tables() WHERE database_name = "
            "current_database() AND schema_name = 'main') "  # base tables, not views
            "ORDER BY table_name"
        )
        .fetchall()
    )
    return [t for (t,) in rows if t not in UPSERT_KEYS]


def delete_step(store: Store, table: str, cutoff: datetime, step_rows: int = STEP_ROWS) -> int:
    """Delete up to `step_rows` rows of `table` with ts < cutoff; returns rows deleted."""
    with store.writer() as cur:
        row = cur.execute(
            f"DELETE FROM {table} WHERE rowid IN "
            f"(SELECT rowid FROM {table} WHERE ts < ? LIMIT {int(step_rows)})",
            [cutoff],
        ).fetchone()
    return int(row[0]) if row else 0


def prune_keys(store: Store) -> dict[str, int]:
    """Delete dimension rows of keyed tables (storage/keyed.py) that no row refers to
    any more; returns how many per dimension table."""
    out = {}
    try:
        for keyed in KEYED.values():
            with store.writer() as cur:
                store.serialize_commit(cur)
                row = cur.execute(keyed.prune_sql()).fetchone()
            out[keyed.dim] = int(row[0]) if row else 0
    finally:
        # a pruned highest id is handed out again, to another key, with the same count
        store.forget_key_ids()
    return out


def rollup_cutoffs(store: Store, tables: list[str], cutoff: datetime) -> dict[str, datetime]:
    """Per table, the cutoff that keeps raw rows its rollups have not read yet.

    A sample table with rollups keeps raw rows at or after the oldest of its
    tiers' watermarks (`rollup_state.done_until`): deleting them first would
    leave holes in the 1-minute and 1-hour tiers for good. A table whose
    rollups never ran keeps everything until they do."""
    out = {t: cutoff for t in tables}
    marks = dict(store.cursor().execute("SELECT rollup, done_until FROM rollup_state").fetchall())
    for table in tables:
        rolled = VIEW_OF.get(table, table)  # a keyed table's rollups read its view
        if rolled not in SPECS:
            continue
        done = [marks.get(rollup_table(rolled, tier)) for tier in TIERS]
        out[table] = min([cutoff, *(d or datetime.min for d in done)])
    return out


def delete_before(store: Store, cutoff: datetime, step_rows: int = STEP_ROWS) -> dict[str, int]:
    """Delete every time-series row with ts < cutoff, step by step (blocking)."""
    deleted: dict[str, int] = {}
    for table in time_series_tables(store):
        total = 0
        while (n := delete_step(store, table, cutoff, step_rows)) > 0:
            total += n
        deleted[table] = total
    deleted.update(prune_keys(store))
    return deleted


class RetentionTask:
    """Periodic task: keep `keep_h` hours of time-series rows."""

    name = "retention"

    def __init__(
        self,
        store: Store,
        keep_h: float,
        interval_s: float = 3600.0,
        step_rows: int = STEP_ROWS,
        wait_for_rollups: bool = False,
    ):
        if keep_h <= 0:
            raise ValueError("retention must be > 0 hours")
        self.store = store
        self.keep = timedelta(hours=keep_h)
        self.interval_s = interval_s
        self.step_rows = step_rows
        self.wait_for_rollups = wait_for_rollups  # raw rows wait until rolled up
        self.last_deleted: dict[str, int] = {}
        self.last_steps = 0
        self.last_duration_s = 0.0
        self.longest_step_s = 0.0

    async def tick(self, now: datetime) -> None:
        cutoff = now - self.keep
        t0 = time.perf_counter()
        deleted: dict[str, int] = {}
        steps = 0
        longest = 0.0
        tables = await asyncio.to_thread(time_series_tables, self.store)
        cutoffs = {t: cutoff for t in tables}
        if self.wait_for_rollups:
            cutoffs = await asyncio.to_thread(rollup_cutoffs, self.store, tables, cutoff)
        for table in tables:
            total = 0
            while True:
                s0 = time.perf_counter()
                n = await asyncio.to_thread(
                    delete_step, self.store, table, cutoffs[table], self.step_rows
                )
                longest = max(longest, time.perf_counter() - s0)
                steps += 1
                total += n
                if n < self.step_rows:
                    break
                await asyncio.sleep(0)  # let the writer in between steps
            deleted[table] = total
        deleted.update(await asyncio.to_thread(prune_keys, self.store))
        self.last_deleted, self.last_steps = deleted, steps
        self.last_duration_s = time.perf_counter() - t0
        self.longest_step_s = longest
