"""The store-size projection counts the rollup tiers at their own retention (issue 11):
1-minute rows kept 30 days and 1-hour rows 730 days outlast raw rows (48 h) by far."""

from datetime import datetime, timedelta

from fleettui.metrics import StoreSizeTask
from storage.batch import make_batch
from storage.footprint import Growth, rollup_rows
from storage.rollups import RollupTask
from storage.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0)


def test_growth_adds_the_rollup_tiers_at_their_retention():
    g = Growth()
    g.observe(1_000_000, at=0.0)
    g.observe_rows(0, 0, width=2.0, at=0.0)
    g.observe(4_600_000, at=3600.0)  # 3.6 MB an hour for 3,600 raw rows: 1,000 B a row
    g.observe_rows(3600, 60, width=2.0, at=3600.0)  # one GPU at 1 Hz: 60 1-minute rows
    raw = 3_600_000 * 48
    # 2,000 B a rollup row; 60 1-m rows/h kept 720 h, 1 1-h row/h kept 17,520 h
    tiers = 2_000 * (60 * 720 + 1 * 17_520)
    assert g.rollup_bytes(720, 17_520) == tiers == 121_440_000
    assert g.projected_bytes(48, 720, 17_520) == raw + tiers
    assert g.projected_bytes(48) == raw  # without tiers: what it said before (a 41% miss)


def test_store_size_task_measures_rollup_rows_on_a_real_store(tmp_path):
    store = Store.open(tmp_path / "s.duckdb")
    task = StoreSizeTask(store, retention_h=48, keep_1m_h=720, keep_1h_h=17_520)
    rollups = RollupTask(store, tables=["gpu_samples"])

    def minutes(start: int, n: int) -> None:
        rows = [T0 + timedelta(seconds=s) for s in range(start * 60, (start + n) * 60)]
        store.write(
            [
                make_batch(
                    "gpu_samples",
                    {
                        "ts": [t for t in rows for _ in range(8)],
                        "gpu_uuid": [f"GPU-{g}" for _ in rows for g in range(8)],
                        "host": ["h"] * (8 * len(rows)),
                        "util_pct": [float(g) for _ in rows for g in range(8)],
                    },
                )
            ]
        )
        rollups.run_once(T0 + timedelta(minutes=start + n, seconds=40))

    minutes(0, 10)
    first = task.measure()
    raw, m1, width = rollup_rows(store)
    assert (raw, m1) == (8 * 600, 8 * 10) and width > 2  # a rollup row is much wider
    minutes(10, 30)
    second = task.measure()
    assert second["projected_rollup_bytes"] > 0
    raw_only = second["bytes_per_hour"] * 48
    assert second["projected_bytes"] == int(raw_only + second["projected_rollup_bytes"])
    assert first["file_bytes"] > 0
    store.close()
