"""The default rule pack against the simulated fleet's injected faults, with a controlled clock.

Each fault must raise exactly its expected alerts, for the right scope keys, after
the rule's `for` (plus at most its window and two evaluation steps), and each must
resolve after the fault clears (within its window, hold and two steps). A healthy
simulated day must raise nothing.
"""

from datetime import datetime

import pytest

from collectors.sim.faults import DEFAULT_FAULTS, Fault
from fleettui.alerts.replay import SimReplay, expected_alerts

STEP = 15.0
START = datetime(2026, 11, 26, 3, 0, 0)
# How far back each rule looks (s): `over` for expr rules, the lookback of SQL rules.
WINDOW_S = {
    "EndpointItlP99High": 120,
    "EndpointTtftP99High": 120,
    "HostTelemetryStale": 3 * STEP,
    "GpuNotReporting": 3 * STEP,
    "CollectorSilent": 3 * STEP,
    "CollectorSlow": 300,
    "AllocatedGpuIdle": 120,
    "AllocatedSliceIdle": 120,
    "TenantAllocationIdle": 120,
    "GpuSaturated": 120,
    "GpuMemoryHigh": 120,
    "GpuXidCritical": 600,
    "GpuEccUncorrectable": 60,
    "GpuThermalThrottle": 60,
    "GpuHot": 120,
    "LinkErrorsRising": 120,
    "LinkDown": 60,
}


@pytest.fixture(scope="module")
def faulted() -> SimReplay:
    replay = SimReplay(DEFAULT_FAULTS, start=START, step_s=STEP)
    last_end = max(f.start_s + f.duration_s for f in DEFAULT_FAULTS)
    replay.run(last_end + 450)
    return replay


def test_every_rule_of_the_pack_is_exercised_by_a_fault_or_the_collector_scenario(faulted):
    rules = {r.name for r in faulted.engine.rules}
    raised = {t.rule for t in faulted.fired()} | {"CollectorSilent", "CollectorSlow"}
    assert rules == raised == set(WINDOW_S)


def test_faults_raise_exactly_their_alerts_and_nothing_else(faulted):
    expected = set().union(*(expected_alerts(faulted, f) for f in DEFAULT_FAULTS))
    fired = {(t.rule, t.scope_key) for t in faulted.fired()}
    assert fired == expected
    # one instance each: no flapping
    assert len(faulted.fired()) == len(expected)


@pytest.mark.parametrize("fault", DEFAULT_FAULTS, ids=lambda f: f.kind)
def test_each_alert_fires_after_its_for_and_resolves_when_the_fault_clears(faulted, fault):
    rules = {r.name: r for r in faulted.engine.rules}
    by_key = {(t.rule, t.scope_key): t for t in faulted.fired()}
    end = fault.start_s + fault.duration_s
    for rule_name, key in sorted(expected_alerts(faulted, fault)):
        t, rule = by_key[(rule_name, key)], rules[rule_name]
        window = WINDOW_S[rule_name]
        fired_after = t.fired_s - fault.start_s
        assert rule.for_s <= fired_after <= rule.for_s + window + 2 * STEP, (rule_name, key, t)
        assert t.ended_s is not None, (rule_name, key, "never resolved")
        resolved_after = t.ended_s - end
        assert 0 <= resolved_after <= window + rule.keep_firing_for_s + 2 * STEP, (rule_name, t)


def test_peak_values_say_how_bad_it_got(faulted):
    peaks = {t.rule: t.peak_value for t in faulted.fired()}
    assert peaks["EndpointItlP99High"] > 21.0 * 3  # quanta-risk's target is 21 ms
    assert peaks["GpuHot"] > 90
    assert peaks["GpuXidCritical"] in (48.0, 79.0)
    assert peaks["AllocatedGpuIdle"] < 5


def test_collector_silent_and_slow():
    replay = SimReplay((), start=START, step_s=STEP)

    def feed(now, rel):
        replay.run_ms = 20_000.0 if 700 <= rel < 1100 else 40.0  # interval is 15 s
        return not 300 <= rel < 600  # the collector stops for 5 minutes

    replay.run(1500, feed=feed)
    fired = {(t.rule, t.scope_key): t for t in replay.fired()}
    assert set(fired) == {("CollectorSilent", "sim"), ("CollectorSlow", "sim")}
    silent, slow = fired[("CollectorSilent", "sim")], fired[("CollectorSlow", "sim")]
    # the last run was at 285 s: silent for more than 3 intervals at 345 s
    assert (silent.fired_s, silent.ended_s) == (345.0, 600.0)
    assert 700 + 120 <= slow.fired_s <= 700 + 300 + 120
    assert 1100 < slow.ended_s <= 1100 + 300


@pytest.mark.slow
def test_no_alert_fires_over_a_healthy_simulated_day():
    # Sampled every 2 minutes to keep the suite fast;
    # scripts/alert_scenarios.py samples it every minute.
    replay = SimReplay((), start=datetime(2026, 11, 26, 0, 0, 0), step_s=120.0)
    replay.run(24 * 3600)
    assert [c.errors for c in replay.cycles if c.errors] == []
    assert replay.fired() == []


def test_a_fault_on_a_scope_the_fleet_lacks_is_refused():
    with pytest.raises(ValueError, match="not in the fleet"):
        SimReplay((Fault("thermal", "nohost:0", 10, 60),), start=START).run(0)
