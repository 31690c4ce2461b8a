"""A fake `pynvml` for one simulated host, driven by the simulated fleet.

It implements the part of NVIDIA's Python binding that `collector.py` calls,
with the same names, argument orders, units and errors (the real
`pynvml.NVMLError_*` classes), so the collector runs unchanged against either.
Values come from `collectors.sim.model.SimModel` at the fake's clock, so an
agent on the fake reports what the simulated fleet says.

What the fake reproduces because real drivers do it:
- MIG GPUs: whole-GPU utilisation is NotSupported; memory and processes come
  through MIG device handles whose GPU instance ids match the sim's slice ids
  `<gpu_uuid>/gi<N>`; per-instance activity through GPM (`nvmlGpmMigSampleGet`).
- NotSupported fields: memory temperature, ECC and remapped rows on the RTX PRO
  6000 (GDDR), NVLink on GPUs without it.
- Xid 79: while the sim's `xid79` fault is active the GPU is off the bus, every
  dynamic call on it raises GPU_IS_LOST and the event set delivers Xid 79.
- `old_driver=True`: no `_v3`/`_v2` process calls, no memory v2 (reserved),
  no `ClocksEventReasons` (only the older `ClocksThrottleReasons`).
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pynvml

from collectors.sim.model import FleetState, SimModel
from collectors.sim.topology import GPU_MODELS, IDLE, KIND_CODE, TENANTS

_KIND_NAMES = sorted(KIND_CODE, key=KIND_CODE.__getitem__)
# NVLink links per GPU, by GPU kind (H100 SXM: 18 x NVLink4; GB200: 18 x NVLink5).
DEFAULT_NVLINK_LINKS = {"gb200": 18, "h100": 18, "rtx6000": 0}
_GDDR_KINDS = {"rtx6000"}  # no HBM temperature sensor, ECC/remapping not reported
_GPM_KINDS = {"gb200", "h100", "rtx6000"}  # Hopper and newer


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # maps to the NVMLError_<Name> subclass


class SimStates:
    """FleetState per whole second, shared by every fake host of one fleet.

    The model computes the whole fleet at once, so fakes for many hosts in one
    process share this cache instead of each computing it.
    """

    def __init__(self, model: SimModel):
        self.model = model
        self._lock = threading.Lock()
        self._t: float | None = None
        self._state: FleetState | None = None
        self._prefilled: dict[float, FleetState] = {}

    def prefill(self, t0: float, seconds: int) -> None:
        """Compute the states of [t0, t0 + seconds) ahead (benchmarks time the collector alone)."""
        for k in range(seconds):
            sec = float(int(t0) + k)
            self._prefilled[sec] = self.model.state(sec)

    def at(self, t: float) -> FleetState:
        sec = float(int(t))
        pre = self._prefilled.get(sec)
        if pre is not None:
            return pre
        with self._lock:
            if self._t != sec:
                self._state = self.model.state(sec)
                self._t = sec
            return self._state  # type: ignore[return-value]


class _Handle:
    __slots__ = ("gpu", "slice", "gi", "parent")

    def __init__(self, gpu: int, slice_: int = -1, gi: int = 0, parent: _Handle | None = None):
        self.gpu = gpu  # fleet-wide GPU index
        self.slice = slice_  # fleet-wide slice index for MIG device handles, else -1
        self.gi = gi  # GPU instance id
        self.parent = parent


class _GpmMetric:
    __slots__ = ("metricId", "nvmlReturn", "value")

    def __init__(self) -> None:
        self.metricId = 0
        self.nvmlReturn = 0
        self.value = 0.0


class FakeGpmMetricsGet:
    """Stands in for pynvml.c_nvmlGpmMetricsGet_t (whose sample fields take ctypes pointers)."""

    def __init__(self) -> None:
        self.version = 0
        self.numMetrics = 0
        self.sample1: Any = None
        self.sample2: Any = None
        self.metrics = [_GpmMetric() for _ in range(8)]


# Names forwarded from the real module: constants and error classes only, never a call.
_FORWARD = re.compile(r"^(NVML_|NVMLError|nvmlEventType|nvmlMemory_v|nvmlClocksEventReason)")


class FakeNvml:
    """One host's NVML, as the `pynvml` module presents it."""

    c_nvmlGpmMetricsGet_t = FakeGpmMetricsGet

    def __init__(
        self,
        states: SimStates | SimModel,
        host: str,
        *,
        clock: Callable[[], float] = time.time,
        old_driver: bool = False,
        nvlink_links: dict[str, int] | None = None,
        gpm: bool = True,
    ):
        self.states = states if isinstance(states, SimStates) else SimStates(states)
        model = self.states.model
        f = model.fleet
        if host not in f.host:
            raise ValueError(f"host {host!r} is not in the simulated fleet")
        self.model, self.fleet, self.host = model, f, host
        self.clock = clock
        self.old_driver = old_driver
        self.gpm = gpm
        h = f.host.index(host)
        self._host_idx = h
        self._gpus = [int(g) for g in np.flatnonzero(f.gpu_host_idx == h)]
        self._gpus.sort(key=lambda g: int(f.gpu_index[g]))
        links = {**DEFAULT_NVLINK_LINKS, **(nvlink_links or {})}
        self._kind = {g: _KIND_NAMES[int(f.gpu_kind[g])] for g in self._gpus}
        self._n_links = {g: links[self._kind[g]] for g in self._gpus}
        # the sim's aggregate NVLink row per GPU, split evenly across its links
        self._nvlink_row = {
            int(f.link_gpu_idx[i]): i for i in range(len(f.link_port)) if f.link_kind[i] == "nvlink"
        }
        self._mig: dict[int, list[_Handle]] = {}
        self._handles = {g: _Handle(g) for g in self._gpus}
        for s, gidx in enumerate(f.slice_gpu_idx):
            g = int(gidx)
            if g in self._handles and f.slice_kind[s] == "mig":
                gi = int(f.slice_id[s].rsplit("/gi", 1)[1])
                self._mig.setdefault(g, []).append(_Handle(g, s, gi, self._handles[g]))
        self._nvlink_kib: dict[tuple[int, int], list[float]] = {}  # (gpu, link) -> [tx, rx]
        self._nvlink_last_t: dict[int, float] = {}
        self._events: list[SimpleNamespace] = []
        self._event_lock = threading.Lock()
        self._inited = 0
        self.calls = 0  # every NVML call made, for cost accounting in benchmarks

    # constants and error classes are copied from the real module below the class
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"fake NVML has no {name!r}")

    # -- helpers --------------------------------------------------------------------------
    def _state(self, h: _Handle) -> FleetState:
        self.calls += 1
        if not self._inited:
            raise _err(pynvml.NVML_ERROR_UNINITIALIZED)
        st = self.states.at(self.clock())
        if not st.gpu_reporting[h.gpu]:
            raise _err(pynvml.NVML_ERROR_GPU_IS_LOST)
        return st

    def _whole_gpu(self, h: _Handle) -> None:
        if h.slice >= 0:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    # -- init and inventory ---------------------------------------------------------------
    def nvmlInit(self) -> None:
        self._inited += 1

    def nvmlShutdown(self) -> None:
        self._inited = max(0, self._inited - 1)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "470.256.02" if self.old_driver else self.fleet.host_driver[self._host_idx]

    def nvmlDeviceGetCount(self) -> int:
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not 0 <= index < len(self._gpus):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._handles[self._gpus[index]]

    def nvmlDeviceGetIndex(self, h: _Handle) -> int:
        return int(self.fleet.gpu_index[h.gpu])

    def nvmlDeviceGetUUID(self, h: _Handle) -> str:
        if h.slice >= 0:  # MIG devices have their own UUIDs
            return f"MIG-{self.fleet.gpu_uuid[h.gpu][4:]}-{h.gi}"
        return self.fleet.gpu_uuid[h.gpu]

    def nvmlDeviceGetName(self, h: _Handle) -> str:
        name = GPU_MODELS[self._kind[h.gpu]][0]
        if h.slice >= 0:
            return f"{name} MIG {self.fleet.slice_profile[h.slice]}"
        return name

    def nvmlDeviceGetPciInfo(self, h: _Handle) -> SimpleNamespace:
        return SimpleNamespace(busId=self.fleet.gpu_pci[h.gpu])

    def nvmlDeviceGetMigMode(self, h: _Handle) -> list[int]:
        if self._kind[h.gpu] == "gb200" or h.slice >= 0:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        on = int(bool(self.fleet.gpu_mig[h.gpu]))
        return [on, on]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: _Handle) -> int:
        return 7 if self.fleet.gpu_mig[h.gpu] else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: _Handle, index: int) -> _Handle:
        devs = self._mig.get(h.gpu, [])
        if not 0 <= index < len(devs):
            raise _err(pynvml.NVML_ERROR_NOT_FOUND)
        return devs[index]

    def nvmlDeviceIsMigDeviceHandle(self, h: _Handle) -> int:
        return int(h.slice >= 0)

    def nvmlDeviceGetGpuInstanceId(self, h: _Handle) -> int:
        if h.slice < 0:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return h.gi

    # -- samples ----------------------------------------------------------------------------
    def nvmlDeviceGetUtilizationRates(self, h: _Handle) -> SimpleNamespace:
        st = self._state(h)
        if h.slice >= 0 or self.fleet.gpu_mig[h.gpu]:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(
            gpu=int(round(st.gpu_util_pct[h.gpu])), memory=int(round(st.gpu_mem_util_pct[h.gpu]))
        )

    def nvmlDeviceGetMemoryInfo(self, h: _Handle, version: int | None = None) -> SimpleNamespace:
        if version and self.old_driver:
            raise _err(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        st = self._state(h)
        if h.slice >= 0:
            total = int(st.slice_mem_total_bytes[h.slice])
            used = int(st.slice_mem_used_bytes[h.slice])
        else:
            total = int(st.gpu_mem_total_bytes[h.gpu])
            used = int(st.gpu_mem_used_bytes[h.gpu])
        out = SimpleNamespace(total=total, used=used, free=total - used)
        if version:
            out.reserved = 512 * 1024 * 1024 if h.slice < 0 else 0
            out.version = version
        return out

    def nvmlDeviceGetPowerUsage(self, h: _Handle) -> int:
        st = self._state(h)
        self._whole_gpu(h)
        return int(round(st.gpu_power_w[h.gpu] * 1000.0))  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h: _Handle) -> int:
        st = self._state(h)
        self._whole_gpu(h)
        return int(st.gpu_energy_j[h.gpu] * 1000.0)  # mJ

    def nvmlDeviceGetTemperature(self, h: _Handle, sensor: int) -> int:
        st = self._state(h)
        self._whole_gpu(h)
        return int(round(st.gpu_temp_c[h.gpu]))

    def nvmlDeviceGetClockInfo(self, h: _Handle, clock_type: int) -> int:
        st = self._state(h)
        self._whole_gpu(h)
        if clock_type == pynvml.NVML_CLOCK_SM:
            return int(round(st.gpu_sm_clock_mhz[h.gpu]))
        if clock_type == pynvml.NVML_CLOCK_MEM:
            return int(round(st.gpu_mem_clock_mhz[h.gpu]))
        raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetPcieThroughput(self, h: _Handle, counter: int) -> int:
        st = self._state(h)
        self._whole_gpu(h)
        v = (
            st.gpu_pcie_tx_bytes_per_s
            if counter == pynvml.NVML_PCIE_UTIL_TX_BYTES
            else st.gpu_pcie_rx_bytes_per_s
        )
        return int(v[h.gpu] / 1024.0)  # KB/s

    def _no_ecc(self, h: _Handle) -> None:
        if self._kind[h.gpu] in _GDDR_KINDS or h.slice >= 0:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetTotalEccErrors(self, h: _Handle, error_type: int, counter_type: int) -> int:
        st = self._state(h)
        self._no_ecc(h)
        if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return int(st.gpu_ecc_sbe_total[h.gpu])
        return int(st.gpu_ecc_dbe_total[h.gpu])

    def nvmlDeviceGetRemappedRows(self, h: _Handle) -> tuple[int, int, int, int]:
        st = self._state(h)
        self._no_ecc(h)
        dbe = int(st.gpu_ecc_dbe_total[h.gpu])
        return (int(st.gpu_ecc_sbe_total[h.gpu]), dbe, int(dbe > 0), 0)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: _Handle) -> int:
        if self.old_driver:
            raise _err(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return self.nvmlDeviceGetCurrentClocksThrottleReasons(h)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: _Handle) -> int:
        st = self._state(h)
        self._whole_gpu(h)
        return int(st.gpu_throttle_reasons[h.gpu])

    def nvmlDeviceGetFieldValues(self, h: _Handle, field_ids: list[Any]) -> list[SimpleNamespace]:
        st = self._state(h)
        now = self.clock()
        g = h.gpu
        n_links = self._n_links[g]
        # advance the per-link KiB counters to now at the sim's current rates
        row = self._nvlink_row.get(g)
        if n_links and row is not None:
            dt = now - self._nvlink_last_t.get(g, now)
            self._nvlink_last_t[g] = now
            tx = st.link_tx_bytes_per_s[row] / n_links
            rx = st.link_rx_bytes_per_s[row] / n_links
            for link in range(n_links):
                c = self._nvlink_kib.setdefault((g, link), [0.0, 0.0])
                c[0] += tx * dt / 1024.0
                c[1] += rx * dt / 1024.0
        out = []
        ts_us = int(now * 1e6)
        for fid in field_ids:
            fid, scope = fid if isinstance(fid, tuple) else (fid, 0)
            v = SimpleNamespace(
                fieldId=fid,
                scopeId=scope,
                timestamp=ts_us,
                latencyUsec=0,
                valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
                nvmlReturn=pynvml.NVML_SUCCESS,
                value=SimpleNamespace(ullVal=0, dVal=0.0, uiVal=0, ulVal=0, sllVal=0, siVal=0),
            )
            nvlink = fid in (
                pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
                pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX,
                pynvml.NVML_FI_DEV_NVLINK_GET_STATE,
            )
            if fid == pynvml.NVML_FI_DEV_MEMORY_TEMP and self._kind[g] not in _GDDR_KINDS:
                v.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                v.value.uiVal = int(round(st.gpu_mem_temp_c[g]))
            elif fid == pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT and n_links:
                v.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                v.value.uiVal = n_links
            elif nvlink and n_links and row is not None and 0 <= scope < n_links:
                if fid == pynvml.NVML_FI_DEV_NVLINK_GET_STATE:
                    v.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                    v.value.uiVal = int(bool(st.link_up[row]))
                else:
                    c = self._nvlink_kib[(g, scope)]
                    v.value.ullVal = int(
                        c[0 if fid == pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX else 1]
                    )
            else:
                v.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            out.append(v)
        return out

    def nvmlDeviceGetNvLinkErrorCounter(self, h: _Handle, link: int, counter: int) -> int:
        st = self._state(h)
        row = self._nvlink_row.get(h.gpu)
        if not self._n_links[h.gpu] or row is None or not 0 <= link < self._n_links[h.gpu]:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        # the sim gives errors per interval on the GPU's aggregate; count them on link 0
        return int(st.link_errors[row]) if link == 0 else 0

    # -- processes ------------------------------------------------------------------------
    def _procs(self, h: _Handle) -> list[SimpleNamespace]:
        st = self._state(h)
        f, g = self.fleet, h.gpu
        if h.slice >= 0:
            used = int(st.slice_mem_used_bytes[h.slice] * 0.9)
            return [
                SimpleNamespace(
                    pid=self._pid(g, h.gi),
                    usedGpuMemory=used,
                    gpuInstanceId=h.gi,
                    computeInstanceId=0,
                )
            ]
        if f.gpu_mig[g]:
            return []  # processes on a MIG GPU are listed per MIG device
        shares = [s for s in np.flatnonzero(f.slice_gpu_idx == g)]
        if shares:  # fractional shares: one process per share on the whole GPU
            return [
                SimpleNamespace(
                    pid=self._pid(g, 100 + k),
                    usedGpuMemory=int(st.slice_mem_used_bytes[s] * 0.9),
                    gpuInstanceId=0xFFFFFFFF,
                    computeInstanceId=0xFFFFFFFF,
                )
                for k, s in enumerate(shares)
            ]
        if f.gpu_workload[g] == IDLE:
            return []
        used = int(st.gpu_mem_used_bytes[g] * 0.95)
        return [
            SimpleNamespace(
                pid=self._pid(g, 0),
                usedGpuMemory=used,
                gpuInstanceId=0xFFFFFFFF,
                computeInstanceId=0xFFFFFFFF,
            )
        ]

    @staticmethod
    def _pid(g: int, k: int) -> int:
        return 100_000 + g * 256 + k

    def nvmlDeviceGetComputeRunningProcesses_v3(self, h: _Handle) -> list[SimpleNamespace]:
        if self.old_driver:
            raise _err(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return self._procs(h)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, h: _Handle) -> list[SimpleNamespace]:
        if self.old_driver:
            raise _err(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return self._procs(h)

    def cgroup_of(self, pid: int) -> str | None:
        """What /proc/<pid>/cgroup would say for a fake process (cgroup v2 path)."""
        rel = pid - 100_000
        if rel < 0:
            return None
        g, k = divmod(rel, 256)
        f = self.fleet
        if not 0 <= g < f.n_gpus:
            return None
        tenant = -1
        if f.gpu_mig[g]:
            sid = f"{f.gpu_uuid[g]}/gi{k}"
            if sid in f.slice_id:
                tenant = int(f.slice_tenant[f.slice_id.index(sid)])
        elif k >= 100:
            shares = np.flatnonzero(f.slice_gpu_idx == g)
            if k - 100 < len(shares):
                tenant = int(f.slice_tenant[shares[k - 100]])
        else:
            tenant = int(f.gpu_tenant[g])
        cid = f"{zlib.crc32(f'{g}:{k}'.encode()):08x}" * 8
        if tenant < 0:
            return f"0::/system.slice/docker-{cid}.scope"
        return f"0::/tenants.slice/tenant-{TENANTS[tenant][0]}.slice/cri-containerd-{cid}.scope"

    # -- GPM (Hopper and newer) ------------------------------------------------------------
    def nvmlGpmQueryDeviceSupport(self, h: _Handle) -> SimpleNamespace:
        return SimpleNamespace(
            version=1, isSupportedDevice=int(self.gpm and self._kind[h.gpu] in _GPM_KINDS)
        )

    def nvmlGpmSampleAlloc(self) -> SimpleNamespace:
        return SimpleNamespace(t=None, gpu=-1, gi=0)

    def nvmlGpmSampleFree(self, sample: SimpleNamespace) -> None:
        return None

    def nvmlGpmMigSampleGet(self, h: _Handle, gi: int, sample: SimpleNamespace) -> SimpleNamespace:
        self._state(h)
        if not (self.gpm and self._kind[h.gpu] in _GPM_KINDS):
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if not any(m.gi == gi for m in self._mig.get(h.gpu, [])):
            raise _err(pynvml.NVML_ERROR_NOT_FOUND)
        sample.t, sample.gpu, sample.gi = self.clock(), h.gpu, gi
        return sample

    def nvmlGpmMetricsGet(self, mg: FakeGpmMetricsGet) -> FakeGpmMetricsGet:
        s1, s2 = mg.sample1, mg.sample2
        if s1 is None or s2 is None or s1.t is None or s2.t is None or s2.t <= s1.t:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        st = self.states.at(s2.t)
        sid = f"{self.fleet.gpu_uuid[s2.gpu]}/gi{s2.gi}"
        s = self.fleet.slice_id.index(sid)
        for m in mg.metrics[: mg.numMetrics]:
            if m.metricId == pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL:
                m.value, m.nvmlReturn = float(st.slice_util_pct[s]), pynvml.NVML_SUCCESS
            else:
                m.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return mg

    # -- events ---------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> SimpleNamespace:
        return SimpleNamespace(gpus=set(), since=self.clock(), pending=deque())

    def nvmlDeviceRegisterEvents(self, h: _Handle, event_types: int, es: SimpleNamespace) -> None:
        if h.slice >= 0:  # events register on the parent GPU
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if event_types & pynvml.nvmlEventTypeXidCriticalError:
            es.gpus.add(h.gpu)

    def nvmlEventSetWait(self, es: SimpleNamespace, timeout_ms: int) -> SimpleNamespace:
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            with self._event_lock:
                now = self.clock()
                if now > es.since:
                    for e in self.model.events_between(es.since, now):
                        if e.kind == "xid" and e.gpu_idx in es.gpus:
                            es.pending.append(
                                SimpleNamespace(
                                    device=self._handles[e.gpu_idx],
                                    eventType=pynvml.nvmlEventTypeXidCriticalError,
                                    eventData=int(e.code or 0),
                                    gpuInstanceId=0xFFFFFFFF,
                                    computeInstanceId=0xFFFFFFFF,
                                    t=e.t,
                                )
                            )
                    es.since = now
                if es.pending:
                    return es.pending.popleft()
            left = deadline - time.monotonic()
            if left <= 0:
                raise _err(pynvml.NVML_ERROR_TIMEOUT)
            time.sleep(min(left, 0.05))

    def nvmlEventSetFree(self, es: SimpleNamespace) -> None:
        es.gpus.clear()


for _name in dir(pynvml):
    if _FORWARD.match(_name) and not hasattr(FakeNvml, _name):
        setattr(FakeNvml, _name, getattr(pynvml, _name))
