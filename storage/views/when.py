"""The time cursor: every view reads the fleet as it was at `at`."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

# A GPU whose newest sample is older than this, at the time cursor, counts as stale.
STALE_AFTER_S = 30.0


def resolve_at(at: datetime | None) -> datetime:
    """`at` as naive UTC (the store's timestamps); None means now."""
    if at is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if at.tzinfo is not None:
        return at.astimezone(UTC).replace(tzinfo=None)
    return at


def has_table(cur: duckdb.DuckDBPyConnection, table: str) -> bool:
    """True when `table` is queryable unqualified (local store or an attached daemon)."""
    try:
        cur.execute(f"SELECT 1 FROM {table} LIMIT 0")
    except duckdb.Error:
        return False
    return True


def table_columns(cur: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """Column names of `table` (empty when it does not exist)."""
    try:
        cur.execute(f"SELECT * FROM {table} LIMIT 0")
    except duckdb.Error:
        return set()
    return {d[0] for d in cur.description}
