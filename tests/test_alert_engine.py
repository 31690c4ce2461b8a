"""The alert engine's state machine, its persistence in the store, and silences."""

import asyncio
import json
from dataclasses import replace
from datetime import datetime, timedelta

import duckdb
import pytest

from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import default_rules, load_rules_text
from fleettui.alerts.silences import (
    SilenceError,
    acknowledge,
    active_silences,
    alert_history,
    expire,
    open_alerts,
    silence,
)
from storage.batch import make_batch
from storage.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0)
STEP = timedelta(seconds=15)

RULES = """
[[rules]]
name = "SlowTokens"
scope = "endpoint"
for = "1m"
keep_firing_for = "30s"
expr = { metric = "itl_p99_ms", agg = "last", over = "1m", op = ">", threshold = "itl_target_ms" }
labels = { team = "serving" }
[rules.annotations]
summary = "{{ $scope_key }} at {{ $value | printf \\"%.0f\\" }} ms (model {{ $labels.model }})"
"""


def setup_store(path=":memory:") -> Store:
    store = Store.open(path)
    store.write(
        [
            make_batch(
                "endpoints",
                {
                    "endpoint": ["ep-a", "ep-b"],
                    "tenant": ["t1", "t2"],
                    "model": ["m-a", "m-b"],
                    "itl_target_ms": [50.0, 50.0],
                    "ttft_target_ms": [500.0, 500.0],
                },
            )
        ]
    )
    return store


def itl(store: Store, t: datetime, **values: float) -> None:
    store.write(
        [
            make_batch(
                "latency_samples",
                {
                    "ts": [t] * len(values),
                    "endpoint": list(values),
                    "tenant": ["t1"] * len(values),
                    "model": ["m-a"] * len(values),
                    "itl_p99_ms": list(values.values()),
                },
            )
        ]
    )


class Collected:
    """A delivery that keeps what it was given."""

    def __init__(self):
        self.sent = []

    async def send(self, notifications, now):
        self.sent.append(
            (now, [(n.reason, n.alert.rule, n.alert.scope_key) for n in notifications])
        )


def run(store, engine, series):
    """series: list of dicts endpoint -> value, one per 15 s step; returns transitions per step."""
    out = []
    for i, values in enumerate(series):
        t = T0 + i * STEP
        if values:
            itl(store, t, **values)
        cycle = engine.evaluate(t)
        out.append([(a.scope_key, f, to) for a, f, to in cycle.transitions])
    return out


def test_pending_then_firing_after_for_then_resolved_after_keep_firing_for():
    store = setup_store()
    engine = AlertEngine(store, load_rules_text(RULES, "t.toml"), interval_s=15)
    high, low = {"ep-a": 80.0, "ep-b": 20.0}, {"ep-a": 20.0, "ep-b": 20.0}
    steps = run(store, engine, [high] * 6 + [low] * 4)
    assert steps[0] == [("ep-a", "inactive", "pending")]
    assert steps[1:4] == [[], [], []]
    assert steps[4] == [("ep-a", "pending", "firing")]  # 60 s after it started
    assert steps[6] == [] and steps[7] == []  # kept firing for 30 s after the condition cleared
    assert steps[8] == [("ep-a", "firing", "resolved")]
    row = (
        store.cursor()
        .execute(
            "SELECT state, started_at, fired_at, resolved_at, peak_value, last_value, threshold,"
            " labels, annotations FROM alerts"
        )
        .fetchall()
    )
    assert len(row) == 1
    state, started, fired, resolved, peak, last, thr, labels, ann = row[0]
    assert (state, started, fired, resolved) == ("resolved", T0, T0 + 4 * STEP, T0 + 8 * STEP)
    assert (peak, last, thr) == (80.0, 80.0, 50.0)
    assert json.loads(labels) == {
        "alertname": "SlowTokens",
        "severity": "warning",
        "scope": "endpoint",
        "scope_key": "ep-a",
        "team": "serving",
        "tenant": "t1",
        "model": "m-a",
    }
    assert json.loads(ann) == {"summary": "ep-a at 80 ms (model m-a)"}


