"""The cyclic garbage collector is paused while an alert cycle runs (engine.collector_paused).

The first cycle after a start makes every open alert at once; their objects hold no
reference cycles, and the collections they set off found nothing. Checked here: the
collector is off during a cycle and on again after it, also when the cycle fails; a
collector someone else turned off stays off; cycles overlapping in two threads turn
it back on only when the last ends.
"""

import gc
import threading
from datetime import timedelta

import pytest

from fleettui.alerts import engine as engine_module
from fleettui.alerts.engine import AlertEngine, collector_paused
from fleettui.alerts.rules import default_rules
from storage.store import Store
from tests.test_alert_shared import STEP_S, T0


@pytest.fixture(autouse=True)
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:  # pragma: no cover - pytest runs with it on
        gc.disable()


def test_a_cycle_runs_with_the_collector_off_and_turns_it_on_after(monkeypatch):
    store = Store.open(":memory:")
    engine = AlertEngine(store, default_rules(), interval_s=STEP_S)
    during = []
    step = engine._step_rule

    def spy(*args, **kwargs):
        during.append(gc.isenabled())
        return step(*args, **kwargs)

    monkeypatch.setattr(engine, "_step_rule", spy)
    cycle = engine.evaluate(T0 + timedelta(seconds=60))
    assert cycle.errors == []
    assert during and not any(during)
    assert gc.isenabled()
    store.close()


def test_a_failed_cycle_turns_the_collector_on_again(monkeypatch):
    store = Store.open(":memory:")
    engine = AlertEngine(store, default_rules(), interval_s=STEP_S)

    def boom(now, cycle=None):
        assert not gc.isenabled()
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "offending", boom)
    with pytest.raises(RuntimeError):
        engine.evaluate(T0)
    assert gc.isenabled()
    store.close()


def test_a_collector_turned_off_elsewhere_stays_off():
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()
    with collector_paused():
        with collector_paused():  # nested: the outer one turns it on
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_overlapping_cycles_turn_the_collector_on_when_the_last_ends():
    first_in, second_done, first_may_end = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with collector_paused():
            first_in.set()
            first_may_end.wait(10)
            seen["first, after the second ended"] = gc.isenabled()

    def second():
        first_in.wait(10)
        with collector_paused():
            pass
        seen["after the second"] = gc.isenabled()
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    second_done.wait(10)
    first_may_end.set()
    for t in threads:
        t.join(10)
    assert seen == {"first, after the second ended": False, "after the second": False}
    assert gc.isenabled()
    assert engine_module._pauses == 0
