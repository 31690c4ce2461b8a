"""Bytes per value at each resolution, rollup cost, and what a fleet needs per day and year.

Fills a store with `--hours` of the simulated fleet at `--scale` every
`--step-s` seconds (1 s: the 1 Hz the capacity figures assume), rolls it up,
then measures each table's on-disk size in a database file of its own (small
tables are replicated, under other keys, to 250,000 rows so that DuckDB's
256 KiB block granularity does not matter; replicated figures are marked, as
the suffixed keys make them a little pessimistic). A "value" is one metric
of one key at one time: a raw cell, or one metric's aggregate set in a rollup
row (min/max/sum/count/last...).

`--week-step-s S` also fills a second store with a simulated week sampled
every S seconds and rolls it up, so the 1-hour figures rest on 168 buckets per
key rather than on the few of a short run (its 1-minute tier, one sample per
bucket at S = 60, is not used).

`--prometheus N` also writes the same values as OpenMetrics and builds real
Prometheus TSDB blocks from them with `promtool tsdb create-blocks-from
openmetrics` (Prometheus' own block writer), at each resolution: the first N
GPUs' raw gpu_samples metrics, and every numeric cell of gpu_samples_1m and
_1h (each aggregate column a series, as recording rules would store them). It
reports bytes per sample beside DuckDB's bytes per cell for the same cells,
both whole (Prometheus: blocks with index and metadata; DuckDB: the rows in a
file of their own with keys and timestamps) and Prometheus' chunk files alone.
promtool 2.42 cuts blocks at 2 h, so an hourly series holds two samples per
block and its index weighs on it; a server would compact them.

    python benchmarks/bench_history.py --scale 1 --hours 1 --week-step-s 60 --prometheus 32
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from collectors.sim.source import SimSource
from storage.rollups import SPECS, TIERS, RollupOptions, roll_tier, rollup_table
from storage.store import Store

START = datetime(2026, 11, 2, 0, 0, 0)
MIN_ROWS = 250_000  # replicate smaller tables up to this (block granularity is 256 KiB)


def fill(store: Store, scale: int, hours: float, step_s: float) -> tuple[int, float]:
    src = SimSource(scale=scale, start=START)
    n = int(hours * 3600 / step_s)
    t0 = time.perf_counter()
    for k in range(n):
        store.write(src.sample(START + timedelta(seconds=k * step_s)).batches)
    gpus = store.con.execute("SELECT count(*) FROM gpus").fetchone()[0]
    return gpus, time.perf_counter() - t0


def roll_all(store: Store, now: datetime, span_h: float) -> float:
    t0 = time.perf_counter()
    with store.writer() as cur:
        for spec in SPECS.values():
            for tier in TIERS:
                roll_tier(cur, spec, tier, now, RollupOptions(max_span_h=span_h))
    return time.perf_counter() - t0


def table_bytes(
    src: duckdb.DuckDBPyConnection,
    relation: str,
    key: str,
    workdir: Path,
    where: str = "",
    min_rows: int = MIN_ROWS,
) -> tuple[float, int]:
    """(bytes per row on disk, rows) of `relation`, measured in a file of its own."""
    rows = src.execute(f"SELECT count(*) FROM {relation} {where}").fetchone()[0]
    if rows == 0:
        return math.nan, 0
    probe = workdir / "probe.duckdb"
    empty = workdir / "empty.duckdb"
    for p in (probe, empty):
        p.unlink(missing_ok=True)
    src.execute(f"ATTACH '{empty}' AS e")
    src.execute(f"CREATE TABLE e.t AS SELECT * FROM {relation} LIMIT 0")
    src.execute("DETACH e")
    src.execute(f"ATTACH '{probe}' AS p")
    src.execute(f"CREATE TABLE p.t AS SELECT * FROM {relation} {where}")
    src.execute("CHECKPOINT p")
    copies = max(1, min(4096, math.ceil(min_rows / rows)))
    if copies > 1:
        # the same rows again, copy after copy in their own order, under other keys:
        # they compress like the original (copies of one row side by side would
        # compress to almost nothing and flatter the figure)
        src.execute(
            f"INSERT INTO p.t SELECT s.* EXCLUDE (_n) REPLACE ({key} || '~' || k AS {key})"
            f" FROM (SELECT *, row_number() OVER () AS _n FROM {relation} {where}) s,"
            f" range(1, {copies}) r(k) ORDER BY k, s._n"
        )
        src.execute("CHECKPOINT p")
    src.execute("DETACH p")
    return (probe.stat().st_size - empty.stat().st_size) / (rows * copies), rows * copies


_NUMERIC = ("DOUBLE", "FLOAT", "BIGINT", "INTEGER", "BOOLEAN", "HUGEINT", "DECIMAL(38,6)")


def numeric_columns(
    src: duckdb.DuckDBPyConnection, relation: str, skip: tuple[str, ...]
) -> list[str]:
    return [
        r[0]
        for r in src.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?"
            " ORDER BY column_index",
            [relation],
        ).fetchall()
        if r[1] in _NUMERIC and r[0] not in skip
    ]


def _series_name(relation: str, col: str) -> str:
    # OpenMetrics reserves _count/_sum/_total suffixes for other types
    for suffix, repl in (("_count", "_n"), ("_sum", "_s"), ("_total", "_tot")):
        if col.endswith(suffix):
            col = col[: -len(suffix)] + repl
    return f"fleet_{relation}_{col}"


def promtool_bytes(
    src: duckdb.DuckDBPyConnection,
    relation: str,
    time_col: str,
    keys: tuple[str, ...],
    metrics: list[str],
    where: str,
    workdir: Path,
) -> tuple[float, float, int] | None:
    """(bytes per sample of whole TSDB blocks, of their chunk files alone, samples) for
    `metrics` of `relation` (`where` selects the rows), each column a series per key."""
    tool = shutil.which("promtool")
    if tool is None:
        return None
    om = workdir / "samples.om"
    n = 0
    with om.open("w") as f:
        for m in metrics:
            f.write(f"# TYPE {_series_name(relation, m)} gauge\n")
            rows = src.execute(
                f"SELECT {', '.join(keys)}, {m}::DOUBLE, epoch_ms({time_col}) FROM {relation}"
                f" {where} {'AND' if where else 'WHERE'} {m} IS NOT NULL"
                f" ORDER BY {', '.join(keys)}, {time_col}"
            ).fetchall()
            name = _series_name(relation, m)
            for r in rows:
                labels = ",".join(f'{k}="{v}"' for k, v in zip(keys, r[:-2], strict=True))
                f.write(f"{name}{{{labels}}} {r[-2]!r} {r[-1] / 1000:.3f}\n")
            n += len(rows)
        f.write("# EOF\n")
    out = workdir / "tsdb"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(
        [tool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(out)],
        check=True,
        capture_output=True,
    )
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    chunks = sum(p.stat().st_size for p in files if p.parent.name == "chunks")
    om.unlink()
    return size / n, chunks / n, n


def against_prometheus(
    con: duckdb.DuckDBPyConnection, relation: str, time_col: str, where: str, work: Path
) -> None:
    """DuckDB bytes per cell and Prometheus bytes per sample for the same cells."""
    keys = ("host", "gpu_uuid")
    metrics = numeric_columns(con, relation, keys)
    rows = con.execute(f"SELECT count(*) FROM {relation} {where}").fetchone()[0]
    if rows == 0:
        return
    cells = con.execute(
        f"SELECT {' + '.join(f'count({m})' for m in metrics)} FROM {relation} {where}"
    ).fetchone()[0]
    bpr, _ = table_bytes(con, relation, "gpu_uuid", work, where, min_rows=0)
    prom = promtool_bytes(con, relation, time_col, keys, metrics, where, work)
    duck = bpr * rows / cells
    if prom is None:
        print(f"| {relation} | {rows:,} | {cells:,} | {duck:.2f} | promtool not found | |")
        return
    print(
        f"| {relation} | {rows:,} | {cells:,} | {duck:.2f} | {prom[0]:.2f} | {prom[1]:.2f} |",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--step-s", type=float, default=1.0)
    ap.add_argument(
        "--week-step-s",
        type=float,
        default=0.0,
        metavar="S",
        help="also fill a simulated week every S seconds for the 1-hour tier",
    )
    ap.add_argument(
        "--prometheus",
        type=int,
        default=0,
        metavar="N",
        help="also measure Prometheus TSDB blocks of the first N GPUs",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_history_"))
    try:
        store = Store.open(work / "fleet.duckdb")
        gpus, fill_s = fill(store, args.scale, args.hours, args.step_s)
        end = START + timedelta(hours=args.hours)
        raw_rows = sum(store.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in SPECS)
        print(
            f"simulated {gpus:,} GPUs for {args.hours:g} h every {args.step_s:g} s: "
            f"{raw_rows:,} raw sample rows in {fill_s:.1f} s"
        )
        # the rollups as the daemon meets them: everything closed up to a minute ago ...
        bulk_s = roll_all(store, end - timedelta(minutes=1), args.hours + 1)
        # ... then one 30-s tick that closes one more minute (the steady-state cost)
        tick_s = roll_all(store, end + timedelta(seconds=29), args.hours + 1)
        rest_s = roll_all(store, end + timedelta(hours=2), args.hours + 1)
        print(
            f"rollups: bulk {raw_rows / bulk_s:,.0f} raw rows/s; one steady-state tick "
            f"(10 tier steps, 1 closed minute, late-row check over 15 min) {tick_s * 1e3:.0f} ms; "
            f"closing the rest {rest_s:.1f} s"
        )
        con = store.con
        week = None
        if args.week_step_s:
            week = Store.open(work / "week.duckdb")
            _, wfill_s = fill(week, args.scale, 24 * 7, args.week_step_s)
            wroll_s = roll_all(week, START + timedelta(days=7, hours=2), 24 * 7 + 2)
            print(
                f"a simulated week every {args.week_step_s:g} s for the 1-hour tier: "
                f"filled in {wfill_s:.0f} s, rolled up in {wroll_s:.0f} s"
            )
        hour_con = week.con if week is not None else con
        print("\n| table | resolution | rows | values/row | bytes/row | bytes/value |")
        print("| --- | --- | --- | --- | --- | --- |")
        per_day = {"raw": 0.0, "1m": 0.0, "1h": 0.0}
        raw_bpv = {}
        for spec in SPECS.values():
            values = len(spec.metrics)
            key = spec.keys[0] if spec.table != "link_samples" else "port"
            for tier in ("raw", *TIERS):
                rel = spec.table if tier == "raw" else rollup_table(spec.table, tier)
                tcon = hour_con if tier == "1h" else con
                rows = tcon.execute(f"SELECT count(*) FROM {rel}").fetchone()[0]
                bpr, measured = table_bytes(tcon, rel, key, work)
                if rows == 0:
                    continue
                note = f" (x{measured // rows} replicated)" if measured > rows else ""
                print(
                    f"| {spec.table} | {tier} | {rows:,}{note} | {values} | {bpr:,.1f} | "
                    f"{bpr / values:.2f} |"
                )
                if tier == "raw":
                    raw_bpv[spec.table] = bpr / values
                    per_day["raw"] += bpr * rows * 24 / args.hours * args.step_s
                else:
                    keys = tcon.execute(
                        f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(spec.keys)} FROM {rel})"
                    ).fetchone()[0]
                    per_day[tier] += bpr * keys * 86400 / TIERS[tier].total_seconds()
        g = {t: v / gpus for t, v in per_day.items()}  # bytes per GPU-day, all sample tables
        print(
            f"\nper GPU and day at 1 Hz (every sample table of the simulated fleet's mix):"
            f" raw {g['raw'] / 1e6:.2f} MB, 1m {g['1m'] / 1e6:.3f} MB, 1h {g['1h'] / 1e3:.1f} kB"
        )
        keep = {"raw": 2, "1m": 30, "1h": 730}
        print(
            "\n| GPUs | written per day | written per year | stored at default retention "
            "(raw 48 h, 1m 30 d, 1h 730 d) |"
        )
        print("| --- | --- | --- | --- |")
        for n in (1_000, 10_000, 100_000):
            day = sum(g.values()) * n
            stored = sum(g[t] * keep[t] for t in g) * n
            print(
                f"| {n:,} | {day / 1e9:,.1f} GB | {day * 365 / 1e12:,.1f} TB | "
                f"{stored / 1e9:,.0f} GB |"
            )
        if args.prometheus:
            first = (
                "WHERE gpu_uuid IN (SELECT gpu_uuid FROM gpus ORDER BY gpu_uuid"
                f" LIMIT {args.prometheus})"
            )
            print(
                f"\nthe same cells in DuckDB and in Prometheus TSDB blocks (promtool 2.42 "
                f"create-blocks-from openmetrics); raw: the first {args.prometheus} GPUs, "
                "rollups: every GPU"
            )
            print(
                "\n| relation | rows | numeric cells | DuckDB bytes/cell | "
                "Prometheus bytes/sample | Prometheus chunks only |"
            )
            print("| --- | --- | --- | --- | --- | --- |")
            against_prometheus(con, "gpu_samples", "ts", first, work)
            against_prometheus(con, "gpu_samples_1m", "bucket", "", work)
            against_prometheus(hour_con, "gpu_samples_1h", "bucket", "", work)
        if week is not None:
            week.close()
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
