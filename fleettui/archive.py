"""`fleettui sql --archive DIR`: the Parquet archive and the live store as one.

Set up on the client, in an in-memory DuckDB of this process:

- the live store is attached as `live` (the daemon's Quack endpoint with its
  token, or the database file read-only when no daemon holds it);
- each time-series table becomes a view of the archive's rows older than the
  live table's oldest row, then every live row (`UNION ALL BY NAME`), so a
  row is seen once whether it was exported or not;
- inventory tables are copied from the live store (small), else taken from
  the archive's newest snapshot; live-only relations (views such as
  `gpu_samples_1h_live`) are passed through.

An attached Quack catalog runs a query that scans one remote table; joining
two time-series tables in one query through a daemon is refused by Quack
(join after exporting, or query the file with no daemon running).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from fleettui.export_cli import SNAPSHOT_TABLES
from fleettui.paths import default_db_path, read_daemon_info
from storage import quack
from storage.reader import LocalReader
from storage.store import StoreError

_PART = re.compile(r"^table=([a-z][a-z0-9_]*)\Z")


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def archive_tables(archive: Path) -> list[str]:
    if not archive.is_dir():
        raise StoreError(f"{archive}: no such archive directory")
    return sorted(
        m.group(1) for p in archive.iterdir() if p.is_dir() and (m := _PART.match(p.name))
    )


def _attach_live(
    con: duckdb.DuckDBPyConnection, db: str | None, connect: str | None, token: str | None
) -> bool:
    path = Path(db).expanduser() if db else default_db_path()
    endpoint = None
    if connect:
        endpoint = connect if connect.startswith("quack:") else f"quack:{connect}"
    else:
        info = read_daemon_info(path)
        if info is not None:
            endpoint, token = info.endpoint, token or info.token
    try:
        if endpoint:
            if token is None:
                raise quack.QuackError(f"{endpoint}: no token (pass --token or set FLEETTUI_TOKEN)")
            quack.parse_endpoint(endpoint)
            quack.load_extensions(con)
            con.execute(f"ATTACH {_lit(endpoint)} AS live (TYPE quack, TOKEN {_lit(token)})")
            return True
        if not path.exists():
            return False  # the archive alone
        con.execute(f"ATTACH {_lit(str(path))} AS live (READ_ONLY)")
        return True
    except duckdb.Error as exc:
        raise StoreError(
            f"{endpoint or path}: cannot attach the live store: {str(exc).splitlines()[0]}"
        ) from exc


def _time_col(cols: list[str]) -> str | None:
    return "ts" if "ts" in cols else "bucket" if "bucket" in cols else None


def open_archive(
    archive: Path, db: str | None, connect: str | None, token: str | None
) -> LocalReader:
    con = duckdb.connect()
    try:
        has_live = _attach_live(con, db, connect, token)
        live: dict[str, list[str]] = {}
        if has_live:
            for name, cols in con.execute(
                "SELECT table_name, list(column_name ORDER BY column_index) FROM duckdb_columns()"
                " WHERE database_name = 'live' AND schema_name = 'main' GROUP BY table_name"
            ).fetchall():
                live[name] = cols
        archived = archive_tables(archive)
        for name in sorted(set(live) | set(archived)):
            files = _lit(str(archive / f"table={name}" / "*" / "*.parquet"))
            scan = f"read_parquet({files}, hive_partitioning = true, union_by_name = true)"
            if name in SNAPSHOT_TABLES:
                if name in live:
                    con.execute(f"CREATE TABLE {name} AS SELECT * FROM live.{name}")
                else:
                    con.execute(
                        f'CREATE VIEW {name} AS SELECT * EXCLUDE ("table", day) FROM {scan}'
                        f" WHERE day = (SELECT max(day) FROM {scan})"
                    )
                continue
            if name not in archived:
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM live.{name}")
                continue
            old = f'SELECT * EXCLUDE ("table", day) FROM {scan}'
            if name not in live:
                con.execute(f"CREATE VIEW {name} AS {old}")
                continue
            col = _time_col(live[name])
            if col is None:
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM live.{name}")
                continue
            first = con.execute(f"SELECT min({col}) FROM live.{name}").fetchone()[0]
            cut = f" WHERE {col} < TIMESTAMP {_lit(str(first))}" if first is not None else ""
            con.execute(
                f"CREATE VIEW {name} AS {old}{cut} UNION ALL BY NAME SELECT * FROM live.{name}"
            )
    except duckdb.Error as exc:
        con.close()
        raise StoreError(f"{archive}: cannot read the archive: {str(exc).splitlines()[0]}") from exc
    except BaseException:
        con.close()
        raise
    return LocalReader(con, f"{archive} + live store" if has_live else str(archive), owns=True)
