"""Resolution routing: long windows read rollups, and see past raw retention."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from storage.batch import Batch
from storage.resolution import pick_tier, source_for
from storage.rollups import SPECS, TIERS, RollupOptions, roll_tier
from storage.store import Store
from storage.views import gpu_history
from storage.views.drilldown import HISTORY_SQL
from storage.views.query import run
from tests.rollup_data import sample_rows

START = datetime(2026, 11, 2, 0, 0, 0)


def test_the_coarsest_tier_that_fits_a_chart_bucket():
    assert pick_tier(3600, 120) == "raw"  # the drill-down's hour: 30 s buckets
    assert pick_tier(6 * 3600, 60) == "1m"
    assert pick_tier(86400, 96) == "1m"
    assert pick_tier(30 * 86400, 120) == "1h"  # a month: 6-hour buckets
    assert source_for("gpu_samples", 30 * 86400, 120) == ("1h", "gpu_samples_1h_live")
    assert source_for("events", 30 * 86400, 120) == ("raw", "events")


def _store_with_two_days() -> tuple[Store, datetime]:
    store = Store.open(":memory:")
    store.write([Batch("gpu_samples", sample_rows("gpu_samples", START, 48, 20.0, 4, seed=3))])
    now = START + timedelta(hours=48, minutes=3)
    with store.writer() as cur:
        for tier in TIERS:
            roll_tier(cur, SPECS["gpu_samples"], tier, now, RollupOptions(max_span_h=100))
    return store, START + timedelta(hours=48)  # a cursor on an hour: chart buckets = rollups


def test_a_two_day_history_reads_hourly_rollups_with_the_raw_means():
    store, at = _store_with_two_days()
    window, buckets = 48 * 3600.0, 48
    routed = gpu_history(store.con, "host-0", at, window_s=window, buckets=buckets)
    raw = run(
        store.con,
        HISTORY_SQL,
        {
            "at": at,
            "host": "host-0",
            "window_s": window,
            "bucket_s": window / buckets,
            "buckets": buckets,
        },
    )
    assert routed.num_rows == raw.num_rows == buckets  # host-0 has one GPU
    for col in ("util_pct", "power_w", "temp_c"):
        a = np.array(routed.column(col).to_pylist(), dtype=float)
        b = np.array(raw.column(col).to_pylist(), dtype=float)
        # sums are kept to 1e-6 of the unit: the means agree to that
        assert np.allclose(a, b, rtol=0, atol=1e-6), col
    assert routed.column("bucket").to_pylist() == raw.column("bucket").to_pylist()


def test_history_older_than_raw_retention_comes_from_rollups():
    store, at = _store_with_two_days()
    with store.writer() as cur:  # raw retention of one day
        cur.execute("DELETE FROM gpu_values WHERE ts < ?", [at - timedelta(days=1)])
    window, buckets = 48 * 3600.0, 48
    routed = gpu_history(store.con, "host-0", at, window_s=window, buckets=buckets)
    raw = run(
        store.con,
        HISTORY_SQL,
        {
            "at": at,
            "host": "host-0",
            "window_s": window,
            "bucket_s": window / buckets,
            "buckets": buckets,
        },
    )
    assert routed.num_rows == buckets
    assert raw.num_rows <= 25
    # a cursor between hours: a rollup straddling the window's start fills the first bucket
    later = gpu_history(
        store.con, "host-0", at + timedelta(minutes=2), window_s=window, buckets=buckets
    )
    # (the last one would hold the hour after the data ends)
    assert later.column("bucket").to_pylist() == list(range(buckets - 1))


def test_alert_rules_over_hours_read_the_minute_rollups():
    from fleettui.alerts.rules import load_rules_text

    store, at = _store_with_two_days()
    text = """
