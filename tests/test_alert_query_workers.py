"""A cycle's queries run `query_workers` at a time, each on a cursor of the engine's own
(fleettui/alerts/engine.py, `QUERY_WORKERS`), and what each rule gets is what it got
one query after another: its own rows, its own error, a failed scan's rules their own
queries. The engine's cursors group dense ids direct-indexed (`DENSE_HT_BITS`); the
store's connection and other cursors keep DuckDB's default."""

import threading
from datetime import datetime, timedelta

import pytest

from fleettui.alerts import engine as engine_mod
from fleettui.alerts import shared
from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import load_rules_text
from storage.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0)
STEP = timedelta(seconds=15)

# Rules whose rows tell which rule's query made them: the value is the rule's number,
# and `Dense` returns the engine cursor's perfect_ht_threshold.
RULES = (
    "".join(
        f"""
[[rules]]
name = "R{i}"
scope = "source"
sql = "SELECT 'k{i}' AS scope_key, {i}.0 AS value FROM range({i})"
"""
        for i in range(1, 6)
    )
    + """
[[rules]]
name = "Broken"
scope = "source"
sql = "SELECT 'b' AS scope_key, 1.0 AS value FROM range(1) WHERE 1 / 0 = error('broken')"

[[rules]]
name = "Dense"
scope = "source"
sql = "SELECT 'd' AS scope_key, current_setting('perfect_ht_threshold')::DOUBLE AS value"
"""
)

SETTING = "SELECT current_setting('perfect_ht_threshold')"


def rules():
    return load_rules_text(RULES, "t.toml", check_sql=False)


def open_values(engine):
    return sorted((a.rule, a.scope_key, a.last_value) for a in engine.open_alerts())


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_each_rule_gets_its_own_rows_and_error_whatever_the_order(workers):
    store = Store.open(":memory:")
    engine = AlertEngine(store, rules(), query_workers=workers)
    for i in range(3):  # from the second cycle on, the slowest of the last one first
        cycle = engine.evaluate(T0 + i * STEP)
        assert open_values(engine) == [
            ("Dense", "d", float(engine_mod.DENSE_HT_BITS)),
            *[(f"R{n}", f"k{n}", float(n)) for n in range(1, 6)],
        ]
        assert len(cycle.errors) == 1 and "Broken" in cycle.errors[0]
        assert "broken" in cycle.errors[0]
        assert set(cycle.rule_ms) == {f"R{n}" for n in range(1, 6)} | {"Dense"}
    store.close()


def test_the_dense_setting_is_the_engines_cursors_only():
    store = Store.open(":memory:")
    default = store.con.execute(SETTING).fetchone()[0]
    assert default < engine_mod.DENSE_HT_BITS
    engine = AlertEngine(store, rules())
    engine.evaluate(T0)
    assert ("Dense", "d", float(engine_mod.DENSE_HT_BITS)) in open_values(engine)
    assert store.con.execute(SETTING).fetchone()[0] == default
    assert store.cursor().execute(SETTING).fetchone()[0] == default
    store.close()


def test_queries_run_at_the_same_time_on_cursors_of_their_own():
    """The first two queries of a cycle meet at a barrier: one after another on one
    thread, the first would wait for the second in vain."""
    store = Store.open(":memory:")
    meet = threading.Barrier(2, timeout=20)
    met: list[int] = []
    cursors: list[object] = []

    class Waiting:
        def __init__(self, cur):
            self._cur = cur
            cursors.append(self)

        def execute(self, sql, *args):
            if sql.startswith("SELECT 'k") and len(met) < 2:
                met.append(threading.get_ident())
                meet.wait()
            return self._cur.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._cur, name)

    real = store.cursor
    store.cursor = lambda: Waiting(real())
    engine = AlertEngine(store, rules()[:2], query_workers=2)
    cursors.clear()  # the open alerts read at start
    cycle = engine.evaluate(T0)
    assert cycle.errors == []
    assert len(set(met)) == 2  # two threads
    assert len(cursors) == 2  # one cursor per query
    store.close()


def test_a_failing_scan_falls_back_beside_the_other_queries(monkeypatch):
    """A shared scan that fails: its rules run their own queries after the first round;
    the other rules' rows are theirs."""
    build = shared.Scan.build

    def broken(self, *args):
        build(self, *args)
        self.sql = self.sql.replace(" latency_samples", " no_such_table")

    monkeypatch.setattr(shared.Scan, "build", broken)
    text = """
[[rules]]
name = "ItlHigh"
scope = "endpoint"
expr = { metric = "itl_p99_ms", agg = "avg", over = "1m", op = ">", threshold = 50 }

[[rules]]
name = "TtftHigh"
scope = "endpoint"
expr = { metric = "ttft_p99_ms", agg = "avg", over = "1m", op = ">", threshold = 500 }
"""
    store = Store.open(":memory:")
    from storage.batch import make_batch

    store.write(
        [
            make_batch(
                "latency_samples",
                {
                    "ts": [T0],
                    "endpoint": ["ep-a"],
                    "tenant": ["t1"],
                    "model": ["m"],
                    "itl_p99_ms": [80.0],
                    "ttft_p99_ms": [900.0],
                },
            )
        ]
    )
    engine = AlertEngine(store, load_rules_text(text, "t.toml") + rules())
    cycle = engine.evaluate(T0)
    assert len(cycle.scan_errors) == 1 and "no_such_table" in cycle.scan_errors[0]
    assert {"ItlHigh", "TtftHigh"} <= set(cycle.rule_ms)
    got = open_values(engine)
    assert ("ItlHigh", "ep-a", 80.0) in got and ("TtftHigh", "ep-a", 900.0) in got
    assert ("R3", "k3", 3.0) in got
    store.close()
