"""The simulated fleet's dynamics: a pure function of time.

`SimModel.state(t)` returns every GPU, slice, link and endpoint value at epoch
second `t` as numpy arrays. Randomness is drawn from a generator seeded by
(seed, t in ms), so the same (seed, scale, faults, start, t) always gives the
same numbers, in any order of calls: tests, the demo, the benchmarks and the
simulated exporters all see one truth.

Load model: inference endpoints follow a diurnal curve (peak mid-afternoon,
shifted per endpoint); their GPUs' utilisation follows the load; inter-token
latency grows like a queue, 1 + 0.25 * rho / (1 - rho), so it stays under
target on a healthy day and climbs past it when a surge saturates the GPUs.
Training GPUs run steadily near 88% with a short dip at each checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from collectors.sim.faults import DEFAULT_FAULTS, DEFAULT_PERIOD_S, Fault, resolve
from collectors.sim.topology import (
    ENDPOINTS,
    GPU_MODELS,
    INFERENCE,
    KIND_CODE,
    TRAINING,
    Fleet,
    build_fleet,
)

# DCGM reports framebuffer use and size in whole MiB (`DCGM_FI_DEV_FB_USED`, `_FB_TOTAL`)
MIB = 1 << 20
_KINDS = sorted(KIND_CODE, key=KIND_CODE.__getitem__)
MEM_TOTAL = np.array([GPU_MODELS[k][1] for k in _KINDS], dtype=np.int64)
TDP_W = np.array([GPU_MODELS[k][2] for k in _KINDS])
SM_MAX_MHZ = np.array([GPU_MODELS[k][3] for k in _KINDS])
MEM_CLOCK_MHZ = np.array([GPU_MODELS[k][4] for k in _KINDS])

# NVML clock-event (throttle) reason bits
THROTTLE_GPU_IDLE = 0x1
THROTTLE_SW_THERMAL = 0x20
THROTTLE_HW_THERMAL = 0x40

CHECKPOINT_EVERY_S, CHECKPOINT_S = 1800.0, 45.0
REQS_PER_S_PER_GPU = 40.0


def latency_factor(rho: np.ndarray) -> np.ndarray:
    rho = np.clip(rho, 0.0, 0.995)
    return 1.0 + 0.25 * rho / (1.0 - rho)


@dataclass(frozen=True, slots=True)
class SimEvent:
    t: float
    gpu_idx: int  # -1 when host-level
    host_idx: int
    kind: str
    code: int | None
    detail: str


@dataclass(slots=True)
class FleetState:
    t: float
    host_reporting: np.ndarray
    gpu_reporting: np.ndarray
    gpu_util_pct: np.ndarray  # NaN where the GPU is in MIG mode (NVML cannot say)
    gpu_mem_util_pct: np.ndarray
    gpu_mem_used_bytes: np.ndarray
    gpu_mem_total_bytes: np.ndarray
    gpu_power_w: np.ndarray
    gpu_energy_j: np.ndarray
    gpu_temp_c: np.ndarray
    gpu_mem_temp_c: np.ndarray
    gpu_sm_clock_mhz: np.ndarray
    gpu_mem_clock_mhz: np.ndarray
    gpu_pcie_tx_bytes_per_s: np.ndarray
    gpu_pcie_rx_bytes_per_s: np.ndarray
    gpu_ecc_sbe_total: np.ndarray
    gpu_ecc_dbe_total: np.ndarray
    gpu_throttle_reasons: np.ndarray
    slice_reporting: np.ndarray
    slice_util_pct: np.ndarray
    slice_mem_used_bytes: np.ndarray
    slice_mem_total_bytes: np.ndarray
    link_reporting: np.ndarray
    link_tx_bytes_per_s: np.ndarray
    link_rx_bytes_per_s: np.ndarray
    link_errors: np.ndarray  # errors during the last interval
    link_up: np.ndarray
    ep_load: np.ndarray
    ep_itl_p50_ms: np.ndarray
    ep_itl_p99_ms: np.ndarray
    ep_ttft_p50_ms: np.ndarray
    ep_ttft_p99_ms: np.ndarray
    ep_e2e_p50_ms: np.ndarray
    ep_e2e_p99_ms: np.ndarray
    ep_requests_per_s: np.ndarray


class SimModel:
    def __init__(
        self,
        fleet: Fleet | None = None,
        *,
        seed: int = 7,
        scale: int = 1,
        faults: tuple[Fault, ...] = DEFAULT_FAULTS,
        period_s: float | None = DEFAULT_PERIOD_S,
        start: float = 0.0,
        first_unit: int = 0,
    ):
        self.fleet = fleet or build_fleet(seed=seed, scale=scale, first_unit=first_unit)
        self.seed = self.fleet.seed
        self.faults = resolve(self.fleet, faults)
        self.period_s = period_s
        self.start = start
        # values as the real sources report them (see `state`); False keeps every bit of
        # the model's noise (benchmarks/bench_store_size.py measures what that costs)
        self.source_precision = True
        f = self.fleet
        self._kind = f.gpu_kind
        self._mem_total = MEM_TOTAL[f.gpu_kind]
        # a MIG instance's memory is whole MiB, as DCGM's FB_TOTAL gives it
        self._slice_mem_total = (
            np.round(self._mem_total[f.slice_gpu_idx] * f.slice_fraction / MIB) * MIB
        ).astype(np.int64)
        rng = np.random.default_rng([self.seed, 0])
        self._ecc_sbe_base = rng.integers(0, 4, f.n_gpus)
        self._energy_offset_j = rng.uniform(1e8, 5e8, f.n_gpus)
        self._ep_phase_h = np.array([-2.0, 0.0, 1.5, 3.0, -1.0])[: len(ENDPOINTS)]
        self._ep_peak = np.array([ep[7] for ep in ENDPOINTS])
        self._ep_itl_base = np.array([ep[3] for ep in ENDPOINTS])
        self._ep_ttft_base = np.array([ep[4] for ep in ENDPOINTS])
        n_gpus_per_ep = np.bincount(f.gpu_endpoint[f.gpu_endpoint >= 0], minlength=len(ENDPOINTS))
        frac_per_ep = np.bincount(
            f.slice_endpoint, weights=f.slice_fraction, minlength=len(ENDPOINTS)
        )
        self._ep_capacity_gpus = n_gpus_per_ep + frac_per_ep

    @property
    def slice_mem_total_bytes(self) -> np.ndarray:
        return self._slice_mem_total

    # -- faults -------------------------------------------------------------
    def active(self, t: float, kind: str) -> list[int]:
        rel = t - self.start
        return [
            rf.index
            for rf in self.faults
            if rf.fault.kind == kind and rf.active(rel, self.period_s)
        ]

    def events_between(self, t0: float, t1: float) -> list[SimEvent]:
        """Events raised by faults that start in (t0, t1]."""
        f = self.fleet
        out = []
        for rf in self.faults:
            for off in rf.started_between(t0 - self.start, t1 - self.start, self.period_s):
                t = self.start + off
                k = rf.fault.kind
                if k in ("xid79", "thermal", "ecc_dbe"):
                    g, h = rf.index, int(f.gpu_host_idx[rf.index])
                    if k == "xid79":
                        out.append(SimEvent(t, g, h, "xid", 79, "GPU has fallen off the bus"))
                    elif k == "thermal":
                        out.append(
                            SimEvent(
                                t, g, h, "throttle", THROTTLE_HW_THERMAL, "HW thermal slowdown"
                            )
                        )
                    else:
                        out.append(SimEvent(t, g, h, "xid", 48, "Double Bit ECC Error"))
                        out.append(SimEvent(t, g, h, "ecc", 1, "uncorrectable (DBE) error"))
                elif k in ("nvlink_crc", "ib_link_down"):
                    li = rf.index
                    h = int(f.link_host_idx[li])
                    g = int(f.link_gpu_idx[li])
                    what = "CRC error burst" if k == "nvlink_crc" else "link down"
                    out.append(SimEvent(t, g, h, "link", None, f"{f.link_port[li]}: {what}"))
        out.sort(key=lambda e: e.t)
        return out

    # -- state --------------------------------------------------------------
    def endpoint_load(self, t: float) -> np.ndarray:
        hour = (t / 3600.0) % 24.0
        phase = 2 * math.pi * (hour - 15.0 - self._ep_phase_h) / 24.0
        load = self._ep_peak * (0.35 + 0.65 * (0.5 + 0.5 * np.cos(phase)))
        for e in self.active(t, "traffic_surge"):
            load[e] = 0.985
        return load

    def state(self, t: float) -> FleetState:
        f = self.fleet
        rng = np.random.default_rng([self.seed, int(round(t * 1000)) & 0x7FFFFFFFFFFF])
        n = f.n_gpus
        ep_load = self.endpoint_load(t)

        # utilisation in 0..1 by workload
        util = np.zeros(n)
        train = f.gpu_workload == TRAINING
        util[train] = 0.88 + rng.normal(0, 0.02, train.sum())
        if ((t - self.start - CHECKPOINT_EVERY_S / 2) % CHECKPOINT_EVERY_S) < CHECKPOINT_S:
            util[train] = 0.15
        infer = f.gpu_workload == INFERENCE
        util[infer] = ep_load[f.gpu_endpoint[infer]] * (1 + rng.normal(0, 0.03, infer.sum()))
        idle = ~(train | infer)
        util[idle] = rng.uniform(0.0, 0.01, idle.sum())
        for tenant in self.active(t, "idle_allocation"):
            sel = f.gpu_tenant == tenant
            util[sel] = rng.uniform(0.0, 0.02, sel.sum())

        # slices follow their endpoint's load; their GPU's view depends on the slicing
        ns = len(f.slice_id)
        slice_util = np.clip(ep_load[f.slice_endpoint] * (1 + rng.normal(0, 0.04, ns)), 0.0, 1.0)
        for tenant in self.active(t, "idle_allocation"):
            sel = f.slice_tenant == tenant
            slice_util[sel] = rng.uniform(0.0, 0.02, sel.sum())
        busy_share = np.bincount(
            f.slice_gpu_idx, weights=slice_util * f.slice_fraction, minlength=n
        )
        sliced = np.bincount(f.slice_gpu_idx, minlength=n) > 0
        util[sliced] = busy_share[sliced]
        util = np.clip(util, 0.0, 0.995)

        mem_frac = np.where(train, 0.82, np.where(infer, 0.55 + 0.3 * util, 0.006))
        mem_frac[sliced] = 0.08 + 0.6 * util[sliced]
        kind = self._kind
        tdp = TDP_W[kind]
        temp = 31.0 + 46.0 * util + rng.normal(0, 0.8, n)
        sm_clock = SM_MAX_MHZ[kind] * np.where(util > 0.05, 0.97, 0.35)
        throttle = np.where(util > 0.05, 0, THROTTLE_GPU_IDLE).astype(np.int64)
        for g in self.active(t, "thermal"):
            temp[g] = 93.0 + rng.normal(0, 0.5)
            sm_clock[g] *= 0.58
            throttle[g] = THROTTLE_HW_THERMAL | THROTTLE_SW_THERMAL
        for e in self.active(t, "traffic_surge"):
            sel = f.gpu_endpoint == e
            mem_frac[sel] = 0.97
        ecc_dbe = np.zeros(n, dtype=np.int64)
        for g in self.active(t, "ecc_dbe"):
            ecc_dbe[g] = 1

        host_reporting = np.ones(f.n_hosts, dtype=bool)
        for h in self.active(t, "host_silent"):
            host_reporting[h] = False
        gpu_reporting = host_reporting[f.gpu_host_idx].copy()
        for g in self.active(t, "xid79"):
            gpu_reporting[g] = False

        power = tdp * (0.12 + 0.8 * util) + rng.normal(0, 3.0, n)
        util_pct = util * 100.0
        util_pct_reported = np.where(f.gpu_mig, np.nan, util_pct)

        # links
        nl = len(f.link_port)
        link_gpu = f.link_gpu_idx
        host_util = np.bincount(f.gpu_host_idx, weights=util, minlength=f.n_hosts) / np.maximum(
            np.bincount(f.gpu_host_idx, minlength=f.n_hosts), 1
        )
        host_train = np.bincount(f.gpu_host_idx, weights=train, minlength=f.n_hosts) > 0
        is_nvlink = link_gpu >= 0
        link_u = np.where(is_nvlink, util[np.maximum(link_gpu, 0)], host_util[f.link_host_idx])
        link_train = host_train[f.link_host_idx]
        share = np.where(
            link_train, np.where(is_nvlink, 0.35, 0.6), np.where(is_nvlink, 0.08, 0.05)
        )
        tx = f.link_rate * share * link_u * (1 + rng.normal(0, 0.05, nl))
        rx = f.link_rate * share * link_u * (1 + rng.normal(0, 0.05, nl))
        errors = np.zeros(nl, dtype=np.int64)
        link_up = np.ones(nl, dtype=bool)
        for li in self.active(t, "nvlink_crc"):
            errors[li] = int(rng.integers(200, 2000))
        for li in self.active(t, "ib_link_down"):
            link_up[li] = False
        for g in self.active(t, "xid79"):
            link_up[is_nvlink & (link_gpu == g)] = False
        # a down port carries nothing, whatever took it down
        tx = np.where(link_up, np.clip(tx, 0, None), 0.0)
        rx = np.where(link_up, np.clip(rx, 0, None), 0.0)
        link_reporting = host_reporting[f.link_host_idx]

        # endpoints: queueing-style latency from the load its GPUs carry
        lat = latency_factor(ep_load)
        ne = len(ENDPOINTS)
        jitter = 1 + rng.normal(0, 0.02, (4, ne))
        itl_p50 = self._ep_itl_base * lat * jitter[0]
        itl_p99 = itl_p50 * 1.35 * jitter[1]
        ttft_p50 = self._ep_ttft_base * lat**1.2 * jitter[2]
        ttft_p99 = ttft_p50 * 1.8 * jitter[3]
        out_tokens = 256.0
        e2e_p50 = ttft_p50 + itl_p50 * out_tokens
        e2e_p99 = ttft_p99 + itl_p99 * out_tokens

        # Real sources' precision: NVML and DCGM give integer %, degrees and MHz,
        # milliwatts and millijoules, and integer bytes/s; DCGM framebuffer use in whole
        # MiB; digits beyond those are noise no real fleet stores. Slice activity (DCGM's
        # GR_ENGINE_ACTIVE ratio) is a real fraction, which dcgm-exporter prints with
        # Go's "%f": 6 decimals of the ratio, 4 of the percentage. Latency quantiles
        # (interpolated from histograms) are real fractions: kept.
        def rnd(values: np.ndarray, digits: int) -> np.ndarray:
            return np.round(values, digits) if self.source_precision else values

        def mib(values: np.ndarray) -> np.ndarray:
            return (
                (np.round(values / MIB) * MIB).astype(np.int64)
                if self.source_precision
                else values.astype(np.int64)
            )

        util_pct_reported = rnd(util_pct_reported, 0)
        return FleetState(
            t=t,
            host_reporting=host_reporting,
            gpu_reporting=gpu_reporting,
            gpu_util_pct=util_pct_reported,
            gpu_mem_util_pct=rnd(util_pct * 0.7, 0),
            gpu_mem_used_bytes=mib(self._mem_total * mem_frac),
            gpu_mem_total_bytes=self._mem_total,
            gpu_power_w=rnd(power, 3),
            gpu_energy_j=rnd(self._energy_offset_j + tdp * 0.5 * max(t - self.start, 0.0), 3),
            gpu_temp_c=rnd(temp, 0),
            gpu_mem_temp_c=rnd(temp + 6.0, 0),
            gpu_sm_clock_mhz=rnd(sm_clock, 0),
            gpu_mem_clock_mhz=rnd(MEM_CLOCK_MHZ[kind] * np.where(util > 0.05, 1.0, 0.5), 0),
            gpu_pcie_tx_bytes_per_s=rnd(util * 2.0e9, 0),
            gpu_pcie_rx_bytes_per_s=rnd(util * 3.0e9, 0),
            gpu_ecc_sbe_total=self._ecc_sbe_base,
            gpu_ecc_dbe_total=ecc_dbe,
            gpu_throttle_reasons=throttle,
            slice_reporting=gpu_reporting[f.slice_gpu_idx],
            slice_util_pct=rnd(slice_util * 100.0, 4),
            slice_mem_used_bytes=mib(self._slice_mem_total * (0.1 + 0.7 * slice_util)),
            slice_mem_total_bytes=self._slice_mem_total,
            link_reporting=link_reporting,
            link_tx_bytes_per_s=rnd(tx, 0),
            link_rx_bytes_per_s=rnd(rx, 0),
            link_errors=errors,
            link_up=link_up,
            ep_load=ep_load,
            ep_itl_p50_ms=itl_p50,
            ep_itl_p99_ms=itl_p99,
            ep_ttft_p50_ms=ttft_p50,
            ep_ttft_p99_ms=ttft_p99,
            ep_e2e_p50_ms=e2e_p50,
            ep_e2e_p99_ms=e2e_p99,
            ep_requests_per_s=ep_load * self._ep_capacity_gpus * REQS_PER_S_PER_GPU,
        )
