"""Rollups: maintained incrementally, equal to a recomputation from raw rows."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from storage.batch import Batch
from storage.migrate import migrations
from storage.rollups import (
    SPECS,
    TIERS,
    RollupOptions,
    RollupTask,
    TierRetention,
    ddl,
    from_raw_sql,
    roll_tier,
    rollup_columns,
    rollup_table,
)
from storage.store import Store
from tests.rollup_data import sample_rows

START = datetime(2026, 11, 2, 0, 0, 7)
# interval_s and keys per table: gpu samples every 15 s, the rest coarser
SHAPE = {"gpu_samples": (15.0, 12), "slice_samples": (30.0, 8), "link_samples": (30.0, 8),
         "latency_samples": (60.0, 4), "gpu_mem_samples": (60.0, 12)}


def test_migration_is_the_generated_ddl():
    sql = {name: text for _, name, text in migrations()}["0012_rollups.sql"]
    assert sql == ddl()


def test_rollup_tables_have_the_spec_columns():
    store = Store.open(":memory:")
    for spec in SPECS.values():
        for tier in TIERS:
            got = store.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
                " ORDER BY ordinal_position", [rollup_table(spec.table, tier)]).fetchall()
            assert [c for (c,) in got] == [n for n, _ in rollup_columns(spec)]


def _arrivals(table: pa.Table, rng: np.random.Generator, late_frac: float,
              max_delay_s: float) -> np.ndarray:
    """Arrival time (epoch µs) of each row: its ts, or later for a late fraction."""
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    late = rng.random(len(ts)) < late_frac
    delay = (rng.random(len(ts)) * max_delay_s * 1e6).astype(np.int64)
    return np.where(late, ts + delay, ts), late


def _equal(con, inc: str, recomputed: str) -> tuple[int, int, int]:
    """Rows only in inc, only in recomputed, and in inc."""
    a = con.execute(f"SELECT count(*) FROM (({inc}) EXCEPT ALL ({recomputed}))").fetchone()[0]
    b = con.execute(f"SELECT count(*) FROM (({recomputed}) EXCEPT ALL ({inc}))").fetchone()[0]
    n = con.execute(f"SELECT count(*) FROM ({inc})").fetchone()[0]
    return a, b, n


def test_a_week_of_incremental_rollups_equals_recomputation(capsys):
    """A simulated week arrives hour by hour (2 % of rows up to 50 min late, ticks at
    odd seconds); the rollups maintained tick by tick equal both tiers recomputed
    from raw rows in one go, value for value (DECIMAL sums, doubles, p95, last)."""
    hours = 7 * 24
    rng = np.random.default_rng(14)
    store = Store.open(":memory:")
    data, arrive, late_rows = {}, {}, 0
    for i, (table, (interval_s, keys)) in enumerate(SHAPE.items()):
        data[table] = sample_rows(table, START, hours, interval_s, keys, seed=100 + i)
        arrive[table], late = _arrivals(data[table], rng, 0.02, 50 * 60)
        late_rows += int(late.sum())
    opts = RollupOptions(grace_s=30.0, late_s=5400.0)
    epoch = datetime(1970, 1, 1)
    t0 = time.perf_counter()
    ticks = 0
    written_before = 0
    for h in range(1, hours + 3):
        now = START + timedelta(hours=h, seconds=int(rng.integers(0, 3600)))
        lo_us = ((START if h == 1 else prev_now) - epoch) // timedelta(microseconds=1)
        hi_us = (now - epoch) // timedelta(microseconds=1)
        batches = []
        for table, t in data.items():
            a = arrive[table]
            mask = (a >= lo_us) & (a < hi_us) if h > 1 else (a < hi_us)
            if mask.any():
                batches.append(Batch(table, t.filter(pa.array(mask))))
        store.write(batches)
        with store.writer() as cur:
            for spec in SPECS.values():
                for tier in TIERS:
                    written_before += roll_tier(cur, spec, tier, now, opts)
        ticks += 1
        prev_now = now
    elapsed = time.perf_counter() - t0
    con = store.con
    report = []
    for spec in SPECS.values():
        raw = con.execute(f"SELECT count(*) FROM {spec.table}").fetchone()[0]
        assert raw == len(data[spec.table])  # every row arrived
        names = ", ".join(n for n, _ in rollup_columns(spec))
        lo = con.execute(f"SELECT date_trunc('minute', min(ts)) FROM {spec.table}").fetchone()[0]
        for tier in TIERS:
            name = rollup_table(spec.table, tier)
            wm = con.execute("SELECT done_until FROM rollup_state WHERE rollup = ?",
                             [name]).fetchone()[0]
            # everything is closed at the last tick: the week is fully rolled up
            assert wm >= START + timedelta(hours=hours) - TIERS[tier]
            lo_t = lo if tier == "1m" else lo.replace(minute=0)
            rec = con.execute(f"SELECT {names} FROM ({from_raw_sql(spec, tier)})",
                              {"lo": lo_t, "hi": wm}).to_arrow_table()
            con.register("_rec", rec)
            only_inc, only_rec, n = _equal(
                con, f"SELECT {names} FROM {name}", f"SELECT {names} FROM _rec")
            con.unregister("_rec")
            report.append((name, raw, n, only_inc, only_rec))
            assert n > 0 and rec.num_rows == n
            assert (only_inc, only_rec) == (0, 0), (name, only_inc, only_rec)
    with capsys.disabled():
        print(f"\nweek: {ticks} hourly ticks, {late_rows} late rows, rollups built in "
              f"{elapsed:.1f} s")
        for name, raw, n, a, b in report:
            print(f"  {name:22} raw {raw:>8,}  rollup rows {n:>7,}  differing {a}+{b}")
