"""The simulated fleet as a pull source: each gather samples the model at `now`
and returns columnar batches for every table, as a real fleet's collectors would.

The first gather also describes the fleet (hosts, GPUs, slices, tenants,
endpoints, assignments). Every `processes_every`-th gather lists the processes
on busy GPUs and slices, as the NVML agent lists them every few polls. String columns are built once as Arrow arrays and
filtered by the reporting masks, so a tick costs a few numpy and Arrow calls
regardless of fleet size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from collectors.base import Gathered, register
from collectors.options import parse_options
from collectors.sim.faults import DEFAULT_FAULTS, DEFAULT_PERIOD_S, Fault
from collectors.sim.model import FleetState, SimModel
from collectors.sim.processes import BUSY_UTIL_PCT, build_processes
from collectors.sim.topology import ENDPOINTS, GPU_MODELS, KIND_CODE, TENANTS
from storage.batch import Batch, make_batch

_KIND_NAMES = sorted(KIND_CODE, key=KIND_CODE.__getitem__)


def to_epoch(ts: datetime) -> float:
    return ts.timestamp() if ts.tzinfo else ts.replace(tzinfo=UTC).timestamp()


def ts_array(t: float, n: int) -> pa.Array:
    """n copies of epoch second t as a UTC microsecond timestamp column."""
    return pa.array(np.full(n, int(round(t * 1e6)), dtype=np.int64), type=pa.int64()).cast(
        pa.timestamp("us")
    )


def _masked(values: np.ndarray) -> pa.Array:
    """float array with NaN -> NULL (NaN means the source cannot say)."""
    return pa.array(values, mask=np.isnan(values))


class SimSource:
    """Pull source "sim": the whole simulated fleet, sampled at each gather."""

    def __init__(
        self,
        *,
        name: str = "sim",
        interval_s: float = 1.0,
        seed: int = 7,
        scale: int = 1,
        faults: tuple[Fault, ...] = DEFAULT_FAULTS,
        period_s: float | None = DEFAULT_PERIOD_S,
        start: datetime | None = None,
        first_unit: int = 0,
        events_after: datetime | None = None,
        processes_every: int = 5,
    ):
        """`events_after`: events up to that time are left out (another source wrote
        them: the demo's back-fill covers the past of a live source with the same start)."""
        self.name = name
        self.interval_s = interval_s
        self._model_args: dict[str, Any] = dict(
            seed=seed, scale=scale, faults=faults, period_s=period_s, first_unit=first_unit
        )
        self._start = start
        self.model: SimModel | None = None
        self._last_t: float | None = None
        self._events_after = to_epoch(events_after) if events_after is not None else None
        self.processes_every = max(1, processes_every)
        self._gathers = 0

    def ensure_model(self, now: datetime) -> SimModel:
        if self.model is None:
            start = to_epoch(self._start or now)
            self.model = SimModel(start=start, **self._model_args)
            f = self.model.fleet
            self._host = pa.array(f.host)
            self._gpu_uuid = pa.array(f.gpu_uuid)
            self._gpu_host = self._host.take(pa.array(f.gpu_host_idx))
            self._slice_id = pa.array(f.slice_id)
            self._slice_gpu = self._gpu_uuid.take(pa.array(f.slice_gpu_idx))
            self._link_host = self._host.take(pa.array(f.link_host_idx))
            self._link_kind = pa.array(f.link_kind)
            self._link_port = pa.array(f.link_port)
            gi = f.link_gpu_idx
            self._link_gpu = self._gpu_uuid.take(pa.array(np.where(gi >= 0, gi, 0), mask=gi < 0))
            self._link_rate = pa.array(f.link_rate)
            self._procs = build_processes(f)
            p = self._procs
            self._proc_host = self._gpu_host.take(pa.array(p.gpu_idx))
            self._proc_gpu = self._gpu_uuid.take(pa.array(p.gpu_idx))
            self._proc_cols = {
                "slice_id": pa.array(p.slice_id, pa.string()),
                "pid": pa.array(p.pid),
                "container": pa.array(p.container, pa.string()),
                "cgroup": pa.array(p.cgroup, pa.string()),
                "tenant_guess": pa.array(p.tenant, pa.string()),
            }
        return self.model

    async def gather(self, now: datetime) -> Gathered:
        return self.sample(now)

    def sample(self, now: datetime) -> Gathered:
        """Synchronous core of gather (used by benchmarks and tests directly)."""
        first = self.model is None
        model = self.ensure_model(now)
        t = to_epoch(now)
        batches = self.describe(now) if first else []
        state = model.state(t)
        batches += self.sample_batches(state)
        if self._gathers % self.processes_every == 0:
            batches.append(self.process_batch(state))
        self._gathers += 1
        prev = self._last_t if self._last_t is not None else model.start - 1e-6
        if self._events_after is not None:
            prev = max(prev, self._events_after)
        batches += self.event_batches(prev, t)
        self._last_t = t
        return Gathered(batches)

    async def close(self) -> None:
        return None

    def _sampled(self) -> SimModel:
        """The model, built by the first sample (every batch method runs after it)."""
        if self.model is None:
            raise RuntimeError("SimSource: sample() before asking for batches")
        return self.model

    # -- batches ----------------------------------------------------------------
    def describe(self, now: datetime) -> list[Batch]:
        """The fleet's inventory: hosts, GPUs, slices, tenants, endpoints, assignments."""
        model = self._sampled()
        f = model.fleet
        start = datetime.fromtimestamp(model.start, UTC).replace(tzinfo=None)
        n_h = f.n_hosts
        kinds = [_KIND_NAMES[k] for k in f.gpu_kind]
        gpu_assigned = f.gpu_tenant >= 0
        tenants = [t[0] for t in TENANTS]
        return [
            make_batch(
                "hosts",
                {
                    "host": self._host,
                    "cluster": f.host_cluster,
                    "rack": f.host_rack,
                    "rack_slot": f.host_slot,
                    "nvlink_domain": f.host_domain,
                    "model": f.host_model,
                    "driver_version": f.host_driver,
                    "first_seen": [start] * n_h,
                    "last_seen": [start] * n_h,
                },
            ),
            make_batch(
                "gpus",
                {
                    "gpu_uuid": self._gpu_uuid,
                    "host": self._gpu_host,
                    "gpu_index": f.gpu_index,
                    "name": [GPU_MODELS[k][0] for k in kinds],
                    "pci_bus_id": f.gpu_pci,
                    "mig_mode": f.gpu_mig,
                    "mem_total_bytes": [GPU_MODELS[k][1] for k in kinds],
                },
            ),
            make_batch(
                "slices",
                {
                    "slice_id": self._slice_id,
                    "gpu_uuid": self._slice_gpu,
                    "kind": f.slice_kind,
                    "profile": f.slice_profile,
                    "fraction": f.slice_fraction,
                    "mem_total_bytes": model.slice_mem_total_bytes,
                },
            ),
            make_batch(
                "tenants",
                {
                    "tenant": tenants,
                    "display_name": [t[1] for t in TENANTS],
                    "tier": [t[2] for t in TENANTS],
                },
            ),
            make_batch(
                "endpoints",
                {
                    "endpoint": [e[0] for e in ENDPOINTS],
                    "tenant": [e[1] for e in ENDPOINTS],
                    "model": [e[2] for e in ENDPOINTS],
                    "itl_target_ms": [e[5] for e in ENDPOINTS],
                    "ttft_target_ms": [e[6] for e in ENDPOINTS],
                },
            ),
            make_batch(
                "assignments",
                {
                    "tenant": [tenants[i] for i in f.gpu_tenant[gpu_assigned]]
                    + [tenants[i] for i in f.slice_tenant],
                    "gpu_uuid": pa.concat_arrays(
                        [
                            self._gpu_uuid.filter(pa.array(gpu_assigned)),
                            self._slice_gpu,
                        ]
                    ),
                    "slice_id": [None] * int(gpu_assigned.sum()) + f.slice_id,
                    "fraction": np.concatenate(
                        [np.ones(int(gpu_assigned.sum())), f.slice_fraction]
                    ),
                    "valid_from": [start] * (int(gpu_assigned.sum()) + len(f.slice_id)),
                },
            ),
        ]

    def sample_batches(self, s: FleetState) -> list[Batch]:
        src = self.name
        g = pa.array(s.gpu_reporting)
        n_g = int(s.gpu_reporting.sum())

        def gsel(values: np.ndarray) -> pa.Array:
            return (
                _masked(values).filter(g)
                if values.dtype.kind == "f"
                else pa.array(values).filter(g)
            )

        gpu = make_batch(
            "gpu_samples",
            {
                "ts": ts_array(s.t, n_g),
                "host": self._gpu_host.filter(g),
                "gpu_uuid": self._gpu_uuid.filter(g),
                "util_pct": gsel(s.gpu_util_pct),
                "mem_util_pct": gsel(s.gpu_mem_util_pct),
                "mem_used_bytes": gsel(s.gpu_mem_used_bytes),
                "mem_total_bytes": gsel(s.gpu_mem_total_bytes),
                "power_w": gsel(s.gpu_power_w),
                "energy_j": gsel(s.gpu_energy_j),
                "temp_c": gsel(s.gpu_temp_c),
                "mem_temp_c": gsel(s.gpu_mem_temp_c),
                "sm_clock_mhz": gsel(s.gpu_sm_clock_mhz),
                "mem_clock_mhz": gsel(s.gpu_mem_clock_mhz),
                "pcie_tx_bytes_per_s": gsel(s.gpu_pcie_tx_bytes_per_s),
                "pcie_rx_bytes_per_s": gsel(s.gpu_pcie_rx_bytes_per_s),
                "ecc_sbe_total": gsel(s.gpu_ecc_sbe_total),
                "ecc_dbe_total": gsel(s.gpu_ecc_dbe_total),
                "throttle_reasons": gsel(s.gpu_throttle_reasons),
                "source": [src] * n_g,
            },
        )
        sm = pa.array(s.slice_reporting)
        n_s = int(s.slice_reporting.sum())
        slices = make_batch(
            "slice_samples",
            {
                "ts": ts_array(s.t, n_s),
                "slice_id": self._slice_id.filter(sm),
                "gpu_uuid": self._slice_gpu.filter(sm),
                "util_pct": pa.array(s.slice_util_pct).filter(sm),
                "mem_used_bytes": pa.array(s.slice_mem_used_bytes).filter(sm),
                "mem_total_bytes": pa.array(s.slice_mem_total_bytes).filter(sm),
                "source": [src] * n_s,
            },
        )
        lm = pa.array(s.link_reporting)
        n_l = int(s.link_reporting.sum())
        links = make_batch(
            "link_samples",
            {
                "ts": ts_array(s.t, n_l),
                "host": self._link_host.filter(lm),
                "kind": self._link_kind.filter(lm),
                "port": self._link_port.filter(lm),
                "gpu_uuid": self._link_gpu.filter(lm),
                "tx_bytes_per_s": pa.array(s.link_tx_bytes_per_s).filter(lm),
                "rx_bytes_per_s": pa.array(s.link_rx_bytes_per_s).filter(lm),
                "line_rate_bytes_per_s": self._link_rate.filter(lm),
                "errors": pa.array(s.link_errors).filter(lm),
                "link_up": pa.array(s.link_up).filter(lm),
                "source": [src] * n_l,
            },
        )
        ne = len(ENDPOINTS)
        latency = make_batch(
            "latency_samples",
            {
                "ts": ts_array(s.t, ne),
                "tenant": [e[1] for e in ENDPOINTS],
                "endpoint": [e[0] for e in ENDPOINTS],
                "model": [e[2] for e in ENDPOINTS],
                "itl_p50_ms": s.ep_itl_p50_ms,
                "itl_p99_ms": s.ep_itl_p99_ms,
                "ttft_p50_ms": s.ep_ttft_p50_ms,
                "ttft_p99_ms": s.ep_ttft_p99_ms,
                "e2e_p50_ms": s.ep_e2e_p50_ms,
                "e2e_p99_ms": s.ep_e2e_p99_ms,
                "requests_per_s": s.ep_requests_per_s,
                "source": [src] * ne,
            },
        )
        h = pa.array(s.host_reporting)
        n_h = int(s.host_reporting.sum())
        hosts = make_batch("hosts", {"host": self._host.filter(h), "last_seen": ts_array(s.t, n_h)})
        return [gpu, slices, links, latency, hosts]

    def process_batch(self, s: FleetState) -> Batch:
        """The processes running at `s`: on every reporting GPU or slice that is busy."""
        p = self._procs
        on_slice = p.slice_idx >= 0
        si = np.maximum(p.slice_idx, 0)
        util = np.where(on_slice, s.slice_util_pct[si], s.gpu_util_pct[p.gpu_idx])
        used = np.where(
            on_slice, s.slice_mem_used_bytes[si] * 0.9, s.gpu_mem_used_bytes[p.gpu_idx] * 0.95
        ).astype(np.int64)
        keep = s.gpu_reporting[p.gpu_idx] & (np.nan_to_num(util) >= BUSY_UTIL_PCT)
        m = pa.array(keep)
        n = int(keep.sum())
        return make_batch(
            "processes",
            {
                "ts": ts_array(s.t, n),
                "host": self._proc_host.filter(m),
                "gpu_uuid": self._proc_gpu.filter(m),
                **{k: v.filter(m) for k, v in self._proc_cols.items()},
                "used_mem_bytes": pa.array(used).filter(m),
                "source": [self.name] * n,
            },
        )

    def event_batches(self, t0: float, t1: float) -> list[Batch]:
        model = self._sampled()
        events = model.events_between(t0, t1)
        if not events:
            return []
        f = model.fleet
        return [
            make_batch(
                "events",
                {
                    "ts": [datetime.fromtimestamp(e.t, UTC).replace(tzinfo=None) for e in events],
                    "host": [f.host[e.host_idx] for e in events],
                    "gpu_uuid": [f.gpu_uuid[e.gpu_idx] if e.gpu_idx >= 0 else None for e in events],
                    "kind": [e.kind for e in events],
                    "code": [e.code for e in events],
                    "detail": [e.detail for e in events],
                    "source": [self.name] * len(events),
                },
            )
        ]


@dataclass(frozen=True)
class SimOptions:
    """Config keys of a `kind = "sim"` source."""

    name: str = "sim"
    interval_s: float = 1.0  # seconds between samples
    seed: int = 7  # same seed, same fleet and same numbers
    scale: int = 1  # fleet multiplier: 1 -> 304 GPUs, 33 -> 10,032 GPUs
    first_unit: int = 0  # the first unit (factory) simulated: daemons sharing one lake
    faults: bool = True  # inject the demo's fault schedule (repeats hourly)

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if not 1 <= self.scale <= 1000:
            raise ValueError("scale must be between 1 and 1000")
        if not 0 <= self.first_unit <= 100_000:
            raise ValueError("first_unit must be between 0 and 100000")
        if self.first_unit and self.faults:  # the fault schedule names hosts of unit 0
            raise ValueError("first_unit > 0 needs faults = false")


@register("sim")
def _sim_from_config(options: Mapping[str, Any], where: str) -> SimSource:
    o = parse_options(SimOptions, options, where)
    return SimSource(
        name=o.name,
        interval_s=o.interval_s,
        seed=o.seed,
        scale=o.scale,
        first_unit=o.first_unit,
        faults=DEFAULT_FAULTS if o.faults else (),
    )
