"""SourceHealth counts runs and rejects from the batches sources hand in; the store's
size projection grows with what is written."""

from datetime import datetime, timedelta

from fleettui.metrics import StoreSizeTask
from fleettui.source_health import MAX_REASONS, SourceHealth, reason_key
from storage.batch import make_batch
from storage.footprint import Growth, disk_bytes
from storage.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0)


def runs(name, oks, errors=None, interval=1.0):
    n = len(oks)
    return make_batch(
        "collector_runs",
        {
            "ts": [T0 + timedelta(seconds=i) for i in range(n)],
            "collector": [name] * n,
            "duration_ms": [10.0] * n,
            "ok": oks,
            "rows": [5] * n,
            "error": errors or [None] * n,
            "skipped": [0] * n,
            "interval_s": [interval] * n,
        },
    )


def test_runs_failures_last_error_and_last_success():
    h = SourceHealth()
    h.observe([runs("sim", [True, True]), make_batch("gpu_samples", {"ts": [T0]})])
    h.observe([runs("mqtt", [True, False], [None, "broker x: refused"], interval=None)])
    sim, mqtt = h.sources["sim"], h.sources["mqtt"]
    assert (sim.runs, sim.failures, sim.rows, sim.last_error) == (2, 0, 10, None)
    assert abs(sim.duration_s - 0.02) < 1e-9 and sim.interval_s == 1.0
    assert (mqtt.runs, mqtt.failures, mqtt.last_error) == (2, 1, "broker x: refused")
    assert mqtt.last_ok_at == (T0 - datetime(1970, 1, 1)).total_seconds()
    assert mqtt.last_error_at == mqtt.last_ok_at + 1
    assert mqtt.interval_s is None  # failing runs declare none


def test_rejects_by_bounded_reason():
    h = SourceHealth()
    reasons = [
        "interval_s: expected seconds",
        "interval_s: got nan",
        "status: bad json",
        "topic is not <prefix>/<host>/report|status",
    ] + [f"k{i}: x" for i in range(40)]
    h.observe(
        [
            make_batch(
                "rejects",
                {"ts": [T0] * len(reasons), "source": ["mqtt"] * len(reasons), "reason": reasons},
            )
        ]
    )
    assert h.rejects[("mqtt", "interval_s")] == 2 and h.rejects[("mqtt", "status")] == 1
    assert (
        len(h.rejects) == MAX_REASONS + 1 and h.rejects[("mqtt", "other")] == 44 - 33
    )  # 32 reasons took 33 rows
    assert reason_key(None) == "unknown" and len(reason_key("x" * 500)) == 40


def test_growth_projects_to_the_retention():
    g = Growth()
    g.observe(1_000_000, at=0.0)
    assert g.bytes_per_hour == 0.0 and g.projected_bytes(168) == 1_000_000
    g.observe(1_500_000, at=1800.0)  # +500 kB on disk (file + WAL) in half an hour
    assert g.bytes_per_hour == 1_000_000 and not g.from_checkpoints
    assert g.projected_bytes(168) == 168_000_000
    assert g.projected_bytes(0.1) == 1_500_000  # never below what it holds
    # checkpoints: the compressed blocks' growth wins over the WAL's
    g.observe(2_000_000, used=400_000, at=3600.0)
    g.observe(2_200_000, used=600_000, at=7200.0)
    assert g.from_checkpoints and g.bytes_per_hour == 200_000
    assert g.projected_bytes(168) == 33_600_000


def test_store_size_task_on_a_real_file(tmp_path):
    store = Store.open(tmp_path / "s.duckdb")
    task = StoreSizeTask(store, retention_h=24)
    first = task.measure()
    assert first["file_bytes"] == disk_bytes(str(tmp_path / "s.duckdb")) > 0
    assert "projected_bytes" not in first  # one reading: no rate yet
    n = 200_000
    store.write(
        [
            make_batch(
                "gpu_samples",
                {
                    "ts": [T0 + timedelta(milliseconds=i) for i in range(n)],
                    "gpu_uuid": ["GPU-x"] * n,
                    "host": ["h"] * n,
                    "util_pct": [float(i % 100) for i in range(n)],
                },
            )
        ]
    )
    second = task.measure()
    assert second["file_bytes"] > first["file_bytes"]
    assert second["bytes_per_hour"] > 0
    assert second["projected_bytes"] >= second["file_bytes"]
    assert task.snapshot()["retention_h"] == 24
    store.close()


def test_metrics_take_back_pressure_from_a_runtime_that_reports_it():
    """A runtime with `stats_dict()` (queue age, write lag, store state) gets those
    gauges; one without gets only the queue depth."""
    from types import SimpleNamespace

    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from fleettui.metrics import DaemonCollector, registry_for
    from fleettui.runtime import RuntimeStats

    def scrape(runtime) -> dict[str, float]:
        text = generate_latest(registry_for(DaemonCollector(runtime, [], [], SourceHealth())))
        return {
            s.name: s.value
            for f in text_string_to_metric_families(text.decode())
            for s in f.samples
            if not s.labels
        }

    stats = RuntimeStats()
    reporting = SimpleNamespace(
        stats=stats,
        stats_dict=lambda: {
            "queue_depth": 7,
            "queue_max": 256,
            "queue_oldest_s": 1.5,
            "last_write_lag_s": 0.75,
            "last_write_s": 0.1,
            "store_ok": False,
            "store_failures": 3,
            "rows_dropped": 12,
        },
    )
    m = scrape(reporting)
    assert (
        m["fleettui_write_queue_depth"],
        m["fleettui_write_queue_oldest_seconds"],
        m["fleettui_write_lag_seconds"],
        m["fleettui_store_up"],
        m["fleettui_store_failures_total"],
        m["fleettui_rows_dropped_total"],
    ) == (7, 1.5, 0.75, 0, 3, 12)
    import asyncio

    plain = SimpleNamespace(stats=stats, _queue=asyncio.Queue(maxsize=64))
    m = scrape(plain)
    assert m["fleettui_write_queue_capacity"] == 64
    assert "fleettui_write_lag_seconds" not in m and "fleettui_store_up" not in m
