"""Drive the alert engine from the simulated fleet with a controlled clock.

The scenario tests, `scripts/alert_scenarios.py` and the benchmark share this:
sample the sim at each step, write the batches (plus the `collector_runs` row
the runtime would record), evaluate the engine at the same instant, and keep
every state transition with its offset from the start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from collectors.sim.faults import Fault
from collectors.sim.source import SimSource
from fleettui.alerts.engine import FIRING, RESOLVED, AlertEngine, Cycle
from fleettui.alerts.rules import Rule, default_rules
from storage.batch import make_batch
from storage.store import Store


@dataclass(slots=True)
class Timeline:
    """One alert instance's life, in seconds after the replay's start."""

    rule: str
    scope_key: str
    pending_s: float
    fired_s: float | None = None
    ended_s: float | None = None
    peak_value: float | None = None


class SimReplay:
    def __init__(
        self,
        faults: tuple[Fault, ...] = (),
        *,
        start: datetime,
        step_s: float = 15.0,
        scale: int = 1,
        rules: list[Rule] | None = None,
        store: Store | None = None,
        run_ms: float = 40.0,
    ):
        self.start = start
        self.step_s = step_s
        self.store = store or Store.open(":memory:")
        self.source = SimSource(
            faults=faults, period_s=None, start=start, scale=scale, interval_s=step_s
        )
        self.engine = AlertEngine(
            self.store, rules if rules is not None else default_rules(), interval_s=step_s
        )
        self.run_ms = run_ms
        self.timelines: list[Timeline] = []
        self._by_id: dict[str, Timeline] = {}
        self.cycles: list[Cycle] = []

    def feed(self, now: datetime, *, collector_run: bool = True) -> None:
        """Write the fleet's sample at `now` (and the run the runtime would record)."""
        batches = self.source.sample(now).batches
        if collector_run:
            batches.append(
                make_batch(
                    "collector_runs",
                    {
                        "ts": [now],
                        "collector": ["sim"],
                        "duration_ms": [self.run_ms],
                        "ok": [True],
                        "rows": [sum(b.rows for b in batches)],
                        "skipped": [0],
                        "interval_s": [self.step_s],
                    },
                )
            )
        self.store.write(batches)

    def evaluate(self, now: datetime) -> Cycle:
        cycle = self.engine.evaluate(now)
        self.cycles.append(cycle)
        rel = (now - self.start).total_seconds()
        for a, _, to in cycle.transitions:
            tl = self._by_id.get(a.alert_id)
            if tl is None:
                tl = self._by_id[a.alert_id] = Timeline(a.rule, a.scope_key, rel)
                self.timelines.append(tl)
            if to == FIRING:
                tl.fired_s = rel
            elif to in (RESOLVED, "inactive"):
                tl.ended_s = rel
            tl.peak_value = a.peak_value
        for a in self.engine.open_alerts():
            if a.alert_id in self._by_id:
                self._by_id[a.alert_id].peak_value = a.peak_value
        return cycle

    def run(
        self,
        until_s: float,
        *,
        feed: Callable[[datetime, float], bool] | None = None,
    ) -> list[Timeline]:
        """Step from the start to `until_s`; `feed(now, rel_s)` may say False to skip a sample."""
        n = int(until_s // self.step_s)
        for i in range(n + 1):
            now = self.start + timedelta(seconds=i * self.step_s)
            if feed is None or feed(now, i * self.step_s):
                self.feed(now)
            self.evaluate(now)
        return self.timelines

    def fired(self) -> list[Timeline]:
        return [t for t in self.timelines if t.fired_s is not None]


# What each simulated fault should raise in the default pack, by (rule, scope key).
# Scenario tests compare the engine's output with this; the scenario script prints it.
def expected_alerts(replay: SimReplay, fault: Fault) -> set[tuple[str, str]]:
    model = replay.source.ensure_model(replay.start)
    f = model.fleet
    (rf,) = [r for r in model.faults if r.fault == fault]
    i = rf.index
    if fault.kind in ("xid79", "thermal", "ecc_dbe"):
        uuid = f.gpu_uuid[i]
        if fault.kind == "thermal":
            return {("GpuThermalThrottle", uuid), ("GpuHot", uuid)}
        if fault.kind == "ecc_dbe":
            return {("GpuXidCritical", uuid), ("GpuEccUncorrectable", uuid)}
        host = f.host[f.gpu_host_idx[i]]
        links = {
            ("LinkDown", f"{host}:{f.link_port[li]}")
            for li in range(len(f.link_port))
            if f.link_gpu_idx[li] == i
        }
        return {("GpuXidCritical", uuid), ("GpuNotReporting", uuid)} | links
    if fault.kind == "nvlink_crc":
        return {("LinkErrorsRising", fault.target)}
    if fault.kind == "ib_link_down":
        return {("LinkDown", fault.target)}
    if fault.kind == "host_silent":
        return {("HostTelemetryStale", fault.target)}
    if fault.kind == "traffic_surge":
        gpus = [f.gpu_uuid[g] for g in range(f.n_gpus) if f.gpu_endpoint[g] == i]
        return (
            {("EndpointItlP99High", fault.target), ("EndpointTtftP99High", fault.target)}
            | {("GpuSaturated", u) for u in gpus}
            | {("GpuMemoryHigh", u) for u in gpus}
        )
    # idle_allocation: a tenant's whole GPUs, its slices, and the tenant itself
    gpus = [f.gpu_uuid[g] for g in range(f.n_gpus) if f.gpu_tenant[g] == i]
    slices = [f.slice_id[s] for s in range(len(f.slice_id)) if f.slice_tenant[s] == i]
    return (
        {("AllocatedGpuIdle", u) for u in gpus}
        | {("AllocatedSliceIdle", s) for s in slices}
        | {("TenantAllocationIdle", fault.target)}
    )
