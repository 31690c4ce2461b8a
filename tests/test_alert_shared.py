"""Shared scans (fleettui/alerts/shared.py) give what every rule's own query gives.

The simulated fleet with the demo's faults is replayed once; at each step two
engines evaluate the same store, one with shared scans and one running each
rule's own query (the evaluator before shared scans; TenantAllocationIdle as its
SQL was written before). Their open alerts (rule,
key, state, value, threshold, peak, labels) and transitions must be the same
at every cycle. Besides the default pack, a few rules exercise what the
default pack does not: `count` over a narrower window than its scan (a key
with rows only in the wider one), `rate`, and a threshold column of the scope's
inventory. Two mutants of the shared SQL must be caught.
"""

import dataclasses
import math
import re
from datetime import datetime, timedelta

import pytest

from collectors.sim.faults import DEFAULT_FAULTS
from collectors.sim.source import SimSource
from fleettui.alerts import shared
from fleettui.alerts.engine import AlertEngine, Instance
from fleettui.alerts.rules import default_rules, load_rules_text
from storage.batch import Batch, make_batch
from storage.store import Store

T0 = datetime(2026, 11, 26, 3, 0, 0)
STEP_S = 30.0
UNTIL_S = 990.0  # past AllocatedGpuIdle's fault start + window + `for` (30 + 885 s)

EXTRA = """
[[rules]]
name = "GpuFewSamples"
scope = "gpu"
expr = { metric = "util_pct", agg = "count", over = "1m", op = "<", threshold = 3 }

[[rules]]
name = "LinkErrorRate"
scope = "link"
expr = { metric = "errors", agg = "rate", over = "1m", op = ">", threshold = 0.01 }

[[rules]]
name = "GpuMemTotalKnown"
scope = "gpu"
for = "1m"
expr = { metric = "s.mem_total_bytes", agg = "max", over = "2m", op = ">=", threshold = "mem_total_bytes" }
"""


def rules():
    return default_rules() + load_rules_text(EXTRA, "extra.toml")


# TenantAllocationIdle as it was written before it grouped each GPU's and slice's rows
# before joining the allocations (r5): the reference engine runs this text.
TENANT_IDLE_BEFORE = """
WITH alloc AS (
    SELECT tenant, gpu_uuid, slice_id FROM assignments
    WHERE valid_from <= $now AND (valid_to IS NULL OR valid_to > $now)
), busiest AS (  -- per allocated GPU or slice: NULL when its utilisation is unknown
    SELECT a.tenant, s.gpu_uuid AS target, max(s.util_pct) AS util_pct
    FROM gpu_samples s JOIN alloc a ON a.gpu_uuid = s.gpu_uuid AND a.slice_id IS NULL
    WHERE s.ts > $now - INTERVAL 2 MINUTE AND s.ts <= $now
    GROUP BY a.tenant, s.gpu_uuid
    UNION ALL
    SELECT a.tenant, s.slice_id AS target, max(s.util_pct) AS util_pct
    FROM slice_samples s JOIN alloc a ON a.slice_id = s.slice_id
    WHERE s.ts > $now - INTERVAL 2 MINUTE AND s.ts <= $now
    GROUP BY a.tenant, s.slice_id
)
-- "every target idle" only when every target's utilisation is known
SELECT tenant AS scope_key, max(util_pct) AS value, 5.0 AS threshold
FROM busiest GROUP BY tenant HAVING max(util_pct) < 5 AND count(util_pct) = count(*)
"""


def reference_rules():
    return [
        dataclasses.replace(r, query=TENANT_IDLE_BEFORE.strip())
        if r.name == "TenantAllocationIdle"
        else r
        for r in rules()
    ]


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def state(engine: AlertEngine) -> dict[tuple[str, str], Instance]:
    return {(a.rule, a.scope_key): a for a in engine.open_alerts()}


