"""Helpers for comparing what collectors stored with the simulator's truth."""

from __future__ import annotations

from collectors.sim.faults import DEFAULT_FAULTS
from collectors.sim.model import SimModel
from collectors.sim.topology import TENANTS

# A small, varied slice of the fleet: MIG (lumen-video), fractional shares
# (kestrel/internal-eval), HGX inference (nimbus, quanta under a traffic surge,
# eval-judge), and an NVL72 training tray with an NVLink CRC burst.
HOSTS = ["rtx-07-n1", "rtx-07-n3", "hgx-03-n1", "hgx-06-n1", "hgx-06-n3", "nvl72-01-t05"]


def truth_inventory(model: SimModel, hosts: list[str], reporting_at: float | None = None) -> dict:
    """GPUs, MIG slices, tenant assignments and links the simulator has on `hosts`
    (only those reporting at `reporting_at`, when given: faults silence some)."""
    f = model.fleet
    tenants = [t[0] for t in TENANTS]
    hidx = {f.host.index(h) for h in hosts}
    silent: set[int] = set()
    if reporting_at is not None:
        st = model.state(reporting_at)
        hidx = {h for h in hidx if st.host_reporting[h]}
        silent = {g for g in range(f.n_gpus) if not st.gpu_reporting[g]}
    gpus = {
        f.gpu_uuid[g]: (f.host[f.gpu_host_idx[g]], int(f.gpu_index[g]), bool(f.gpu_mig[g]))
        for g in range(f.n_gpus)
        if f.gpu_host_idx[g] in hidx and g not in silent
    }
    slices = {
        f.slice_id[s]: (f.slice_profile[s], float(f.slice_fraction[s]))
        for s in range(len(f.slice_id))
        if f.slice_kind[s] == "mig" and f.gpu_uuid[f.slice_gpu_idx[s]] in gpus
    }
    assign = {}
    for g in range(f.n_gpus):
        if f.gpu_uuid[g] in gpus and f.gpu_tenant[g] >= 0:
            assign[(f.gpu_uuid[g], None)] = tenants[f.gpu_tenant[g]]
    for s in range(len(f.slice_id)):
        if f.slice_id[s] in slices:
            assign[(f.gpu_uuid[f.slice_gpu_idx[s]], f.slice_id[s])] = tenants[f.slice_tenant[s]]
    links = {
        (f.host[f.link_host_idx[i]], f.link_kind[i], f.link_port[i])
        for i in range(len(f.link_port))
        if f.link_host_idx[i] in hidx
    }
    return {"gpus": gpus, "slices": slices, "assignments": assign, "links": links}


def interval_quantile_truth(
    model: SimModel, e: int, t0: int, t1: int, q: float = 0.99, what: str = "itl"
) -> float:
    """The simulator's q-quantile (ms) of endpoint e's latency over ticks t0+1 .. t1.

    Each second holds a log-normal with that second's p50/p99; an interval holds
    their mixture, weighted by requests. (Straddling a surge, the mixture's p99
    follows the slow seconds, not the mean of the seconds' p99s.)
    """
    import math

    import numpy as np

    from collectors.sim.exporters import Z99, _norm_cdf

    states = [model.state(float(s)) for s in range(t0 + 1, t1 + 1)]
    p50 = np.array([getattr(st, f"ep_{what}_p50_ms")[e] for st in states])
    p99 = np.array([getattr(st, f"ep_{what}_p99_ms")[e] for st in states])
    w = np.array([st.ep_requests_per_s[e] for st in states])
    sigma = np.log(p99 / p50) / Z99
    lo, hi = math.log(p50.min()) - 1, math.log(p99.max()) + 1
    for _ in range(60):
        mid = (lo + hi) / 2
        cdf = float(np.sum(w * _norm_cdf((mid - np.log(p50)) / sigma)) / w.sum())
        lo, hi = (mid, hi) if cdf < q else (lo, mid)
    return math.exp((lo + hi) / 2)


def fault_start(kind: str) -> int:
    """When (s after the model's start) the default schedule's `kind` fault begins."""
    return int(next(f.start_s for f in DEFAULT_FAULTS if f.kind == kind))
