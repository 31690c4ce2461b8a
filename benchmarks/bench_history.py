"""Bytes per value at each resolution, rollup cost, and what a fleet needs per day and year.

Fills a store with `--hours` of the simulated fleet at `--scale` every
`--step-s` seconds (1 s: the 1 Hz the capacity figures assume), rolls it up,
then measures each table's on-disk size in a database file of its own (small
tables are replicated, under other keys, to 250,000 rows so that DuckDB's
256 KiB block granularity does not matter; replicated figures are marked, as
the suffixed keys make them a little pessimistic). A "value" is one metric
of one key at one time: a raw cell, or one metric's aggregate set in a rollup
row (min/max/sum/count/last...).

`--prometheus N` also writes the first N GPUs' gpu_samples metrics as
OpenMetrics, builds real Prometheus TSDB blocks from them with `promtool tsdb
create-blocks-from openmetrics` (Prometheus' own block writer), and reports
bytes per sample beside DuckDB's bytes per value for the same rows.

    python benchmarks/bench_history.py --scale 1 --hours 2 --prometheus 32
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


def promtool_bytes(
    src: duckdb.DuckDBPyConnection, gpus: int, workdir: Path, metrics: list[str]
) -> tuple[float, int] | None:
    """Bytes per sample of real Prometheus TSDB blocks holding the first `gpus` GPUs."""
    tool = shutil.which("promtool")
    if tool is None:
        return None
    om = workdir / "samples.om"
    n = 0
    with om.open("w") as f:
        for m in metrics:
            f.write(f"# TYPE fleet_{m} gauge\n")
            rows = src.execute(
                f"SELECT host, gpu_uuid, {m}, epoch_ms(ts) FROM gpu_samples WHERE gpu_uuid IN"
                f" (SELECT gpu_uuid FROM gpus ORDER BY gpu_uuid LIMIT {gpus}) AND {m} IS NOT NULL"
                " ORDER BY gpu_uuid, ts"
            ).fetchall()
            f.writelines(
                f'fleet_{m}{{host="{h}",gpu="{g}"}} {float(v)!r} {ms / 1000:.3f}\n'
                for h, g, v, ms in rows
            )
            n += len(rows)
        f.write("# EOF\n")
    out = workdir / "tsdb"
    subprocess.run(
        [tool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(out)],
        check=True,
        capture_output=True,
    )
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return size / n, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--step-s", type=float, default=1.0)
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
        print("\n| table | resolution | rows | values/row | bytes/row | bytes/value |")
        print("| --- | --- | --- | --- | --- | --- |")
        per_day = {"raw": 0.0, "1m": 0.0, "1h": 0.0}
        raw_bpv = {}
        for spec in SPECS.values():
            values = len(spec.metrics)
            key = spec.keys[0] if spec.table != "link_samples" else "port"
            for tier in ("raw", *TIERS):
                rel = spec.table if tier == "raw" else rollup_table(spec.table, tier)
                rows = con.execute(f"SELECT count(*) FROM {rel}").fetchone()[0]
                bpr, measured = table_bytes(con, rel, key, work)
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
                    keys = con.execute(
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
            metrics = [c for c, _ in SPECS["gpu_samples"].metrics]
            where = (
                f"WHERE gpu_uuid IN (SELECT gpu_uuid FROM gpus ORDER BY gpu_uuid"
                f" LIMIT {args.prometheus})"
            )
            bpr, measured = table_bytes(con, "gpu_samples", "gpu_uuid", work, where, min_rows=0)
            rows = con.execute(f"SELECT count(*) FROM gpu_samples {where}").fetchone()[0]
            nonnull = con.execute(
                f"SELECT {' + '.join(f'count({m})' for m in metrics)} FROM gpu_samples {where}"
            ).fetchone()[0]
            prom = promtool_bytes(con, args.prometheus, work, metrics)
            duck = bpr * rows / nonnull
            print(
                f"\nsame {args.prometheus} GPUs' gpu_samples, {nonnull:,} non-NULL values: "
                f"DuckDB raw {duck:.2f} bytes/value (whole row incl. keys and source"
                f"{', replicated' if measured > rows else ''})",
                end="",
            )
            if prom is None:
                print("; promtool not found: Prometheus not measured")
            else:
                print(
                    f"; Prometheus TSDB (promtool create-blocks-from) {prom[0]:.2f} bytes/sample "
                    f"over {prom[1]:,} samples"
                )
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
