"""The first alert cycle after a start, and new alerts inserted rather than merged.

An engine that starts on a store with history opens every offending key at once
(20,471 alerts at 100,000 GPUs). Those rows are new to the `alerts` table, so the
engine hands them to the store as a batch of new keys (`Batch.new_keys`), which
is inserted instead of merged; a key that is there after all is merged as
before (storage/store.py: the ids looked up since 0027 dropped the primary key).

Checked here: the first cycle's rows, column for column, against what each
rule's own query offends (labels, annotations, state, times, values), and its
deliveries; every cycle of a replay with a restart against a twin store that
only merges (the write before new keys); the store's fallback; and the rendering
and JSON of many alerts at once against `render` and `json.dumps`.
"""

import json
from datetime import datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest

from collectors.sim.faults import DEFAULT_FAULTS
from collectors.sim.source import SimSource
from fleettui.alerts import engine as engine_module
from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import default_rules, render, render_many
from fleettui.alerts.shared import thresholds
from storage import store as store_mod
from storage.batch import Batch, make_batch
from storage.store import Store
from tests.test_alert_shared import STEP_S, T0, sample

START_S = 990.0  # the engine starts late: every fault's alert is open at once

COLS = (
    "alert_id, rule, scope, scope_key, severity, state, started_at, fired_at, resolved_at,"
    " last_active_at, evaluated_at, peak_value, last_value, threshold, labels, annotations"
)


class MergeOnly(Store):
    """The store as it wrote before new keys: every batch merged on its key."""

    def _write_merged(self, merged, *, insert_new):
        return super()._write_merged(merged, insert_new=False)


class Counting(Store):
    """The store as it writes now, counting attempts (a second one is the fallback) and
    batches of new keys merged (an id said to be new was there: `_insert_new_alerts`)."""

    attempts = 0
    new_keys_merged = 0

    def _write_merged(self, merged, *, insert_new):
        self.attempts += 1
        return super()._write_merged(merged, insert_new=insert_new)

    def _insert_sql(self, b):  # type: ignore[override]
        self.new_keys_merged += b.new_keys
        return Store._insert_sql(b)


class Sink:
    """A delivery: the engine fills each cycle's notifications for it."""

    async def send(self, notifications, now):  # pragma: no cover - evaluate() never sends
        pass

    async def close(self, timeout_s=2.0):  # pragma: no cover
        pass