def test_pending_that_clears_goes_back_to_inactive_and_peak_tracks_the_worst_value():
    store = setup_store()
    engine = AlertEngine(store, load_rules_text(RULES, "t.toml"), interval_s=15)
    steps = run(
        store,
        engine,
        [{"ep-a": 60.0}, {"ep-a": 95.0}, {"ep-a": 10.0}, {"ep-a": 70.0}, {"ep-a": 75.0}],
    )
    assert steps[2] == [("ep-a", "pending", "inactive")]
    assert steps[3] == [("ep-a", "inactive", "pending")]  # a new instance with a fresh timer
    rows = (
        store.cursor()
        .execute("SELECT state, peak_value, started_at FROM alerts ORDER BY started_at")
        .fetchall()
    )
    assert rows == [("inactive", 95.0, T0), ("pending", 75.0, T0 + 3 * STEP)]


def test_pending_timer_survives_a_restart(tmp_path):
    path = tmp_path / "fleet.duckdb"
    store = setup_store(path)
    rules = load_rules_text(RULES, "t.toml")
    run(store, AlertEngine(store, rules), [{"ep-a": 80.0}] * 3)  # pending for 30 s
    store.close()
    store = Store.open(path)
    engine = AlertEngine(store, rules)
    assert [(a.scope_key, a.state, a.started_at) for a in engine.open_alerts()] == [
        ("ep-a", "pending", T0)
    ]
    t = T0 + 4 * STEP  # 60 s after the condition first held, before the restart
    itl(store, t, **{"ep-a": 80.0})
    cycle = engine.evaluate(t)
    assert [(a.scope_key, f, to) for a, f, to in cycle.transitions] == [
        ("ep-a", "pending", "firing")
    ]


def test_a_failing_rule_keeps_its_alerts_and_a_removed_rule_resolves_them():
    store = setup_store()
    rules = load_rules_text(RULES, "t.toml")
    engine = AlertEngine(store, rules)
    run(store, engine, [{"ep-a": 80.0}] * 5)
    assert [a.state for a in engine.open_alerts()] == ["firing"]
    # the table behind a rule went away (a migration not applied, a typo in a site rule)
    engine.rules = [replace(rules[0], query="SELECT * FROM no_such_table WHERE ts < $now")]
    cycle = engine.evaluate(T0 + 6 * STEP)
    assert "no_such_table" in cycle.errors[0] and cycle.transitions == []
    assert [a.state for a in engine.open_alerts()] == ["firing"]
    engine.rules = []
    cycle = engine.evaluate(T0 + 7 * STEP)
    assert [(f, to) for _, f, to in cycle.transitions] == [("firing", "resolved")]


