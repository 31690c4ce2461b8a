"""`fleettui export`: the store as hive-partitioned Parquet, one file per table and day.

    DIR/table=gpu_samples/day=2026-11-02/part-0.parquet

Rows are read with ordinary read-only queries (through the running daemon
over Quack, or from the database file when no daemon holds it), about
`--chunk-rows` at a time, and written by pyarrow here: the daemon never writes
files for a client. Time-series tables (a `ts` column, or `bucket` for rollups) are cut
into whole UTC days; `--since`/`--until` are widened to whole days, and a day
exported again replaces its file (written beside it, then renamed), so
exporting is idempotent. Tables without a time column (hosts, gpus, ...) are
written whole as a snapshot under the day of the export.

DuckDB (`read_parquet('DIR/table=gpu_samples/*/*.parquet', hive_partitioning
= true)`), pyarrow.dataset, pandas, Polars and Spark read the tree as is;
`fleettui sql --archive DIR` queries it together with the live store.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage.keyed import KEYED
from storage.reader import Reader

_NAME = re.compile(r"^[a-z][a-z0-9_]*\Z")
# Written whole, as a snapshot: the fleet's inventory and the alert history.
SNAPSHOT_TABLES = (
    "hosts",
    "gpus",
    "slices",
    "tenants",
    "assignments",
    "endpoints",
    "host_status",
    "alerts",
    "silences",
)


# Views exported as the tables they replaced, and the base tables behind them: the
# archive keeps one `processes` table (migration 0018 split it in two in the store).
VIEW_TABLES = {k.view: (k.dim, k.rows) for k in KEYED.values()}


class ExportError(ValueError):
    """Bad export arguments or an unwritable output; one line."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the store as hive-partitioned Parquet (table=/day=)",
        description="Write the stored telemetry to DIR/table=<name>/day=<YYYY-MM-DD>/part-0.parquet, "
        "through the running daemon when there is one, else from the database file (read-only). "
        "Whole UTC days; a day exported again is replaced.",
        epilog="example: fleettui export --out archive --since 2026-11-01 --tables gpu_samples_1m",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--db",
        metavar="FILE",
        help="database file (default: $FLEETTUI_DB or ~/.local/share/fleettui/fleet.duckdb)",
    )
    where.add_argument("--connect", metavar="quack:HOST:PORT", help="a daemon's Quack endpoint")
    p.add_argument("--token", help="access token for --connect (default: $FLEETTUI_TOKEN)")
    p.add_argument("--out", required=True, metavar="DIR", help="archive directory (created)")
    p.add_argument(
        "--since",
        metavar="DATE",
        help="first day (YYYY-MM-DD or ISO time; default: the oldest row)",
    )
    p.add_argument(
        "--until", metavar="DATE", help="end, exclusive, widened to a whole day (default: now)"
    )
    p.add_argument("--tables", metavar="A,B", help="tables to export (default: every table)")
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=1_000_000,
        metavar="N",
        help="read about N rows per query (default 1,000,000)",
    )
    p.set_defaults(func=main)


def parse_when(text: str, what: str) -> datetime:
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time())
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"{what} {text!r}: expected YYYY-MM-DD or an ISO time") from None
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


@dataclass(frozen=True)
class TableInfo:
    name: str
    time_col: str | None  # None: a snapshot table


def store_tables(reader: Reader) -> list[TableInfo]:
    """Base tables of the store (not views, but for `VIEW_TABLES`) with their time column."""
    _, rows = reader.rows(
        "SELECT t.table_name, list(c.column_name) FROM duckdb_tables() t"
        " JOIN duckdb_columns() c ON c.table_oid = t.table_oid"
        " WHERE t.schema_name = 'main' AND t.database_name = current_database()"
        " GROUP BY t.table_name"
        " UNION ALL SELECT v.view_name, list(c.column_name) FROM duckdb_views() v"
        " JOIN duckdb_columns() c ON c.table_oid = v.view_oid"
        " WHERE v.schema_name = 'main' AND v.database_name = current_database()"
        f" AND v.view_name IN ({', '.join(repr(v) for v in VIEW_TABLES)})"
        " GROUP BY v.view_name ORDER BY 1"
    )
    behind = {t for parts in VIEW_TABLES.values() for t in parts}
    out = []
    for name, cols in rows:
        if name == "schema_version" or name in behind:
            continue
        col = "ts" if "ts" in cols else "bucket" if "bucket" in cols else None
        if col is None and name not in SNAPSHOT_TABLES:
            continue  # bookkeeping (rollup_state)
        out.append(TableInfo(name, col))
    return out