def differences(own: AlertEngine, new: AlertEngine) -> list[str]:
    a, b = state(own), state(new)
    out = [f"only with own queries: {k}" for k in sorted(a.keys() - b.keys())]
    out += [f"only with shared scans: {k}" for k in sorted(b.keys() - a.keys())]
    for k in sorted(a.keys() & b.keys()):
        x, y = a[k], b[k]
        if (x.state, x.started_at, x.fired_at, x.labels) != (
            y.state,
            y.started_at,
            y.fired_at,
            y.labels,
        ):
            out.append(f"{k}: {x.state}/{x.labels} vs {y.state}/{y.labels}")
        for f in ("last_value", "threshold", "peak_value"):
            if not close(getattr(x, f), getattr(y, f)):
                out.append(f"{k}: {f} {getattr(x, f)} vs {getattr(y, f)}")
    return out


def sample(src: SimSource, now: datetime) -> list[Batch]:
    """The sim's batches at `now` with the collector's run row (CollectorSilent and
    CollectorSlow read `collector_runs`)."""
    batches = src.sample(now).batches
    batches.append(
        make_batch(
            "collector_runs",
            {
                "ts": [now],
                "collector": ["sim"],
                "duration_ms": [40.0],
                "ok": [True],
                "rows": [sum(b.rows for b in batches)],
                "skipped": [0],
                "interval_s": [STEP_S],
            },
        )
    )
    return batches