def test_one_query_per_rule_per_cycle():
    """At most one query per rule per cycle, whatever the fleet: the `expr` rules of one
    table and scope share one (fleettui/alerts/shared.py), every other rule runs its own."""
    store = Store.open(":memory:")
    rules = default_rules()
    engine = AlertEngine(store, rules)
    executed = []

    class Counting:
        def __init__(self, cur):
            self._cur = cur

        def execute(self, sql, *args):
            executed.append(sql)
            return self._cur.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._cur, name)

    real = store.cursor
    store.cursor = lambda: Counting(real())
    engine.evaluate(T0)
    # planning the scans checks once that the subqueries of AllocatedGpuIdle and
    # AllocatedSliceIdle run on their own, and that each scan's id path binds
    explained = [q for q in executed if q.startswith("EXPLAIN ")]
    ids = [q for q in explained if q.startswith("EXPLAIN SELECT * FROM (SELECT")]
    assert [q for q in explained if q not in ids] == [
        "EXPLAIN SELECT gpu_uuid FROM assignments WHERE slice_id IS NULL\n"
        "           AND valid_from <= $now AND (valid_to IS NULL OR valid_to > $now)",
        "EXPLAIN SELECT slice_id FROM assignments WHERE slice_id IS NOT NULL\n"
        "           AND valid_from <= $now AND (valid_to IS NULL OR valid_to > $now)",
    ]
    assert [t for t in ("gpu_values", "slice_values", "link_values") for q in ids if t in q] == [
        "gpu_values",
        "slice_values",
        "link_values",
    ]
    executed.clear()
    engine.evaluate(T0 + STEP)
    scans = engine._scans
    shared = sum(len(s.rules) for s in scans)
    assert len(scans) == 4 and shared == 11
    # each id-path scan asks the dimension's fingerprint (and, had it changed, whether
    # each id is its own key) in its transaction
    fingerprints = [q for q in executed if q.startswith("SELECT count(*), max(")]
    assert len(fingerprints) == 3
    # each query on a cursor of its own, dense ids grouped direct-indexed on it
    dense = [q for q in executed if q == "SET perfect_ht_threshold = 18"]
    assert len(dense) == len(scans) + len(rules) - shared
    assert len(executed) == len(scans) + len(fingerprints) + len(rules) - shared + len(dense)
    assert len(scans) + len(rules) - shared < len(rules)


def test_delivery_gets_fired_resends_and_resolutions_and_silences_mute_firing():
    store = setup_store()
    sink = Collected()
    rules = RULES.replace('for = "1m"', 'for = "0s"').replace('keep_firing_for = "30s"', "")
    engine = AlertEngine(
        store, load_rules_text(rules, "t.toml"), interval_s=15, resend_s=30, delivery=sink
    )

    def tick(i, **values):
        t = T0 + i * STEP
        itl(store, t, **values)
        asyncio.run(engine.tick(t))

    tick(0, **{"ep-a": 80.0, "ep-b": 90.0})
    tick(1, **{"ep-a": 80.0, "ep-b": 90.0})
    tick(2, **{"ep-a": 80.0, "ep-b": 90.0})
    sid = silence(
        store,
        by="ops@example",
        until=T0 + 10 * STEP,
        scope_key="ep-b",
        comment="maintenance",
        now=T0 + 2 * STEP,
    )
    tick(3, **{"ep-a": 80.0, "ep-b": 90.0})
    tick(4, **{"ep-a": 80.0, "ep-b": 90.0})
    tick(5, **{"ep-a": 10.0, "ep-b": 10.0})
    sent = {(now - T0).total_seconds(): sorted(items) for now, items in sink.sent}
    assert sent == {
        0.0: [("fired", "SlowTokens", "ep-a"), ("fired", "SlowTokens", "ep-b")],
        30.0: [("resend", "SlowTokens", "ep-a"), ("resend", "SlowTokens", "ep-b")],
        60.0: [("resend", "SlowTokens", "ep-a")],  # ep-b silenced since 30 s
        75.0: [("resolved", "SlowTokens", "ep-a"), ("resolved", "SlowTokens", "ep-b")],
    }
    assert [s.silence_id for s in active_silences(store.cursor(), T0 + 5 * STEP)] == [sid]