[[rules]]
name = "{name}"
scope = "gpu"
expr = {{ metric = "{metric}", agg = "{agg}", over = "6h", op = ">", threshold = -1000 }}
"""
    for agg in ("avg", "min", "max"):
        (routed,) = load_rules_text(text.format(name="Routed", metric="util_pct", agg=agg), "r")
        (raw,) = load_rules_text(text.format(name="Raw", metric="util_pct + 0", agg=agg), "r")
        assert "gpu_samples_1m_live" in routed.query and "gpu_samples_1m" not in raw.query
        a, b = (
            {
                r[0]: r[1]
                for r in store.con.execute(rule.query.replace("$now", "?"), [at] * 2).fetchall()
            }
            for rule in (routed, raw)
        )
        assert a.keys() == b.keys() and len(a) == 2  # two GPU uuids in the data
        for k in a:
            assert abs(a[k] - b[k]) <= 1e-6, (agg, k)


def test_a_thirty_day_tenant_chart_reads_hourly_rollups_with_the_raw_means():
    from storage.views import tenant_history

    days = 30
    store = Store.open(":memory:")
    store.write(
        [
            Batch("gpu_samples", sample_rows("gpu_samples", START, days * 24, 600.0, 4, seed=5)),
            Batch(
                "slice_samples", sample_rows("slice_samples", START, days * 24, 600.0, 2, seed=6)
            ),
        ]
    )
    with store.writer() as cur:
        # acme holds one whole GPU for the month, half of the other from day 10 and a
        # slice; another tenant holds the other half of the second GPU all month
        cur.execute(
            "INSERT INTO assignments VALUES "
            "('acme', 'gpu_uuid-0', NULL, 1.0, $s, NULL, 'contract'),"
            "('acme', 'gpu_uuid-1', NULL, 0.5, $d10, NULL, 'contract'),"
            "('acme', 'gpu_uuid-9', 'slice_id-0', 0.25, $s, NULL, 'contract'),"
            "('other', 'gpu_uuid-1', NULL, 0.5, $s, NULL, 'contract')",
            {"s": START, "d10": START + timedelta(days=10)},
        )
        now = START + timedelta(days=days, minutes=3)
        for table in ("gpu_samples", "slice_samples"):
            for tier in TIERS:
                roll_tier(cur, SPECS[table], tier, now, RollupOptions(max_span_h=24 * days + 1))
    at = START + timedelta(days=days)  # on an hour: chart buckets are whole rollups
    window, buckets = days * 86400.0, 120
    tier, routed = tenant_history(store.con, "acme", at, window_s=window, buckets=buckets)
    assert tier == "1h"
    # the same chart from raw rows: the 1-hour tier must not change a mean
    raw_tier, raw = tenant_history(store.con, "acme", at, window_s=window, buckets=86400)
    assert raw_tier == "raw"  # 30 s chart buckets: raw rows
    raw_rows = run(
        store.con,
        """
        WITH h AS (
            SELECT s.ts, a.fraction AS w, s.util_pct AS v
            FROM gpu_samples s JOIN assignments a
              ON a.slice_id IS NULL AND a.gpu_uuid = s.gpu_uuid AND s.ts >= a.valid_from
            WHERE a.tenant = 'acme' AND s.util_pct IS NOT NULL
            UNION ALL
            SELECT s.ts, a.fraction, s.util_pct FROM slice_samples s JOIN assignments a
              ON a.slice_id = s.slice_id AND s.ts >= a.valid_from
            WHERE a.tenant = 'acme' AND s.util_pct IS NOT NULL
        )
        SELECT floor(epoch(ts - $from) / $bucket_s)::INT AS bucket,
               sum(w * v) / sum(w) AS util_pct
        FROM h WHERE ts > $from AND ts <= $at GROUP BY ALL ORDER BY bucket
        """,
        {"from": at - timedelta(days=days), "at": at, "bucket_s": window / buckets},
    )
    assert routed.num_rows == raw_rows.num_rows == buckets
    assert routed.column("bucket").to_pylist() == raw_rows.column("bucket").to_pylist()
    a = np.array(routed.column("util_pct").to_pylist(), dtype=float)
    b = np.array(raw_rows.column("util_pct").to_pylist(), dtype=float)
    assert np.allclose(a, b, rtol=0, atol=1e-6)
    # the other tenant's GPU is never in acme's chart
    _, other = tenant_history(store.con, "other", at, window_s=window, buckets=buckets)
    assert not np.allclose(
        np.array(other.column("util_pct").to_pylist(), dtype=float), a, rtol=0, atol=1e-3
    )
    # the raw path's fine chart, folded to the same 6-hour buckets, gives the same means
    fine = np.array(raw.column("util_pct").to_pylist(), dtype=float)
    assert raw.num_rows > 1000 and np.isfinite(fine).all()


def _hour_store(rolled: bool) -> tuple[Store, datetime]:
    store = Store.open(":memory:")
    store.write([Batch("gpu_samples", sample_rows("gpu_samples", START, 2, 10.0, 4, seed=7))])
    at = START + timedelta(hours=2, seconds=-7)  # not on a minute
    if rolled:
        with store.writer() as cur:
            roll_tier(cur, SPECS["gpu_samples"], "1m", at, RollupOptions(max_span_h=3))
    return store, at


def _raw_history(store: Store, at: datetime) -> dict[tuple[str, int], dict]:
    window, buckets = 3600.0, 120
    params = {"at": at, "host": "host-0", "window_s": window}
    rows = run(store.con, HISTORY_SQL, {**params, "bucket_s": window / buckets, "buckets": buckets})
    return {(r["gpu_uuid"], r["bucket"]): r for r in rows.to_pylist()}


def test_the_drilldown_hour_reads_recent_raw_rows_and_older_minute_rollups():
    from storage.views.drilldown import RAW_RECENT_S

    store, at = _hour_store(rolled=True)
    hybrid = gpu_history(store.con, "host-0", at, window_s=3600.0, buckets=120)
    raw = _raw_history(store, at)
    start = at - timedelta(seconds=3600)
    cut = (at - timedelta(seconds=RAW_RECENT_S)).replace(second=0, microsecond=0)
    first_raw = int((cut - start).total_seconds() // 30)
    # the older part: each minute's raw rows, in the chart bucket where the minute starts
    minutes = {
        (r["gpu_uuid"], r["b"]): r
        for r in store.con.execute(
            "SELECT gpu_uuid, greatest(floor(epoch(date_trunc('minute', ts) - $start) / 30), 0)"
            "::INT AS b, avg(util_pct) AS util_pct, avg(power_w) AS power_w, "
            "avg(temp_c) AS temp_c FROM gpu_samples WHERE host = 'host-0' "
            "AND date_trunc('minute', ts) > $start - INTERVAL 1 MINUTE "
            "AND date_trunc('minute', ts) < $cut GROUP BY ALL",
            {"start": start, "cut": cut},
        )
        .to_arrow_table()
        .to_pylist()
    }
    old = recent = 0
    for r in hybrid.to_pylist():
        if r["bucket"] >= first_raw:  # recent: exactly the raw path's 30 s buckets
            assert r == raw[(r["gpu_uuid"], r["bucket"])]
            recent += 1
            continue
        ref = minutes[(r["gpu_uuid"], r["bucket"])]
        for col in ("util_pct", "power_w", "temp_c"):
            # rollup sums are kept to 1e-6 of the unit
            assert ref[col] is not None and abs(r[col] - ref[col]) <= 1e-6, (col, r["bucket"])
        old += 1
    n_gpus = len({k[0] for k in raw})
    assert recent == len([k for k in raw if k[1] >= first_raw]) > 0
    # a point per minute before the cut: 55 minutes, the one straddling the window's
    # start shares chart bucket 0 with the next
    assert old == len(minutes) == n_gpus * 54


def test_the_drilldown_hour_reads_raw_rows_where_nothing_is_rolled_up():
    store, at = _hour_store(rolled=False)
    hybrid = gpu_history(store.con, "host-0", at, window_s=3600.0, buckets=120)
    assert {(r["gpu_uuid"], r["bucket"]): r for r in hybrid.to_pylist()} == _raw_history(store, at)
    assert hybrid.num_rows == len(_raw_history(store, at))


def test_a_tenant_chart_with_rollups_behind_reads_the_rest_row_by_row():
    """The 1-hour tier rolled up to day 2, the 1-minute tier to day 2 + 5 h: the
    chart still has every raw mean (hours, then minutes, then raw rows)."""
    from storage.views import tenant_history

    store = Store.open(":memory:")
    store.write(
        [
            Batch("gpu_samples", sample_rows("gpu_samples", START, 72, 300.0, 4, seed=8)),
            Batch("slice_samples", sample_rows("slice_samples", START, 72, 300.0, 2, seed=9)),
        ]
    )
    with store.writer() as cur:
        cur.execute(
            "INSERT INTO assignments VALUES "
            "('acme', 'gpu_uuid-0', NULL, 1.0, $s, NULL, 'contract'),"
            "('acme', 'gpu_uuid-9', 'slice_id-0', 0.25, $s, NULL, 'contract')",
            {"s": START},
        )
        opts = RollupOptions(max_span_h=100)
        for table in ("gpu_samples", "slice_samples"):
            roll_tier(cur, SPECS[table], "1m", START + timedelta(hours=48, seconds=40), opts)
            roll_tier(cur, SPECS[table], "1h", START + timedelta(hours=48, seconds=40), opts)
            roll_tier(cur, SPECS[table], "1m", START + timedelta(hours=53, seconds=40), opts)
        wm = dict(cur.execute("SELECT rollup, done_until FROM rollup_state").fetchall())
    assert wm["gpu_samples_1h"] < wm["gpu_samples_1m"] < START + timedelta(hours=72)
    at = START + timedelta(hours=72)
    for window, buckets, want in ((72 * 3600.0, 12, "1h"), (86400.0, 96, "1m")):
        tier, routed = tenant_history(store.con, "acme", at, window_s=window, buckets=buckets)
        assert tier == want
        raw = run(
            store.con,
            """
            WITH h AS (
                SELECT s.ts, a.fraction AS w, s.util_pct AS v
                FROM gpu_samples s JOIN assignments a
                  ON a.slice_id IS NULL AND a.gpu_uuid = s.gpu_uuid
                WHERE a.tenant = 'acme' AND s.util_pct IS NOT NULL
                UNION ALL
                SELECT s.ts, a.fraction, s.util_pct FROM slice_samples s JOIN assignments a
                  ON a.slice_id = s.slice_id
                WHERE a.tenant = 'acme' AND s.util_pct IS NOT NULL
            )
            SELECT floor(epoch(ts - $from) / $bucket_s)::INT AS bucket,
                   sum(w * v) / sum(w) AS util_pct
            FROM h WHERE ts > $from AND ts <= $at GROUP BY ALL ORDER BY bucket
            """,
            {"from": at - timedelta(seconds=window), "at": at, "bucket_s": window / buckets},
        )
        assert routed.column("bucket").to_pylist() == raw.column("bucket").to_pylist()
        assert routed.num_rows == buckets
        a = np.array(routed.column("util_pct").to_pylist(), dtype=float)
        b = np.array(raw.column("util_pct").to_pylist(), dtype=float)
        assert np.allclose(a, b, rtol=0, atol=1e-6), (want, np.abs(a - b).max())
