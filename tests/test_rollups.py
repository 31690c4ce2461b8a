"""Rollups: maintained incrementally, equal to a recomputation from raw rows."""

from __future__ import annotations

import threading
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
    expire_step,
    from_raw_sql,
    live_view,
    roll_tier,
    rollup_columns,
    rollup_table,
)
from storage.store import Store
from tests.rollup_data import sample_rows

START = datetime(2026, 11, 2, 0, 0, 7)
# interval_s and keys per table: gpu samples every 30 s, the rest coarser
SHAPE = {
    "gpu_samples": (30.0, 8),
    "slice_samples": (60.0, 6),
    "link_samples": (60.0, 6),
    "latency_samples": (120.0, 4),
    "gpu_mem_samples": (120.0, 6),
}


def test_migration_is_the_generated_ddl():
    # 0012 created the tables as storage/rollups.py was then; 0015 is generated from today's
    sql = {name: text for _, name, text in migrations()}["0015_rollup_counter_carry.sql"]
    assert sql == ddl()


def test_rollup_tables_and_live_views_have_the_spec_columns():
    store = Store.open(":memory:")
    for spec in SPECS.values():
        for tier in TIERS:
            for name in (rollup_table(spec.table, tier), live_view(spec.table, tier)):
                got = store.con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
                    " ORDER BY ordinal_position",
                    [name],
                ).fetchall()
                assert [c for (c,) in got] == [n for n, _ in rollup_columns(spec)], name


def _arrivals(
    table: pa.Table, rng: np.random.Generator, late_frac: float, max_delay_s: float
) -> np.ndarray:
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


@pytest.mark.timeout(900)  # about a minute alone; a loaded shared machine takes longer
def test_a_week_of_incremental_rollups_equals_recomputation(capsys):
    """A simulated week arrives in 3-hour deliveries at odd seconds (2 % of rows up to
    50 min late), rolled up at each; the rollups equal both tiers recomputed from raw
    rows in one go, value for value (DECIMAL sums, doubles, p95, last, increases)."""
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
    prev_now = START
    for h in range(3, hours + 6, 3):
        now = START + timedelta(hours=h, seconds=int(rng.integers(0, 3600)))
        lo_us = (prev_now - epoch) // timedelta(microseconds=1)
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
            wm = con.execute(
                "SELECT done_until FROM rollup_state WHERE rollup = ?", [name]
            ).fetchone()[0]
            # everything is closed at the last tick: the week is fully rolled up
            assert wm >= START + timedelta(hours=hours) - TIERS[tier]
            lo_t = lo if tier == "1m" else lo.replace(minute=0)
            rec = con.execute(
                f"SELECT {names} FROM ({from_raw_sql(spec, tier)})", {"lo": lo_t, "hi": wm}
            ).to_arrow_table()
            con.register("_rec", rec)
            only_inc, only_rec, n = _equal(
                con, f"SELECT {names} FROM {name}", f"SELECT {names} FROM _rec"
            )
            con.unregister("_rec")
            report.append((name, raw, n, only_inc, only_rec))
            assert n > 0 and rec.num_rows == n
            assert (only_inc, only_rec) == (0, 0), (name, only_inc, only_rec)
    with capsys.disabled():
        print(
            f"\nweek: {ticks} ticks 3 h apart, {late_rows} late rows, rollups built in "
            f"{elapsed:.1f} s"
        )
        for name, raw, n, a, b in report:
            print(f"  {name:22} raw {raw:>8,}  rollup rows {n:>7,}  differing {a}+{b}")


def _gpu_rows(store: Store, rows: list[tuple[datetime, float | None, float | None]]) -> None:
    """(ts, util_pct, energy_j) rows of one GPU."""
    store.write(
        [
            Batch(
                "gpu_samples",
                pa.table(
                    {
                        "ts": pa.array([r[0] for r in rows], pa.timestamp("us")),
                        "host": ["h1"] * len(rows),
                        "gpu_uuid": ["GPU-1"] * len(rows),
                        "util_pct": pa.array([r[1] for r in rows], pa.float64()),
                        "energy_j": pa.array([r[2] for r in rows], pa.float64()),
                    }
                ),
            )
        ]
    )


def _roll(store: Store, now: datetime, opts: RollupOptions | None = None) -> None:
    with store.writer() as cur:
        for tier in TIERS:
            roll_tier(cur, SPECS["gpu_samples"], tier, now, opts or RollupOptions())