def test_silence_and_acknowledgement_api():
    store = setup_store()
    engine = AlertEngine(
        store, load_rules_text(RULES.replace('for = "1m"', 'for = "0s"'), "t.toml")
    )
    run(store, engine, [{"ep-a": 80.0, "ep-b": 90.0}])
    now = T0 + STEP
    alerts = {a["scope_key"]: a for a in open_alerts(store.cursor(), now)}
    assert set(alerts) == {"ep-a", "ep-b"} and alerts["ep-a"]["muted_by"] is None
    ack = acknowledge(
        store, alerts["ep-a"]["alert_id"], by="alice", until=now + timedelta(hours=1), now=now
    )
    sil = silence(store, by="bob", rule="SlowTokens", until=now + timedelta(minutes=5), now=now)
    alerts = {a["scope_key"]: a for a in open_alerts(store.cursor(), now)}
    assert (alerts["ep-a"]["muted_by_kind"], alerts["ep-a"]["muted_by"]) == ("ack", "alice")
    assert (alerts["ep-b"]["muted_by_kind"], alerts["ep-b"]["muted_by"]) == ("silence", "bob")
    expire(store, sil, now=now + timedelta(minutes=1))
    later = now + timedelta(minutes=2)
    assert [s.silence_id for s in active_silences(store.cursor(), later)] == [ack]
    assert (
        store.cursor().execute("SELECT count(*) FROM silences").fetchone()[0] == 2
    )  # history kept
    with pytest.raises(SilenceError, match="needs a rule or a scope key"):
        silence(store, by="bob", until=later + timedelta(hours=1), now=later)
    with pytest.raises(SilenceError, match="is not after now"):
        silence(store, by="bob", rule="X", until=later, now=later)
    with pytest.raises(SilenceError, match="no alert 'nope'"):
        acknowledge(store, "nope", by="alice", until=later + timedelta(hours=1), now=later)
    with pytest.raises(SilenceError, match="needs who"):
        acknowledge(store, alerts["ep-a"]["alert_id"], by=" ", until=later + timedelta(hours=1))


def test_alert_history_is_plain_sql():
    store = setup_store()
    engine = AlertEngine(store, load_rules_text(RULES, "t.toml"))
    run(store, engine, [{"ep-a": 80.0}] * 5 + [{"ep-a": 10.0}] * 4)
    row = (
        store.cursor()
        .execute(
            "SELECT rule, scope_key, epoch(resolved_at - fired_at),"
            " json_extract_string(labels, '$.team')"
            " FROM alerts WHERE state = 'resolved'"
        )
        .fetchone()
    )
    # fired at 60 s; the condition stops at 75 s and is kept firing 30 s more
    assert row == ("SlowTokens", "ep-a", 45.0, "serving")
    (h,) = alert_history(store.cursor(), since=T0)
    assert (h["rule"], h["state"], h["fired_at"], h["peak_value"]) == (
        "SlowTokens",
        "resolved",
        T0 + 4 * STEP,
        80.0,
    )
    assert alert_history(store.cursor(), since=T0 + 5 * STEP) == []


def test_the_alert_package_never_imports_textual():
    import subprocess
    import sys

    code = (
        "import sys, fleettui.alerts.engine, fleettui.alerts.config, fleettui.alerts.replay\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_failed_write_is_retried_with_the_next_cycle():
    store = setup_store()
    engine = AlertEngine(store, load_rules_text(RULES, "t.toml"))
    real_write = store.write
    calls = []

    def flaky(batches):
        calls.append(1)
        if len(calls) == 1:
            raise duckdb.IOException("IO Error: disk full")
        return real_write(batches)

    store.write = flaky
    real_write(
        [make_batch("latency_samples", {"ts": [T0], "endpoint": ["ep-a"], "itl_p99_ms": [80.0]})]
    )
    cycle = engine.evaluate(T0)
    assert "disk full" in cycle.errors[0]
    assert store.cursor().execute("SELECT count(*) FROM alerts").fetchall() == [(0,)]
    cycle = engine.evaluate(T0 + STEP)  # nothing changed in this cycle but the retry
    assert cycle.errors == []
    assert store.cursor().execute("SELECT scope_key, state FROM alerts").fetchall() == [
        ("ep-a", "pending")
    ]


def test_a_sql_rule_returning_text_values_does_not_break_the_cycle():
    store = setup_store()
    rules = load_rules_text(
        '[[rules]]\nname = "Odd"\nscope = "endpoint"\n'
        'sql = "SELECT endpoint AS scope_key, model AS value FROM endpoints"\n',
        "t.toml",
    )
    engine = AlertEngine(store, rules)
    engine.evaluate(T0)
    assert sorted((a.scope_key, a.last_value) for a in engine.open_alerts()) == [
        ("ep-a", None),
        ("ep-b", None),
    ]