def fill(stores: list[Store], until_s: float) -> SimSource:
    src = SimSource(faults=DEFAULT_FAULTS, period_s=None, start=T0, interval_s=STEP_S)
    for i in range(int(until_s // STEP_S) + 1):
        batches = sample(src, T0 + timedelta(seconds=i * STEP_S))
        for s in stores:
            s.write(batches)
    return src


def table(store: Store) -> list[tuple]:
    return store.cursor().execute(f"SELECT {COLS} FROM alerts ORDER BY alert_id").fetchall()


def expected_first_cycle(found: dict, rules, now: datetime) -> list[tuple]:
    """The rows the first cycle must write, from each rule's own offending rows, by the
    engine's rules (docs/alerts.md) written out plainly."""
    out = []
    for rule in rules:
        cols, rows = found[rule.name]
        seen = set()
        for row in rows:
            r = dict(zip(cols, row, strict=True))
            if r["scope_key"] is None or str(r["scope_key"]) in seen:
                continue
            key = str(r["scope_key"])
            seen.add(key)
            labels = {
                c: str(v)
                for c, v in r.items()
                if c not in ("scope_key", "value", "threshold") and v is not None
            }
            labels.update(rule.labels)
            labels.update(alertname=rule.name, severity=rule.severity, scope=rule.scope)
            labels["scope_key"] = key
            value = None if r["value"] is None else float(r["value"])
            thr = None if r.get("threshold") is None else float(r["threshold"])
            variables = {
                "value": value,
                "threshold": thr,
                "scope_key": key,
                "scope": rule.scope,
                "rule": rule.name,
                "severity": rule.severity,
                "labels": labels,
            }
            annotations = {k: render(t, variables) for k, t in rule.annotations.items()}
            firing = rule.for_s <= 0
            out.append(
                (
                    f"{rule.name}|{key}|{now.isoformat(timespec='seconds')}",
                    rule.name,
                    rule.scope,
                    key,
                    rule.severity,
                    "firing" if firing else "pending",
                    now,
                    now if firing else None,
                    None,
                    now,
                    now,
                    value,
                    value,
                    thr,
                    json.dumps(labels, sort_keys=True),
                    json.dumps(annotations, sort_keys=True),
                )
            )
    return sorted(out)


def test_the_first_cycle_writes_and_delivers_every_offending_key():
    store = Store.open(":memory:")
    fill([store], START_S)
    now = T0 + timedelta(seconds=START_S)
    rules = default_rules()
    found = AlertEngine(store, rules, interval_s=STEP_S, shared=False).offending(now)
    assert not [v for v in found.values() if isinstance(v, str)]
    want = expected_first_cycle(found, rules, now)
    assert len(want) >= 12 and {r[5] for r in want} == {"pending", "firing"}

    engine = AlertEngine(store, rules, interval_s=STEP_S, delivery=Sink())
    cycle = engine.evaluate(now)
    assert cycle.errors == []
    assert table(store) == want
    assert sorted((n.reason, n.alert.alert_id) for n in cycle.notifications) == sorted(
        ("fired", r[0]) for r in want if r[5] == "firing"
    )
    # what was delivered is what was stored
    stored = {r[0]: (r[14], r[15]) for r in want}
    for n in cycle.notifications:
        a = n.alert
        got = (json.dumps(a.labels, sort_keys=True), json.dumps(a.annotations, sort_keys=True))
        assert got == stored[a.alert_id]
    store.close()


def test_every_cycle_stores_and_delivers_what_merging_alone_did_across_a_restart():
    fast, merged = Counting.open(":memory:"), MergeOnly.open(":memory:")
    start_s = 90.0  # faults go on starting and ending: alerts open and end every cycle
    src = fill([fast, merged], start_s)
    rules = default_rules()

    def engines():
        return [AlertEngine(s, rules, interval_s=STEP_S, delivery=Sink()) for s in (fast, merged)]

    pair = engines()
    inserted, states = 0, set()
    for i in range(14):
        now = T0 + timedelta(seconds=start_s + i * STEP_S)
        if i:
            batches = sample(src, now)
            fast.write(batches)
            merged.write(batches)
        if i == 7:  # a restart: open alerts are read back, and are not new rows
            pair = engines()
        before = fast.attempts
        cycles = [e.evaluate(now) for e in pair]
        # one write, no fallback: only alerts the table lacks were said to be new
        assert fast.attempts == before + 1, f"cycle {i}"
        assert fast.new_keys_merged == 0, f"cycle {i}"
        assert cycles[0].errors == cycles[1].errors == []
        assert table(fast) == table(merged), f"cycle {i}"
        sent = [sorted((n.reason, n.alert.alert_id) for n in c.notifications) for c in cycles]
        assert sent[0] == sent[1], f"cycle {i}"
        if i:
            inserted += sum(1 for a, f, to in cycles[0].transitions if f == "inactive")
        states |= {r[5] for r in table(fast)}
    assert inserted > 0  # new alerts after the first cycle too
    # the replay fired and resolved alerts besides opening them
    assert states == {"pending", "firing", "resolved", "inactive"}
    fast.close()
    merged.close()


def alert_row(alert_id: str, state: str, value: float | None, at: datetime) -> dict:
    return {
        "alert_id": [alert_id],
        "rule": ["R"],
        "scope": ["gpu"],
        "scope_key": [alert_id.split("|")[1]],
        "severity": ["warning"],
        "state": [state],
        "started_at": [T0],
        "fired_at": [at if state == "firing" else None],
        "resolved_at": [None],
        "last_active_at": [at],
        "evaluated_at": [at],
        "peak_value": [value],
        "last_value": [value],
        "threshold": [80.0],
        "labels": ["{}"],
        "annotations": ["{}"],
    }


def test_a_key_said_to_be_new_that_is_there_is_merged_in_the_same_write():
    """An engine restarted with its clock behind may raise an alert id the table holds
    (`rule|key|second`); the store finds it and merges the batch instead, as a MERGE
    alone would, with the other batches of the write."""
    stores = [Store.open(":memory:"), MergeOnly.open(":memory:")]
    at = T0 + timedelta(minutes=1)
    for s in stores:
        s.write([make_batch("alerts", alert_row("R|GPU-a|x", "firing", 90.0, at))])
    later = at + timedelta(seconds=15)
    cols = {k: v * 2 for k, v in alert_row("R|GPU-b|x", "pending", 85.0, later).items()}
    cols["alert_id"] = ["R|GPU-a|x", "R|GPU-b|x"]
    cols["scope_key"] = ["GPU-a", "GPU-b"]
    cols["fired_at"] = [None, None]  # NULL keeps the stored time (coalesce), as MERGE does
    batch = make_batch("alerts", cols)
    gpu = make_batch("hosts", {"host": ["h1"], "first_seen": [at], "last_seen": [later]})
    for s in stores:
        assert s.write([Batch("alerts", batch.data, new_keys=True), gpu]) == 3
    assert table(stores[0]) == table(stores[1])
    got = {r[0]: (r[5], r[7], r[12]) for r in table(stores[0])}
    assert got == {"R|GPU-a|x": ("pending", at, 85.0), "R|GPU-b|x": ("pending", None, 85.0)}
    assert stores[0].cursor().execute("SELECT count(*) FROM hosts").fetchone() == (1,)


def test_new_keys_are_inserted_only_where_the_key_is_the_primary_key():
    """The insert relies on the primary key to refuse a key that is there, except in
    `alerts` (no key since 0027: tests/test_alerts_no_key.py)."""
    store = Store.open(":memory:")
    pks = {
        (t, tuple(cols))
        for t, cols in store.cursor()
        .execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints()"
            " WHERE constraint_type = 'PRIMARY KEY'"
        )
        .fetchall()
    }
    assert store_mod._PRIMARY_KEYED == {"silences"}
    for t in store_mod._PRIMARY_KEYED:
        assert (t, store_mod.UPSERT_KEYS[t]) in pks, t
    assert not any(t == "alerts" for t, _ in pks)
    store.close()


@pytest.mark.parametrize("new_keys", [True, False])
def test_a_batch_of_new_keys_is_inserted(monkeypatch, new_keys):
    """The statements the store runs for a batch of new alerts: the look-up of its ids
    and an INSERT, not a MERGE."""
    store = Store.open(":memory:")
    seen: list[str] = []
    writer = store.writer

    def spying_writer():
        ctx = writer()
        cur = ctx.__enter__()

        class Spy:
            def __getattr__(self, name):
                return getattr(cur, name)

            def execute(self, sql, *a):
                seen.append(sql.split()[0])
                return cur.execute(sql, *a)

        class Ctx:
            def __enter__(self):
                return Spy()

            def __exit__(self, *exc):
                return ctx.__exit__(*exc)

        return Ctx()

    monkeypatch.setattr(store, "writer", spying_writer)
    b = make_batch("alerts", alert_row("R|GPU-a|x", "pending", 1.0, T0))
    store.write([Batch("alerts", b.data, new_keys=new_keys)])
    assert seen == (["SELECT", "INSERT"] if new_keys else ["MERGE"])
    store.close()


# -- a rule's alerts rendered and encoded together (the first cycle writes 20k at 100k) --


class Key(str):
    """A str subclass whose str() differs from its text (render calls str())."""

    def __str__(self) -> str:
        return "key:" + super().__str__()


RENDER_TEMPLATES = [
    '{{ $scope_key }} on {{ $labels.host }} at {{ $value | printf "%.1f" }} of {{ $threshold }}',
    '{{ $value }} {{ $threshold | printf "%.0f" }} {{ $rule }}/{{ $scope }}/{{ $severity }}',
    "no placeholder",
    "",
    '{{ $value | printf "%d" }} {{ $labels.missing }}{{ $labels.n }}',  # %d of NaN: str()
    '{{ $value | printf "%x" }}|{{ $scope_key | printf "%5s" }}',  # %x of a float: str()
    "{{ $labels }} {{ $nope }}{{ $value.x }}",  # a dict, an unknown name, an attr of a float
]
RENDER_VALUES = [1.25, None, float("nan"), -0.0, 1e300, 3.0, 0.05, 12345.678]


def render_variables(i: int) -> dict:
    v = RENDER_VALUES[i % len(RENDER_VALUES)]
    labels = {"host": f"h{i % 3}", "n": i if i % 2 else None}
    if i % 4 == 0:
        labels = {"host": "\x1b[31m<é>"}
    return {
        "value": v,
        "threshold": RENDER_VALUES[(i + 3) % len(RENDER_VALUES)],
        "scope_key": Key(f"GPU-{i}") if i % 5 == 0 else f"GPU-{i}",
        "scope": "gpu",
        "rule": "R",
        "severity": "warning",
        "labels": labels,
    }


@pytest.mark.parametrize("template", RENDER_TEMPLATES)
def test_render_many_fills_a_template_as_render_does_for_each_alert(template):
    rows = [render_variables(i) for i in range(24)]
    got = render_many(template, lambda name: [r[name] for r in rows], len(rows))
    assert got == [render(template, r) for r in rows]
    assert all(type(s) is str for s in got)
    # one alert whose value needs the fallback (a %d of NaN) among many that do not
    rows = [dict(r, value=2.5) for r in rows] + [dict(rows[0], value=float("nan"))]
    got = render_many(template, lambda name: [r[name] for r in rows], len(rows))
    assert got == [render(template, r) for r in rows]


JSON_DICTS = [
    {},
    {"b": "1", "a": "2", "alertname": "R"},
    {"a": "2", "b": "1", "alertname": "R"},  # the same keys in another order
    {"b": "x", "a": "y", "alertname": "R"},
    {"b": 'q"uote\\', "a": "\x00\n\u2028", "alertname": "R"},
    {"b": "é日本\ud800", "a": "", "alertname": "R"},
    {"b": Key("sub"), "a": "2", "alertname": "R"},  # a str subclass
    {"b": 1, "a": None, "alertname": 2.5},  # not strings: the encoder's own output
    {2: "two", 1: "one"},  # keys that are not strings
    {"summary": "x", "description": "same"},
    {"summary": "y", "description": "same"},
]


def test_json_many_encodes_each_dict_as_json_dumps_sorted():
    dicts = JSON_DICTS * 3 + [{"k": f"v{i}", "c": "const"} for i in range(20)]
    got = engine_module._json_many(dicts)
    assert got == [json.dumps(d, sort_keys=True) for d in dicts]
    assert engine_module._json_many([]) == []
    # one dict of many with a value that is not a string
    dicts = [{"k": f"v{i}", "c": "const"} for i in range(5)] + [{"k": 5, "c": "const"}]
    assert engine_module._json_many(dicts) == [json.dumps(d, sort_keys=True) for d in dicts]


def test_json_many_encodes_long_runs_and_interleaved_keys_alike():
    # short runs, the ends alike: grouped by keys
    dicts = [{"a": "1", "b": "2"}, {"a": "3", "c": "4"}, {"b": "5", "a": "6"}, {"a": "7", "b": "8"}]
    assert engine_module._json_many(dicts) == [json.dumps(d, sort_keys=True) for d in dicts]
    # long runs (each rule's alerts one after the other): encoded run by run, in order
    run = 2 * engine_module._RUN_MIN
    dicts = (
        [{"a": f"a{i}", "b": "same"} for i in range(run)]
        + [{"a": f"x{i}", "c": "\u00e9"} for i in range(run + 3)]
        + [{"b": f"b{i}", "a": "same"} for i in range(run - 1)]
        + [{"a": "one alone"}]
        + [{"a": i, "b": "not all str"} for i in range(run)]
    )
    assert 5 * engine_module._RUN_MIN <= len(dicts)  # 5 runs, long enough on average
    assert engine_module._json_many(dicts) == [json.dumps(d, sort_keys=True) for d in dicts]


class Alert:
    """What `_json_of` reads of an instance."""

    def __init__(self, labels: dict, annotations: dict):
        self.labels, self.annotations = labels, annotations


def test_json_of_encodes_new_alerts_and_reuses_only_text_whose_dict_is_unchanged():
    engine = AlertEngine.__new__(AlertEngine)
    engine._json = {}
    ids = [f"R|k{i}|t" for i in range(6)]
    alerts = [Alert({"host": f"h{i}", "alertname": "R"}, {"summary": f"v{i}"}) for i in range(6)]

    def check(got):
        labels, notes = got
        assert labels == [json.dumps(a.labels, sort_keys=True) for a in alerts]
        assert notes == [json.dumps(a.annotations, sort_keys=True) for a in alerts]
        for i, a in zip(ids, alerts, strict=True):  # what the next write compares with
            remembered = engine._json[i]
            assert remembered[0] is a.labels and remembered[2] is a.annotations
            assert remembered[1] == json.dumps(a.labels, sort_keys=True)
            assert remembered[3] == json.dumps(a.annotations, sort_keys=True)

    check(engine._json_of(ids, alerts))  # all new: encoded and remembered
    # a memo whose texts are marked: a text reused shows the mark
    engine._json = {i: (m[0], m[1] + "*", m[2], m[3] + "*") for i, m in engine._json.items()}
    alerts[1].annotations = {"summary": "new value"}  # re-rendered: a new dict
    alerts[2].labels = {"host": "moved", "alertname": "R"}  # relabelled: both encoded
    alerts[3].labels = dict(alerts[3].labels)  # an equal dict, but another object
    alerts[4].annotations = {"summary": "v4"}  # the same text, another object
    labels, notes = engine._json_of(ids, alerts)
    assert labels[0].endswith("*") and notes[0].endswith("*")  # unchanged: both reused
    assert labels[1].endswith("*") and not notes[1].endswith("*")  # labels reused
    assert labels[4].endswith("*") and not notes[4].endswith("*")
    assert labels[5].endswith("*") and notes[5].endswith("*")
    for i in (2, 3):
        assert labels[i] == json.dumps(alerts[i].labels, sort_keys=True)
    for i in (1, 2, 3, 4):
        assert notes[i] == json.dumps(alerts[i].annotations, sort_keys=True)
    # the alerts that changed are remembered with their new dicts and texts
    for i in (1, 2, 3, 4):
        remembered = engine._json[ids[i]]
        assert remembered[0] is alerts[i].labels and remembered[2] is alerts[i].annotations
        assert remembered[3] == json.dumps(alerts[i].annotations, sort_keys=True)
    engine._json = {}  # a new engine: nothing remembered
    check(engine._json_of(ids, alerts))


@pytest.mark.parametrize(
    "values, arrow_type",
    [
        ([Decimal("90.0")] * 4, pa.decimal128(3, 1)),  # a literal threshold: one value
        ([Decimal("0.1"), Decimal("0.1"), None], pa.decimal128(2, 1)),  # one value and NULL
        ([Decimal("0.3"), Decimal("12.7"), Decimal("0.3")], pa.decimal128(3, 1)),
        ([], pa.decimal128(3, 1)),
        ([90.0, None, float("nan"), 0.1], pa.float64()),  # from the inventory: DOUBLE
    ],
)
def test_a_threshold_column_is_split_as_the_engine_steps_each_value(values, arrow_type):
    col = pa.chunked_array([pa.array(values[:2], arrow_type), pa.array(values[2:], arrow_type)])
    got = thresholds(col)
    # what _step_rule makes of each value as its own query returns it
    want = [engine_module._number(v) for v in col.to_pylist()]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert type(g) is type(w)
        assert g == w or (g != g and w != w)  # NaN stays NaN
