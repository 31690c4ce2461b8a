"""Ingest throughput of the store's batch writer on the simulated fleet.

Pre-generates `--ticks` ticks of the simulated fleet at `--scale` (33 -> 10,032
GPUs), then writes the same batches twice, alternating, into fresh database
files: once through `Store.write` (one transaction per tick, dimension merges,
type checks) and once as a plain DuckDB Arrow insert (`INSERT INTO t SELECT *
FROM arrow`, one transaction per tick) into the same columns without keys. Prints rows/s for
both and their ratio, measured in the same run.

    python benchmarks/bench_ingest.py --scale 33 --ticks 60
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from collectors.sim.source import SimSource
from storage.batch import concat_batches
from storage.columns import TABLE_COLUMNS
from storage.store import Store


def generate(scale: int, ticks: int):
    src = SimSource(scale=scale)
    t0 = datetime(2026, 11, 26, 12, 0, 0)
    first = src.sample(t0).batches  # the inventory (written before timing)
    ticks_batches = [src.sample(t0 + timedelta(seconds=i + 1)).batches for i in range(ticks)]
    return src, first, ticks_batches


def bench_store(path: Path, first, ticks) -> float:
    store = Store.open(path)
    store.write(first)
    t = time.perf_counter()
    for batches in ticks:
        store.write(batches)
    elapsed = time.perf_counter() - t
    store.close()
    return elapsed


def bench_plain(path: Path, first, ticks) -> float:
    con = duckdb.connect(str(path))
    # Same columns and types, no keys or checks: the raw Arrow-append ceiling.
    for table, cols in TABLE_COLUMNS.items():
        empty = pa.schema([pa.field(c, t) for c, t in cols.items()]).empty_table()
        con.register("e", empty)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM e")
    prepared = [concat_batches(b) for b in [first, *ticks]]
    for b in prepared[0]:
        con.register("b", b.data)
        con.execute(f"INSERT INTO {b.table} BY NAME SELECT * FROM b")
    t = time.perf_counter()
    for batches in prepared[1:]:
        con.execute("BEGIN")
        for b in batches:
            con.register("b", b.data)
            con.execute(f"INSERT INTO {b.table} BY NAME SELECT * FROM b")
        con.execute("COMMIT")
    elapsed = time.perf_counter() - t
    con.execute("CHECKPOINT")
    con.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=33)
    ap.add_argument("--ticks", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    t = time.perf_counter()
    src, first, ticks = generate(args.scale, args.ticks)
    gen_s = time.perf_counter() - t
    rows = sum(b.rows for batches in ticks for b in batches)
    values = sum(b.rows * b.data.num_columns for batches in ticks for b in batches)
    print(
        f"fleet: {src.model.fleet.n_gpus:,} GPUs, {len(src.model.fleet.slice_id):,} slices, "
        f"{src.model.fleet.n_hosts:,} hosts; {args.ticks} ticks = {rows:,} rows "
        f"({values:,} values); generated in {gen_s:.2f} s "
        f"({gen_s / args.ticks * 1000:.1f} ms/tick)"
    )
    results: dict[str, list[float]] = {"store": [], "plain": []}
    tmp = Path(tempfile.mkdtemp(prefix="fleettui-bench-"))
    try:
        for r in range(args.rounds):
            for name, fn in (("store", bench_store), ("plain", bench_plain)):
                results[name].append(fn(tmp / f"{name}{r}.duckdb", first, ticks))
    finally:
        shutil.rmtree(tmp)
    best = {k: min(v) for k, v in results.items()}
    print(f"{'writer':<28}{'best s':>8}{'rows/s':>14}{'values/s':>14}")
    for name, label in (
        ("store", "Store.write (batch writer)"),
        ("plain", "plain DuckDB Arrow insert"),
    ):
        print(
            f"{label:<28}{best[name]:>8.2f}{rows / best[name]:>14,.0f}{values / best[name]:>14,.0f}"
        )
    print(f"ratio store/plain throughput: {best['plain'] / best['store']:.2f}")


if __name__ == "__main__":
    main()