def test_gauges_and_counter_increases_by_hand():
    store = Store.open(":memory:")
    m = datetime(2026, 11, 2, 10, 0)
    s = timedelta(seconds=1)
    # energy: 100 -> 150 (+50), NULL, 10 (a reset: +10), 30 (+20); next minute 35 (+5)
    _gpu_rows(
        store,
        [
            (m, 10.0, 100.0),
            (m + 10 * s, 30.0, 150.0),
            (m + 20 * s, None, None),
            (m + 30 * s, 20.0, 10.0),
            (m + 40 * s, 50.0, 30.0),
            (m + 70 * s, 1.25, 35.0),
        ],
    )
    _roll(store, m + timedelta(hours=2))
    got = store.con.execute(
        "SELECT bucket, samples, util_pct_min, util_pct_max, util_pct_sum / util_pct_count,"
        " util_pct_last, util_pct_count, energy_j_increase, energy_j_last"
        " FROM gpu_samples_1m ORDER BY bucket"
    ).fetchall()
    assert got == [
        (m, 5, 10.0, 50.0, 27.5, 50.0, 4, 80, 30.0),
        (m + 60 * s, 1, 1.25, 1.25, 1.25, 1.25, 1, 5, 35.0),
    ]
    hour = store.con.execute(
        "SELECT samples, util_pct_min, util_pct_max, util_pct_count, energy_j_increase,"
        " util_pct_last FROM gpu_samples_1h"
    ).fetchall()
    assert hour == [(6, 1.25, 50.0, 5, 85, 1.25)]


def test_a_counter_increase_starts_from_the_previous_minute_rolled_in_an_earlier_tick():
    """The first delta of a step comes from the 1-minute tier's last non-NULL value
    (`_nonnull_last`/`_nonnull_ts`), not from raw rows before the step."""
    store = Store.open(":memory:")
    m = datetime(2026, 11, 2, 10, 0)
    s = timedelta(seconds=1)
    _gpu_rows(store, [(m, 1.0, 100.0), (m + 40 * s, 2.0, 130.0), (m + 50 * s, 3.0, None)])
    _roll(store, m + 90 * s)  # rolls the first minute only
    assert store.con.execute(
        "SELECT energy_j_increase, energy_j_nonnull_last, energy_j_nonnull_ts, energy_j_last"
        " FROM gpu_samples_1m"
    ).fetchall() == [(30, 130, m + 40 * s, None)]
    # next minute: 135 (+5 from the carried 130), then a reset to 4 (+4); a row
    # more than 5 minutes after the last value counts nothing
    _gpu_rows(store, [(m + 70 * s, 1.0, 135.0), (m + 80 * s, 1.0, 4.0)])
    _roll(store, m + 150 * s)
    _gpu_rows(store, [(m + 500 * s, 1.0, 50.0)])
    _roll(store, m + 600 * s)
    got = store.con.execute(
        "SELECT bucket, energy_j_increase FROM gpu_samples_1m ORDER BY bucket"
    ).fetchall()
    assert got == [(m, 30), (m + 60 * s, 9), (m + 480 * s, None)]


def test_a_rollup_step_does_not_hold_up_writes():
    """RollupTask's transaction runs beside the ingest writer: a batch written from
    another thread while a rollup step is still open commits without waiting for it."""
    store = Store.open(":memory:")
    spec = SPECS["gpu_samples"]
    store.write([Batch("gpu_samples", sample_rows("gpu_samples", START, 1, 10.0, 3, seed=3))])
    task = RollupTask(store)
    later = sample_rows("gpu_samples", START + timedelta(hours=1), 1, 10.0, 3, seed=4)
    done = threading.Event()

    def write() -> None:
        store.write([Batch("gpu_samples", later)])
        done.set()

    with task._rollup_cursor() as cur:
        assert roll_tier(cur, spec, "1m", START + timedelta(hours=1)) > 0
        w = threading.Thread(target=write)
        w.start()
        committed = done.wait(120)  # generous: a loaded machine; the lock would block forever
        assert committed, "a write waited for the rollup's transaction"
    w.join()
    n = store.con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0]
    assert (
        n == 2 * later.num_rows
        and store.con.execute("SELECT count(*) FROM gpu_samples_1m").fetchone()[0] > 0
    )


def test_late_rows_within_the_window_are_rolled_up_later_ones_stay_raw():
    store = Store.open(":memory:")
    m = datetime(2026, 11, 2, 10, 0)
    _gpu_rows(store, [(m + timedelta(seconds=10 * i), 50.0, None) for i in range(360)])
    opts = RollupOptions(grace_s=30.0, late_s=900.0)
    now = m + timedelta(hours=1, minutes=1)
    _roll(store, now, opts)

    def samples(bucket: datetime) -> int:
        return store.con.execute(
            "SELECT samples FROM gpu_samples_1m WHERE bucket = ?", [bucket]
        ).fetchone()[0]

    recent, old = m + timedelta(minutes=50), m + timedelta(minutes=10)
    assert samples(recent) == samples(old) == 6
    # both arrive now: one 10 min after its minute closed, one 50 min after
    _gpu_rows(
        store,
        [(recent + timedelta(seconds=5), 99.0, None), (old + timedelta(seconds=5), 99.0, None)],
    )
    _roll(store, now + timedelta(seconds=30), opts)
    assert samples(recent) == 7  # within late_s: rolled up again
    assert samples(old) == 6  # beyond late_s: raw only (documented rule)
    assert (
        store.con.execute(
            "SELECT count(*) FROM gpu_samples WHERE ts >= ? AND ts < ?",
            [old, old + timedelta(minutes=1)],
        ).fetchone()[0]
        == 7
    )


