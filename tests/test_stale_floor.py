"""HostTelemetryStale and GpuNotReporting have a floor of one engine interval (issue 11):
a 1 Hz push fleet (3 x 1 s = 3 s) whose rows land a few seconds late fires neither;
a host that goes silent still fires, and so does a GPU that stops while its host reports."""

from datetime import datetime, timedelta

from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import default_rules
from storage.batch import make_batch
from storage.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0)
STEP_S = 15.0
HOSTS = {"h1": ["GPU-a", "GPU-b"], "h2": ["GPU-c"]}


def engine() -> tuple[Store, AlertEngine]:
    store = Store.open(":memory:")
    rules = [r for r in default_rules() if r.name in ("HostTelemetryStale", "GpuNotReporting")]
    assert len(rules) == 2
    store.write(
        [
            make_batch(
                "gpus",
                {
                    "gpu_uuid": [u for us in HOSTS.values() for u in us],
                    "host": [h for h, us in HOSTS.items() for _ in us],
                },
            )
        ]
    )
    return store, AlertEngine(store, rules, interval_s=STEP_S)


def report(store: Store, t: datetime, host: str, uuids: list[str]) -> None:
    """What the MQTT source writes for one 1 Hz report: samples, host, its run."""
    store.write(
        [
            make_batch(
                "gpu_samples",
                {"ts": [t] * len(uuids), "host": [host] * len(uuids), "gpu_uuid": uuids},
            ),
            make_batch("hosts", {"host": [host], "last_seen": [t], "first_seen": [t]}),
            make_batch(
                "collector_runs",
                {
                    "ts": [t],
                    "collector": ["mqtt"],
                    "duration_ms": [1.0],
                    "ok": [True],
                    "rows": [len(uuids)],
                    "error": [None],
                    "skipped": [0],
                    "interval_s": [1.0],
                },
            ),
        ]
    )


def firing(eng: AlertEngine, t: datetime) -> set[tuple[str, str]]:
    eng.evaluate(t)
    return {(a.rule, a.scope_key) for a in eng.open_alerts() if a.state == "firing"}


def test_write_lag_of_a_few_seconds_fires_nothing_and_silence_still_does():
    store, eng = engine()
    lag_s = 5  # h2's rows land 5 s late (its agent's buffer, a busy write queue)
    seen = set()
    for s in range(300):
        t = T0 + timedelta(seconds=s)
        report(store, t, "h1", HOSTS["h1"])
        if s >= lag_s:
            report(store, t - timedelta(seconds=lag_s), "h2", HOSTS["h2"])
        if s % 15 == 14:
            seen |= firing(eng, t + timedelta(seconds=0.5))
    # before: 3 x 1 s = 3 s < 5.5 s, so h2 and its GPU fired while h1 was fresh
    assert seen == set()
    # h2 goes silent and GPU-b stops while h1 reports on
    for s in range(300, 360):
        t = T0 + timedelta(seconds=s)
        report(store, t, "h1", ["GPU-a"])
        if s % 15 == 14:
            seen |= firing(eng, t + timedelta(seconds=0.5))
    assert seen == {
        ("HostTelemetryStale", "h2"),
        ("GpuNotReporting", "GPU-b"),
    }
