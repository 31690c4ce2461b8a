"""Versioned schema: numbered SQL files in storage/migrations, applied in order.

`schema_version` holds one row per applied migration. Opening an older file
migrates it inside one transaction; a file from a newer FleetTUI is refused
rather than misread. Every bundled migration the file has not recorded is
applied, in order, even one numbered below its newest: branches land
migrations out of order, and a store made in between must not skip one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources

import duckdb

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql\Z")
_COMPRESSION = re.compile(r"\s+USING\s+COMPRESSION\s+\w+", re.I)
# the oldest on-disk format with ZSTD strings (DuckDB 1.2)
_ZSTD_FORMAT = (1, 2, 0)


class SchemaError(RuntimeError):
    """The database's schema cannot be used by this version of FleetTUI."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every bundled migration, oldest first."""
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text()))
    found.sort()
    return found


def latest_version() -> int:
    return migrations()[-1][0]


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    has = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version'"
        " AND database_name = current_database() AND schema_name = 'main'"
    ).fetchone()
    if not has or not has[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0) if row else 0


def applied_versions(con: duckdb.DuckDBPyConnection) -> set[int]:
    if current_version(con) == 0:
        return set()
    return {int(r[0]) for r in con.execute("SELECT version FROM schema_version").fetchall()}


def check_version(con: duckdb.DuckDBPyConnection, where: str) -> int:
    """Current version; raises SchemaError if it is newer than this code knows."""
    have, know = current_version(con), latest_version()
    if have > know:
        raise SchemaError(
            f"{where}: schema version {have} is newer than this FleetTUI knows ({know}); "
            "upgrade FleetTUI to open it"
        )
    return have


def migrate(
    con: duckdb.DuckDBPyConnection, where: str, transform: Callable[[str], str] | None = None
) -> int:
    """Bring the database to the latest schema; returns the version it is at.
    `transform` rewrites each statement for another backend (storage/lake.py)."""
    fix = transform or _format_sql(con)
    have = check_version(con, where)
    applied = applied_versions(con)
    pending = [m for m in migrations() if m[0] not in applied]
    if not pending:
        return have
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            fix(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                # no DEFAULT now(): a function default breaks Quack clients' ATTACH
                " applied_at TIMESTAMP NOT NULL)"
            )
        )
        for version, name, sql in pending:
            con.execute(fix(sql))
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)", [version, name]
            )
        con.execute("COMMIT")
    except Exception:
        try:  # a failed COMMIT has rolled back already (a DuckLake commit conflict)
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise
    return max(have, pending[-1][0])


def _format_sql(con: duckdb.DuckDBPyConnection) -> Callable[[str], str]:
    """Migrations as the file's on-disk format takes them. A file made in DuckDB's
    default format (stores made before storage.store.STORAGE_VERSION) has no ZSTD
    strings, and there DuckDB stores a column forced to ZSTD uncompressed: such a
    file keeps DuckDB's own choice (0026)."""
    row = con.execute(
        "SELECT tags['storage_version'] FROM duckdb_databases()"
        " WHERE database_name = current_database()"
    ).fetchone()
    m = re.match(r"v(\d+)\.(\d+)\.(\d+)", (row[0] if row else None) or "")
    if m and tuple(int(g) for g in m.groups()) < _ZSTD_FORMAT:
        return lambda sql: _COMPRESSION.sub("", sql)
    return lambda sql: sql