def test_tiers_expire_in_bounded_steps():
    store = Store.open(":memory:")
    m = datetime(2026, 11, 1, 0, 0)
    _gpu_rows(store, [(m + timedelta(seconds=30 * i), 1.0, None) for i in range(3 * 24 * 120)])
    now = m + timedelta(days=3, minutes=5)
    task = RollupTask(
        store,
        tables=["gpu_samples"],
        opts=RollupOptions(max_span_h=80),
        retention=TierRetention(
            keep_1m=timedelta(days=1), keep_1h=timedelta(days=2), step=timedelta(hours=6)
        ),
    )
    with store.writer() as cur:  # the first rollup, before any expiry
        roll_tier(cur, SPECS["gpu_samples"], "1m", now, task.opts)
        roll_tier(cur, SPECS["gpu_samples"], "1h", now, task.opts)
    minutes = store.con.execute("SELECT count(*) FROM gpu_samples_1m").fetchone()[0]
    assert minutes == 3 * 24 * 60
    with store.writer() as cur:  # one step deletes at most 6 hours of minutes
        assert (
            expire_step(cur, "gpu_samples_1m", now - timedelta(days=1), timedelta(hours=6))
            == 6 * 60
        )
    task.run_once(now)
    first = {
        t: store.con.execute(f"SELECT min(bucket) FROM gpu_samples_{t}").fetchone()[0]
        for t in ("1m", "1h")
    }
    assert first["1m"] >= now - timedelta(days=1) > first["1m"] - timedelta(minutes=1)
    assert first["1h"] >= now - timedelta(days=2) > first["1h"] - timedelta(hours=1)
    assert task.last_expired["gpu_samples_1m"] == 2 * 24 * 60 + 5 - 6 * 60


def test_daemon_config_wires_rollups_and_refuses_too_short_raw_retention():
    from fleettui.config import ConfigError, parse_config
    from fleettui.daemon import build_tasks

    store = Store.open(":memory:")
    cfg = parse_config({"daemon": {"retention_1m_days": 7, "rollup_interval_s": 10}}, "t.toml")
    task = next(t for t in build_tasks(cfg, store) if isinstance(t, RollupTask))
    assert task.interval_s == 10 and task.retention.keep_1m == timedelta(days=7)
    assert task.retention.keep_1h == timedelta(days=730)
    off = parse_config({"daemon": {"rollup_interval_s": 0}}, "t.toml")
    assert not any(isinstance(t, RollupTask) for t in build_tasks(off, store))
    try:
        parse_config({"daemon": {"retention_h": 2}}, "t.toml")
    except ConfigError as exc:
        assert "t.toml [daemon]" in str(exc) and "retention_h must cover" in str(exc)
    else:
        raise AssertionError("a 2-hour raw retention with rollups was accepted")


def test_live_views_equal_recomputation_while_rollups_lag():
    """`<table>_<tier>_live` = rolled-up buckets + the rest aggregated on the fly: at any
    moment it equals both tiers recomputed from raw rows."""
    store = Store.open(":memory:")
    store.write([Batch("gpu_samples", sample_rows("gpu_samples", START, 5, 10.0, 3, seed=5))])
    spec = SPECS["gpu_samples"]
    names = ", ".join(n for n, _ in rollup_columns(spec))
    con = store.con
    for now in (None, START + timedelta(hours=2, minutes=17), START + timedelta(hours=9)):
        if now is not None:
            _roll(store, now)
        for tier in TIERS:
            rec = con.execute(
                f"SELECT {names} FROM ({from_raw_sql(spec, tier)})",
                {"lo": datetime(2000, 1, 1), "hi": datetime(2100, 1, 1)},
            ).to_arrow_table()
            con.register("_rec", rec)
            assert _equal(
                con, f"SELECT {names} FROM gpu_samples_{tier}_live", "SELECT * FROM _rec"
            )[:2] == (0, 0), (now, tier)
            con.unregister("_rec")
    # by the last round everything was rolled up: the views read the rollup tables
    assert con.execute("SELECT min(done_until) FROM rollup_state").fetchone()[
        0
    ] > START + timedelta(hours=5)


def test_every_sample_column_has_a_rollup_kind():
    """A column added to a sample table must be given a kind here, or this fails."""
    from storage.columns import TABLE_COLUMNS

    for spec in SPECS.values():
        cols = set(TABLE_COLUMNS[spec.table]) - {"ts", "source"} - set(spec.keys)
        assert cols == {c for c, _ in spec.metrics}, spec.table
