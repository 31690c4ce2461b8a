"""CollectorSilent: push sources judged by their report interval, outages fire once and stay."""

from datetime import datetime, timedelta

from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import default_rules
from storage.batch import make_batch
from storage.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0)
STEP_S = 15.0


def engine() -> tuple[Store, AlertEngine]:
    store = Store.open(":memory:")
    rules = [r for r in default_rules() if r.name == "CollectorSilent"]
    assert len(rules) == 1
    return store, AlertEngine(store, rules, interval_s=STEP_S)


def run(store: Store, t: datetime, ok: bool, interval_s: float | None, error=None) -> None:
    store.write(
        [
            make_batch(
                "collector_runs",
                {
                    "ts": [t],
                    "collector": ["mqtt"],
                    "duration_ms": [1.0],
                    "ok": [ok],
                    "rows": [10 if ok else 0],
                    "error": [error],
                    "skipped": [0],
                    "interval_s": [interval_s],
                },
            )
        ]
    )


def states(eng: AlertEngine) -> list[tuple[str, str]]:
    return [(a.scope_key, a.state) for a in eng.open_alerts()]


def test_a_healthy_once_a_second_push_fleet_never_fires():
    # One agent at 1 Hz: the mqtt source writes a run per report, declaring the
    # report interval (1 s). Evaluations land 0.9 s after the last report, which
    # the old rule (3 x the 0.25 s flush interval = 0.75 s) called silent.
    store, eng = engine()
    fired = []
    for s in range(600):
        t = T0 + timedelta(seconds=s)
        run(store, t, True, 1.0)
        if s % 15 == 14:
            cycle = eng.evaluate(t + timedelta(seconds=0.9))
            fired += [a.scope_key for a, _, to in cycle.transitions if to == "firing"]
    assert fired == []
    assert states(eng) == []


def test_an_outage_with_failing_runs_fires_once_and_stays_firing_until_reports_return():
    store, eng = engine()
    for s in range(0, 60):
        run(store, T0 + timedelta(seconds=s), True, 1.0)
    transitions = []
    # broker down for 5 minutes: the source records a failing run (NULL interval) every 5 s
    for s in range(60, 360):
        t = T0 + timedelta(seconds=s)
        if s % 5 == 0:
            run(store, t, False, None, "broker 127.0.0.1:1883: Connection refused")
        if s % 15 == 0:
            cycle = eng.evaluate(t)
            transitions += [(s, to, a.last_value) for a, _, to in cycle.transitions]
    # fired at the first evaluation past max(3 x 1 s, 15 s) of silence, never resolved after
    assert [(s, to) for s, to, _ in transitions] == [(75, "pending"), (75, "firing")]
    assert transitions[0][2] == 16.0  # silent since the last report at 59 s
    assert states(eng) == [("mqtt", "firing")]
    assert eng.open_alerts()[0].last_value == 360 - 15 - 59  # still counting from 59 s
    # reports come back: resolved at the next evaluation
    for s in range(360, 376):
        run(store, T0 + timedelta(seconds=s), True, 1.0)
    cycle = eng.evaluate(T0 + timedelta(seconds=375))
    assert [(a.scope_key, to) for a, _, to in cycle.transitions] == [("mqtt", "resolved")]


def test_a_source_that_never_succeeded_is_silent_since_its_first_run():
    # the mqtt source's broker failures declare its report interval (1 s)
    store, eng = engine()
    for s in range(0, 60, 5):
        run(store, T0 + timedelta(seconds=s), False, 1.0, "broker: Connection refused")
    assert eng.evaluate(T0 + timedelta(seconds=15)).transitions == []
    cycle = eng.evaluate(T0 + timedelta(seconds=30))
    assert [(a.scope_key, to, a.last_value, a.threshold) for a, _, to in cycle.transitions] == [
        ("mqtt", "pending", 30.0, 15.0),
        ("mqtt", "firing", 30.0, 15.0),
    ]


def test_failing_target_rows_without_an_interval_are_not_collectors_going_silent():
    # a pull source's per-target failures ("<source> <target>", NULL interval, never ok)
    store, eng = engine()
    for s in range(0, 600, 15):
        t = T0 + timedelta(seconds=s)
        store.write(
            [
                make_batch(
                    "collector_runs",
                    {
                        "ts": [t, t],
                        "collector": ["prom", "prom node-7:9100"],
                        "duration_ms": [5.0, 0.0],
                        "ok": [True, False],
                        "rows": [100, 0],
                        "error": [None, "node-7:9100: down"],
                        "skipped": [0, 0],
                        "interval_s": [15.0, None],
                    },
                )
            ]
        )
        assert eng.evaluate(t + timedelta(seconds=1)).transitions == []


def test_a_slow_pull_source_is_judged_by_its_own_interval():
    store, eng = engine()
    for s in range(0, 600, 60):  # a 60 s pull interval: 3 x 60 s of grace
        run(store, T0 + timedelta(seconds=s), True, 60.0)
    assert eng.evaluate(T0 + timedelta(seconds=540 + 170)).transitions == []
    cycle = eng.evaluate(T0 + timedelta(seconds=540 + 181))
    assert [to for _, _, to in cycle.transitions] == ["pending", "firing"]