class Progress:
    """A bar on a terminal; plain lines otherwise (logs, CI)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = max(1, total), 0, stream
        self.tty = stream.isatty()
        self._last = 0.0

    def step(self, label: str) -> None:
        self.done += 1
        if self.tty and (time.monotonic() - self._last > 0.1 or self.done == self.total):
            self._last = time.monotonic()
            width = 30
            filled = int(width * self.done / self.total)
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] "
                f"{100 * self.done // self.total:3d}% {label:<48.48}"
            )
            self.stream.flush()

    def line(self, text: str) -> None:
        if not self.tty:
            print(f"fleettui export: {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _write_atomic(path: Path, tables: list[pa.Table]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    schema = tables[0].schema
    with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
        for t in tables:
            w.write_table(t.cast(schema))
    os.replace(tmp, path)


def export(
    reader: Reader,
    out: Path,
    *,
    since: datetime | None,
    until: datetime,
    tables: list[str] | None,
    chunk_rows: int = 1_000_000,
    stream=sys.stderr,
) -> dict[str, int]:
    """Export; returns rows written per table."""
    known = {t.name: t for t in store_tables(reader)}
    if tables:
        unknown = [t for t in tables if t not in known]
        if unknown:
            raise ExportError(
                f"--tables: no table {unknown[0]!r} in the store "
                f"(known: {', '.join(sorted(known))})"
            )
        infos = [known[t] for t in tables]
    else:
        infos = list(known.values())
    end_day = datetime.combine(
        (until - timedelta(microseconds=1)).date(), datetime.min.time()
    ) + timedelta(days=1)
    # one query per table counts rows per day; each day is read in equal time
    # chunks of about `chunk_rows` rows, and days without rows are skipped
    plans: list[tuple[TableInfo, datetime, int]] = []
    for info in infos:
        if info.time_col is None:
            continue
        col = info.time_col
        lo = since or datetime(1, 1, 1)
        _, rows = reader.rows(
            f"SELECT date_trunc('day', {col})::TIMESTAMP AS day, count(*) FROM {info.name}"
            f" WHERE {col} >= ? AND {col} < ? GROUP BY ALL ORDER BY day",
            [datetime.combine(lo.date(), datetime.min.time()), end_day],
        )
        plans += [(info, day, max(1, math.ceil(n / chunk_rows))) for day, n in rows]
    snapshots = [i for i in infos if i.time_col is None]
    progress = Progress(sum(p[2] for p in plans) + len(snapshots), stream)
    written: dict[str, int] = {}
    try:
        for info, day, chunks in plans:
            parts = []
            step = timedelta(days=1) / chunks
            for i in range(chunks):
                t, hi = day + i * step, day + (i + 1) * step
                part = reader.arrow(
                    f"SELECT * FROM {info.name} WHERE {info.time_col} >= ? AND {info.time_col} < ?"
                    f" ORDER BY {info.time_col}",
                    [t, hi],
                )
                if part.num_rows:
                    parts.append(part)
                progress.step(f"{info.name} {day.date()}")
            if parts:
                rows = sum(p.num_rows for p in parts)
                _write_atomic(
                    out / f"table={info.name}" / f"day={day.date()}" / "part-0.parquet", parts
                )
                written[info.name] = written.get(info.name, 0) + rows
                progress.line(f"{info.name} day={day.date()}: {rows:,} rows")
        today = datetime.now(UTC).date()
        for info in snapshots:
            snap = reader.arrow(f"SELECT * FROM {info.name}")
            progress.step(info.name)
            if snap.num_rows:
                _write_atomic(
                    out / f"table={info.name}" / f"day={today}" / "part-0.parquet", [snap]
                )
                written[info.name] = snap.num_rows
                progress.line(f"{info.name} (snapshot): {snap.num_rows:,} rows")
    finally:
        progress.close()
    return written


def main(args: argparse.Namespace) -> int:
    from fleettui.sql_cli import open_reader

    if args.chunk_rows <= 0:
        raise ExportError("--chunk-rows must be > 0")
    since = parse_when(args.since, "--since") if args.since else None
    until = (
        parse_when(args.until, "--until") if args.until else datetime.now(UTC).replace(tzinfo=None)
    )
    if since and since >= until:
        raise ExportError("--since must be before --until")
    tables = [t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else None
    for t in tables or ():
        if not _NAME.match(t):
            raise ExportError(f"--tables: {t!r} is not a table name")
    out = Path(args.out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out}: cannot create: {exc.strerror}") from None
    token = args.token or os.environ.get("FLEETTUI_TOKEN")
    reader = open_reader(args.db, args.connect, token)
    try:
        t0 = time.monotonic()
        written = export(
            reader, out, since=since, until=until, tables=tables, chunk_rows=args.chunk_rows
        )
    finally:
        reader.close()
    total = sum(written.values())
    size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    print(
        f"exported {total:,} rows of {len(written)} tables to {out} "
        f"({size / 1e6:.1f} MB of Parquet in the archive) in {time.monotonic() - t0:.1f} s"
    )
    return 0