def replay(*, first_only: bool = False) -> tuple[list[str], set[str], int]:
    """Step both engines over the faults; (differences, rules that fired, shared scans).
    `first_only`: stop at the first cycle that differs."""
    store = Store.open(":memory:")
    src = SimSource(faults=DEFAULT_FAULTS, period_s=None, start=T0, interval_s=STEP_S)
    own = AlertEngine(store, reference_rules(), interval_s=STEP_S, shared=False)
    new = AlertEngine(store, rules(), interval_s=STEP_S)
    diffs: list[str] = []
    fired: set[str] = set()
    for i in range(int(UNTIL_S // STEP_S) + 1):
        now = T0 + timedelta(seconds=i * STEP_S)
        store.write(sample(src, now))
        c_own, c_new = own.evaluate(now), new.evaluate(now)
        assert c_own.errors == [] and c_new.errors == [] and c_new.scan_errors == []
        moves = [sorted((a.alert_id, f, to) for a, f, to in c.transitions) for c in (c_own, c_new)]
        if moves[0] != moves[1]:
            diffs.append(f"t+{i * STEP_S:g}s transitions: {moves[0]} vs {moves[1]}")
        diffs += [f"t+{i * STEP_S:g}s {d}" for d in differences(own, new)]
        fired |= {a.rule for a, _, to in c_new.transitions if to == "firing"}
        if diffs and first_only:
            break
    store.close()
    return diffs, fired, len(new._scans)


def test_shared_scans_fire_as_each_rules_own_query():
    diffs, fired, n_scans = replay()
    assert diffs == []
    # gpu, link and endpoint rules each read their table once; the slice rule alone
    # is a scan for the id path (grouped by slice_values' integer id)
    assert n_scans == 4
    shared_rules = {r.name for r in rules() if r.shared is not None}
    # every shared rule fired at least once, so the comparison covered it
    assert shared_rules - fired == set(), shared_rules - fired
    assert {"TenantAllocationIdle", "GpuNotReporting", "HostTelemetryStale"} <= fired


@pytest.mark.parametrize(
    "mutant",
    [
        # a rule's narrower window read as the scan's wider one
        lambda sql: sql.replace(
            ", (s.ts > $now", ", (s.ts >= $now - INTERVAL 1 HOUR OR s.ts > $now"
        ),
        # a key with no rows in a rule's window kept (count 0 is not a value)
        lambda sql: re.sub(r" AND a\.p\d+ > 0", "", sql),
    ],
    ids=["window", "presence"],
)
def test_a_mutant_of_the_shared_sql_is_caught(monkeypatch, mutant):
    build = shared.Scan.build

    def mutated(self, *args):
        build(self, *args)
        for name in ("sql", "direct_sql"):  # whichever the scan runs
            sql = getattr(self, name)
            setattr(self, name, mutant(sql))
            # one window: the endpoint and slice scans; no direct query for the endpoints
            assert getattr(self, name) != sql or self.table in ("latency_samples", "slice_samples")

    monkeypatch.setattr(shared.Scan, "build", mutated)
    diffs, _, _ = replay(first_only=True)
    assert diffs != []


def test_a_where_on_the_key_alone_is_asked_per_key_and_a_mutant_of_it_is_caught(monkeypatch):
    """AllocatedGpuIdle's `s.gpu_uuid IN (SELECT ... assignments ...)` is asked of the
    grouped keys, not of every row; turned around it must show."""
    build = shared.Scan.build
    built: list[str] = []

    def mutated(self, *args):
        build(self, *args)
        built.extend((self.sql, self.direct_sql))
        for name in ("sql", "direct_sql"):
            sql = getattr(self, name).replace(
                "(a.gpu_uuid IN (SELECT", "(a.gpu_uuid NOT IN (SELECT"
            )
            setattr(self, name, sql)

    monkeypatch.setattr(shared.Scan, "build", mutated)
    diffs, _, _ = replay(first_only=True)
    assert any("(a.gpu_uuid IN (SELECT gpu_uuid FROM assignments" in sql for sql in built)
    assert not any("s.gpu_uuid IN" in sql for sql in built)
    assert diffs != []


@pytest.mark.parametrize(
    "where",
    [
        "s.gpu_uuid IN (SELECT gpu_uuid FROM assignments) AND s.util_pct > 3",  # more than the key
        "s.gpu_uuid IN (SELECT gpu_uuid FROM assignments) OR (s.util_pct > 3)",
        "s.gpu_uuid IN (SELECT gpu_uuid FROM assignments WHERE tenant = s.host)",  # correlated
        "s.gpu_uuid IN (SELECT gpu_uuid FROM assignments WHERE tenant = host)",  # unqualified
        "s.host IN (SELECT host FROM hosts)",  # not the scope's key
    ],
)
def test_a_where_that_reads_the_row_stays_per_row(where):
    store = Store.open(":memory:")
    engine = AlertEngine(store, [], interval_s=STEP_S)
    assert shared.key_level(where, ("gpu_uuid",), engine._runs_alone) is None
    ok = "s.gpu_uuid IN (SELECT gpu_uuid FROM assignments WHERE valid_from <= $now)"
    assert shared.key_level(ok, ("gpu_uuid",), engine._runs_alone) == ok.replace("s.", "a.", 1)
    assert shared.key_level(ok, ("gpu_uuid",), None) is None  # nothing to check it with
    store.close()


def test_a_failing_shared_scan_falls_back_to_each_rules_query(monkeypatch):
    build = shared.Scan.build

    def broken(self, *args):
        build(self, *args)
        for name in ("sql", "direct_sql"):
            sql = getattr(self, name).replace(" gpu_values", " no_such_table")
            setattr(self, name, sql)

    monkeypatch.setattr(shared.Scan, "build", broken)
    store = Store.open(":memory:")
    engine = AlertEngine(store, rules(), interval_s=STEP_S)
    cycle = engine.evaluate(T0)
    assert len(cycle.scan_errors) == 1 and "no_such_table" in cycle.scan_errors[0]
    assert cycle.errors == []  # the gpu rules ran their own queries
    assert {"GpuHot", "GpuMemoryHigh"} <= set(cycle.rule_ms)
    store.close()


HOT = """
[[rules]]
name = "Hot"
scope = "gpu"
for = "1m"
annotations.summary = "{{ $labels.host }}: {{ $value | printf \\"%.1f\\" }} C"
expr = { metric = "temp_c", agg = "max", over = "1m", op = ">", threshold = 80 }
"""


def test_annotations_and_labels_written_each_cycle_follow_value_and_rule_text():
    """The engine re-renders an alert's annotations only when its value, threshold or
    templates changed, and reuses the JSON it wrote: what is stored must still follow."""
    store = Store.open(":memory:")
    engine = AlertEngine(store, load_rules_text(HOT, "hot.toml"), interval_s=STEP_S)

    def step(i: int, temp: float) -> tuple:
        now = T0 + timedelta(seconds=i * STEP_S)
        store.write(
            [
                make_batch(
                    "gpu_samples",
                    {"ts": [now], "gpu_uuid": ["GPU-a"], "host": ["h1"], "temp_c": [temp]},
                )
            ]
        )
        assert engine.evaluate(now).errors == []
        return (
            store.cursor()
            .execute(
                "SELECT state, last_value, json_extract_string(annotations, '$.summary'),"
                " json_extract_string(labels, '$.host') FROM alerts"
            )
            .fetchone()
        )

    assert step(0, 90.0) == ("pending", 90.0, "h1: 90.0 C", "h1")
    assert step(1, 90.0) == ("pending", 90.0, "h1: 90.0 C", "h1")
    assert step(2, 91.5) == ("firing", 91.5, "h1: 91.5 C", "h1")
    engine.rules = load_rules_text(HOT.replace(' C"', ' degrees C"'), "hot.toml")
    assert step(3, 91.5) == ("firing", 91.5, "h1: 91.5 degrees C", "h1")
    store.close()


# -- the id path (gpu_samples, slice_samples, link_samples read by their integer ids) --

# Every key offends (thresholds every value meets), so every key's value is compared.
EVERY_AGG = """
[[rules]]
name = "GAvg"
scope = "gpu"
expr = { metric = "temp_c", agg = "avg", over = "1m", op = ">=", threshold = 0 }
[[rules]]
name = "GMin"
scope = "gpu"
expr = { metric = "temp_c", agg = "min", over = "2m", op = ">=", threshold = 0 }
[[rules]]
name = "GMax"
scope = "gpu"
expr = { metric = "util_pct", agg = "max", over = "2m", op = ">=", threshold = 0 }
[[rules]]
name = "GSum"
scope = "gpu"
expr = { metric = "util_pct", agg = "sum", over = "2m", op = ">=", threshold = 0 }
[[rules]]
name = "GCount"
scope = "gpu"
expr = { metric = "util_pct", agg = "count", over = "30s", op = ">=", threshold = 0 }
[[rules]]
name = "GLast"
scope = "gpu"
expr = { metric = "temp_c", agg = "last", over = "1m", op = ">=", threshold = 0 }
[[rules]]
name = "GIncrease"
scope = "gpu"
expr = { metric = "ecc_sbe_total", agg = "increase", over = "2m", op = ">=", threshold = 0 }
[[rules]]
name = "GRate"
scope = "gpu"
expr = { metric = "ecc_sbe_total", agg = "rate", over = "1m", op = ">=", threshold = 0 }
[[rules]]
name = "HostMax"
scope = "host"
expr = { metric = "temp_c", agg = "max", over = "1m", op = ">=", threshold = 0 }
[[rules]]
name = "HostAvg"
scope = "host"
expr = { metric = "util_pct", agg = "avg", over = "2m", op = ">=", threshold = 0 }
[[rules]]
name = "FleetAvg"
scope = "fleet"
expr = { metric = "temp_c", agg = "avg", over = "1m", op = ">=", threshold = 0 }
[[rules]]
name = "LSum"
scope = "link"
expr = { metric = "errors", agg = "sum", over = "2m", op = ">=", threshold = 0 }
[[rules]]
name = "LLast"
scope = "link"
expr = { metric = "(NOT link_up)::DOUBLE", agg = "last", over = "1m", op = ">=", threshold = 0 }
"""
SECOND_SOURCE_AT = (
    6  # (even) the cycle from which GPU-a and one port are also read by a second source
)


def two_source_batches(i: int, now: datetime) -> list:
    """Three GPUs on two hosts and two ports; from SECOND_SOURCE_AT a second source
    reports GPU-a (every other cycle, 2 s earlier: its rows are fewer and never tie) and
    a port of h1 (another kind), so those keys have two ids."""
    gpus = {
        "ts": [now] * 3,
        "gpu_uuid": ["GPU-a", "GPU-b", "GPU-c"],
        "host": ["h1", "h1", "h2"],
        "source": ["nvml"] * 3,
        "temp_c": [50.0 + i, 60.0, 70.0 - i],
        "util_pct": [10.0 + i, 20.0 + i % 3, 30.0],
        "ecc_sbe_total": [100 + 2 * i, 5, 0],
    }
    links = {
        "ts": [now] * 2,
        "host": ["h1", "h2"],
        "kind": ["ib", "ib"],
        "port": ["mlx5_0/1", "mlx5_0/1"],
        "source": ["sim", "sim"],
        "errors": [i % 3, 1],
        "link_up": [True, i % 2 == 0],
    }
    if i >= SECOND_SOURCE_AT and i % 2 == 0:
        early = now - timedelta(seconds=2)
        more_gpu = (early, "GPU-a", "h1", "dcgm", 90.0 + i, 5.0, 3)
        more_link = (early, "h1", "roce", "mlx5_0/1", "other", 5, False)
        gpus = {k: [*v, x] for (k, v), x in zip(gpus.items(), more_gpu, strict=True)}
        links = {k: [*v, x] for (k, v), x in zip(links.items(), more_link, strict=True)}
    return [make_batch("gpu_samples", gpus), make_batch("link_samples", links)]


def replay_two_sources() -> tuple[list[str], list[tuple[str, bool]]]:
    """Own queries against shared scans over the two-source store; (differences, per
    cycle after the first: whether the gpu and link scans ran their direct query)."""
    store = Store.open(":memory:")
    extra = load_rules_text(EVERY_AGG, "every_agg.toml")
    own = AlertEngine(store, extra, interval_s=10.0, shared=False)
    new = AlertEngine(store, extra, interval_s=10.0)
    diffs: list[str] = []
    direct: list[tuple[str, bool]] = []
    for i in range(14):
        now = T0 + timedelta(seconds=10 * i)
        store.write(two_source_batches(i, now))
        c_own, c_new = own.evaluate(now), new.evaluate(now)
        assert c_own.errors == [] and c_new.errors == [] and c_new.scan_errors == []
        diffs += [f"t+{10 * i}s {d}" for d in differences(own, new)]
        direct += [(f"{s.scope}@{i}", s._direct) for s in new._scans if s.scope in ("gpu", "link")]
    assert {s.scope for s in new._scans if s.keyed is not None} == {"gpu", "host", "fleet", "link"}
    assert len(state(new)) == 3 * 8 + 2 * 2 + 1 + 2 * 2  # every key of every rule is open
    store.close()
    return diffs, direct


def test_keys_read_by_two_sources_are_combined_over_their_ids():
    diffs, direct = replay_two_sources()
    assert diffs == []
    # one id per key until the second source: the direct query; then the combined one
    assert direct == [
        (f"{s}@{i}", i < SECOND_SOURCE_AT) for i in range(14) for s in ("gpu", "link")
    ]


def _mutate_queries(monkeypatch, mutant) -> None:
    build = shared.Scan.build

    def mutated(self, *args):
        build(self, *args)
        self.sql, self.direct_sql = mutant(self.sql), mutant(self.direct_sql)

    monkeypatch.setattr(shared.Scan, "build", mutated)


@pytest.mark.parametrize(
    "mutant",
    [
        # avg of each id's average: ids with different row counts weigh the same
        lambda sql: re.sub(
            r"sum\(s\._x(\d+)s\) / nullif\(sum\(s\._x\1n\), 0\)",
            r"avg(s._x\1s / nullif(s._x\1n, 0))",
            sql,
        ),
        # `last` of the ids taken by the wrong time
        lambda sql: re.sub(r"arg_max\(s\._x(\d+)l, ", r"arg_min(s._x\1l, ", sql),
        # `increase` from the newest first value instead of the oldest
        lambda sql: re.sub(r"arg_min\(s\._x(\d+)e, ", r"arg_max(s._x\1e, ", sql),
        # `sum` and `count` of the ids taken as their largest
        lambda sql: re.sub(r"sum\(s\._x(\d+)v\)", r"max(s._x\1v)", sql),
        # the dimension's fingerprint never changes: the direct query stays after a
        # second source gives a key two ids
        "fingerprint",
        # every key read as one id
        "always direct",
    ],
    ids=["avg", "last", "increase", "sum-count", "fingerprint", "always-direct"],
)
def test_a_mutant_of_the_id_path_is_caught(monkeypatch, mutant):
    if mutant == "fingerprint":
        build = shared.Scan.build

        def constant(self, *args):
            build(self, *args)
            if self.fingerprint_sql:  # the first one too (the exact check then decides)
                self.fingerprint_sql, self.first_sql = "SELECT 1", "SELECT 1, -1"

        monkeypatch.setattr(shared.Scan, "build", constant)
    elif mutant == "always direct":
        monkeypatch.setattr(shared.Scan, "pick", lambda self, cur: self.direct_sql or self.sql)
    else:
        _mutate_queries(monkeypatch, mutant)
    diffs, direct = replay_two_sources()
    assert diffs != [] or direct != [
        (f"{s}@{i}", i < SECOND_SOURCE_AT) for i in range(14) for s in ("gpu", "link")
    ]
    if mutant in ("fingerprint", "always direct"):
        assert diffs != []  # the answers differ, not only the path taken


def test_a_pruned_top_id_taken_by_another_key_is_seen(monkeypatch):
    """Retention drops the dimension's top id, a new key takes it at once: count and top
    id are as before, the key behind the id is not; the fingerprint's hash sees it."""
    store = Store.open(":memory:")
    engine = AlertEngine(store, load_rules_text(EVERY_AGG, "every_agg.toml"), interval_s=10.0)
    store.write(two_source_batches(0, T0))
    engine.evaluate(T0)
    gpu = next(s for s in engine._scans if s.scope == "gpu")
    assert gpu._direct
    # GPU-c's id (the top one) now names a second series of GPU-a
    store.con.execute(
        "UPDATE gpu_series SET gpu_uuid = 'GPU-a', host = 'h1', source = 'dcgm'"
        " WHERE series_id = (SELECT max(series_id) FROM gpu_series)"
    )
    cur = store.cursor()
    assert gpu.pick(cur) == gpu.sql and not gpu._direct
    cur.close()
    store.close()


@pytest.mark.parametrize("second_source", [False, True])
@pytest.mark.parametrize("collision", [False, True])
def test_the_first_pick_asks_fingerprint_and_keys_in_one_pass(second_source, collision):
    """An engine's first pick reads the dimension once: its fingerprint and how many
    distinct key hashes it holds. As many as ids: the direct query, without the exact
    check. Fewer (two ids for one key, or a hash collision, made here by a query
    that counts one hash less): the exact check decides."""
    store = Store.open(":memory:")
    for i in range(SECOND_SOURCE_AT + 1 if second_source else 1):
        store.write(two_source_batches(i, T0 + timedelta(seconds=10 * i)))
    engine = AlertEngine(store, load_rules_text(EVERY_AGG, "every_agg.toml"), interval_s=10.0)
    engine.evaluate(T0)  # plans the scans
    gpu = next(s for s in engine._scans if s.scope == "gpu")
    assert gpu._direct is not second_source
    gpu._fingerprint, gpu._direct = None, None
    if collision:
        gpu.first_sql = gpu.first_sql.replace("count(DISTINCT", "-1 + count(DISTINCT")
    executed: list[str] = []

    class Cursor:  # the store's cursor, its statements noted
        def __init__(self, cur):
            self.cur = cur

        def execute(self, sql, *args):
            executed.append(sql)
            return self.cur.execute(sql, *args)

    cur = store.cursor()
    picked = gpu.pick(Cursor(cur))
    assert picked == (gpu.sql if second_source else gpu.direct_sql)
    assert gpu._direct is not second_source
    assert executed == [gpu.first_sql] + ([gpu.injective_sql] if second_source or collision else [])
    assert gpu._fingerprint == cur.execute(gpu.fingerprint_sql).fetchone()
    executed.clear()
    assert gpu.pick(Cursor(cur)) == picked and executed == [gpu.fingerprint_sql]
    cur.close()
    store.close()


def test_a_rule_reading_a_column_of_the_view_only_keeps_the_view():
    """`where` on the host (a dimension column) and `energy_j` (computed by the view) do
    not bind on the rows table: their scans read the view, and still share."""
    text = """
[[rules]]
name = "OnH1"
scope = "gpu"
expr = { metric = "temp_c", agg = "max", over = "1m", op = ">", threshold = 0, where = "s.host = 'h1'" }
[[rules]]
name = "Hot"
scope = "gpu"
expr = { metric = "temp_c", agg = "avg", over = "1m", op = ">", threshold = 0 }
[[rules]]
name = "Energy"
scope = "host"
expr = { metric = "energy_j", agg = "max", over = "1m", op = ">=", threshold = 0 }
[[rules]]
name = "Cool"
scope = "host"
expr = { metric = "temp_c", agg = "min", over = "1m", op = ">", threshold = 0 }
"""
    store = Store.open(":memory:")
    rules_ = load_rules_text(text, "view.toml")
    own = AlertEngine(store, rules_, interval_s=10.0, shared=False)
    new = AlertEngine(store, rules_, interval_s=10.0)
    for i in range(3):
        now = T0 + timedelta(seconds=10 * i)
        batch = two_source_batches(i, now)[0]
        store.write(
            [
                batch,
                make_batch(
                    "gpu_samples",
                    {
                        "ts": [now],
                        "gpu_uuid": ["GPU-e"],
                        "host": ["h3"],
                        "temp_c": [40.0],
                        "energy_j": [7.5],
                    },
                ),
            ]
        )
        c_own, c_new = own.evaluate(now), new.evaluate(now)
        assert c_new.scan_errors == [] and c_new.errors == [] and c_own.errors == []
        assert differences(own, new) == []
    assert [(s.scope, s.keyed) for s in new._scans] == [("gpu", None), ("host", None)]
    assert {k for k in state(new)} >= {("OnH1", "GPU-a"), ("Energy", "h3"), ("Hot", "GPU-c")}
    store.close()


def test_memory_rules_read_framebuffer_mib_on_the_id_path():
    """0021 stores whole-MiB byte counts as `*_mib`: the gpu scan still reads
    `mem_used_bytes` off the rows table (`Keyed.rows_read`), not the view, and agrees
    with each rule's own query. Mutant: `rows_read` without `decode` -> the scan falls
    back to the view (keyed None)."""
    store = Store.open(":memory:")
    own = AlertEngine(store, rules(), interval_s=STEP_S, shared=False)
    new = AlertEngine(store, rules(), interval_s=STEP_S)
    for i in range(12):
        now = T0 + timedelta(seconds=STEP_S * i)
        store.write(
            [
                make_batch(
                    "gpu_samples",
                    {
                        "ts": [now] * 3,
                        "host": ["h1"] * 3,
                        "gpu_uuid": ["GPU-full", "GPU-ok", "GPU-odd"],
                        "mem_used_bytes": [79 << 30, 10 << 30, (79 << 30) + 1],
                        "mem_total_bytes": [80 << 30, 80 << 30, 80 << 30],
                    },
                )
            ]
        )
        c_own, c_new = own.evaluate(now), new.evaluate(now)
        assert c_new.scan_errors == [] and c_new.errors == [] and c_own.errors == []
        assert differences(own, new) == []
    (scan,) = [s for s in new._scans if "GpuMemoryHigh" in {r.name for r in s.rules}]
    assert scan.keyed is not None
    assert {k for r, k in state(new) if r == "GpuMemoryHigh"} == {"GPU-full", "GPU-odd"}
    store.close()
