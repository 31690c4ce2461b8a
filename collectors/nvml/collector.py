"""The NVML collector: one host's GPUs, MIG instances, processes and Xid events as columns.

`NvmlCollector(library).poll()` returns one `Poll`: per-section dicts of equal-length
lists (the shape of the MQTT report, see report.py), in the store's units.

Habits taken from nvitop and real drivers:
- every NVML call is wrapped: NotSupported (and similar) becomes None for that
  field and that GPU stops being asked; a missing function (old driver) is
  remembered and its older variant used (processes v3 -> v2, memory v2 -> v1,
  ClocksEventReasons -> ClocksThrottleReasons);
- a GPU that is lost (Xid 79, off the bus) is left out of the poll and named in
  `lost`, never an exception out of `poll`;
- handles, names, UUIDs and MIG layouts are looked up once (`rescan` refreshes);
- process listing costs milliseconds on real drivers, so it runs every
  `processes_every` polls;
- Xid events come from an NVML event set waited on in a thread (the wait
  blocks), drained by each poll.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collectors.nvml.library import NvmlLibrary, container_of, tenant_of

# gpu section columns, in report order (units in the names)
GPU_FIELDS = (
    "uuid",
    "util_pct",
    "mem_util_pct",
    "mem_used_bytes",
    "mem_total_bytes",
    "mem_reserved_bytes",
    "power_w",
    "energy_j",
    "temp_c",
    "mem_temp_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "pcie_tx_bytes_per_s",
    "pcie_rx_bytes_per_s",
    "ecc_sbe_total",
    "ecc_dbe_total",
    "remapped_rows_correctable",
    "remapped_rows_uncorrectable",
    "remap_pending",
    "remap_failed",
    "throttle_reasons",
    # per GPU: a list with one value per NVLink link, or None without NVLink
    "nvlink_tx_bytes_per_s",
    "nvlink_rx_bytes_per_s",
    "nvlink_errors",
    "nvlink_up",
)
SLICE_FIELDS = ("id", "gpu", "util_pct", "mem_used_bytes", "mem_total_bytes")
PROC_FIELDS = ("gpu", "slice_id", "pid", "used_mem_bytes", "container", "cgroup", "tenant_guess")
XID_FIELDS = ("ts", "gpu_uuid", "code")
INV_FIELDS = ("uuid", "index", "name", "pci_bus_id", "mig_mode")
INV_SLICE_FIELDS = ("id", "gpu_uuid", "profile")


class _Lost(Exception):
    """The GPU answered GPU_IS_LOST: skip it this poll."""


@dataclass(slots=True)
class _Mig:
    handle: Any
    gi: int
    slice_id: str
    profile: str | None
    samples: list[Any] = field(default_factory=list)  # two GPM samples, swapped each poll
    have_prev: bool = False


@dataclass(slots=True)
class _Gpu:
    i: int
    handle: Any
    uuid: str
    index: int
    name: str | None
    pci_bus_id: str | None
    mig: bool
    n_links: int
    gpm: bool
    migs: list[_Mig] = field(default_factory=list)
    link_prev: list[tuple[float, float, float] | None] = field(default_factory=list)
    err_prev: list[int | None] = field(default_factory=list)


@dataclass(slots=True)
class Poll:
    ts: float
    gpu: dict[str, list[Any]]
    slice: dict[str, list[Any]]
    proc: dict[str, list[Any]] | None  # None when processes were not listed this poll
    xid: dict[str, list[Any]]
    lost: list[str]


def _cols(names: tuple[str, ...]) -> dict[str, list[Any]]:
    return {n: [] for n in names}


def _value_members(nvml: Any) -> dict[int, str]:
    """nvmlValue_t union member per NVML_VALUE_TYPE_* code."""
    return {
        nvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
        nvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        nvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        nvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        nvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        nvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    }


def _field_value(v: Any, members: dict[int, str]) -> float | int | None:
    """A field value, or None when NVML returned an error for it (NotSupported...)."""
    if v.nvmlReturn != 0:  # NVML_SUCCESS
        return None
    member = members.get(v.valueType)
    return getattr(v.value, member) if member else None


def _profile(mig_name: str | None) -> str | None:
    # "NVIDIA H100 80GB HBM3 MIG 1g.10gb" -> "1g.10gb"
    if mig_name and " MIG " in mig_name:
        return mig_name.rsplit(" MIG ", 1)[1].strip()
    return None


class NvmlCollector:
    def __init__(
        self,
        library: NvmlLibrary,
        *,
        processes_every: int = 5,
        events: bool = True,
        clock: Callable[[], float] = time.time,
    ):
        self.lib = library
        self.nvml = library.nvml
        self.clock = clock
        self.processes_every = max(1, processes_every)
        self._polls = 0
        self._unsupported: set[tuple[int, str]] = set()
        self._missing: set[str] = set()  # functions this driver lacks
        self.notes: list[str] = []  # one line per thing found unsupported, for the log
        self._cgroups: dict[int, tuple[str | None, str | None, str | None]] = {}
        self._xid: deque[tuple[float, str | None, int]] = deque(maxlen=10_000)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._members = _value_members(self.nvml)
        self.driver_version = self._call(-1, "driver", "nvmlSystemGetDriverVersion")
        self.gpus: list[_Gpu] = []
        self.rescan()
        if events:
            self._thread = threading.Thread(target=self._events_loop, name="nvml-xid", daemon=True)
            self._thread.start()

    # -- wrapped calls ----------------------------------------------------------------------
    def _call(self, gi: int, key: str, fn: str, *args: Any, **kw: Any) -> Any:
        if key in self._missing or (gi, key) in self._unsupported:
            return None
        nvml = self.nvml
        try:
            return getattr(nvml, fn)(*args, **kw)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == nvml.NVML_ERROR_GPU_IS_LOST:
                raise _Lost() from exc
            if code == nvml.NVML_ERROR_NOT_SUPPORTED:
                self._unsupported.add((gi, key))
            elif code == nvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                self._missing.add(key)
                self.notes.append(f"driver lacks {fn} ({key})")
            return None

    # -- inventory --------------------------------------------------------------------------
    def rescan(self) -> None:
        """Look up handles, names and MIG layouts again (after a MIG reconfiguration)."""
        nvml = self.nvml
        gpus = []
        count = self._call(-1, "count", "nvmlDeviceGetCount") or 0
        for i in range(count):
            try:
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                uuid = nvml.nvmlDeviceGetUUID(h)
            except nvml.NVMLError as exc:
                self.notes.append(f"GPU {i}: no handle ({exc})")
                continue
            try:
                name = self._call(i, "name", "nvmlDeviceGetName", h)
                pci = self._call(i, "pci", "nvmlDeviceGetPciInfo", h)
                mode = self._call(i, "mig_mode", "nvmlDeviceGetMigMode", h)
                links = self._link_count(i, h)
                gpm = self._call(i, "gpm", "nvmlGpmQueryDeviceSupport", h)
            except _Lost:
                name = pci = mode = gpm = None
                links = 0
            pci_id = pci.busId if pci is not None else None
            if isinstance(pci_id, bytes):
                pci_id = pci_id.decode()
            g = _Gpu(
                i,
                h,
                uuid,
                i,
                name,
                pci_id,
                bool(mode and mode[0]),
                links,
                bool(gpm and gpm.isSupportedDevice),
            )
            g.link_prev = [None] * links
            g.err_prev = [None] * links
            if g.mig:
                g.migs = self._scan_migs(g)
            gpus.append(g)
        self.gpus = gpus

    def _link_count(self, i: int, h: Any) -> int:
        nvml = self.nvml
        vals = self._call(
            i, "nvlink_count", "nvmlDeviceGetFieldValues", h, [nvml.NVML_FI_DEV_NVLINK_LINK_COUNT]
        )
        n = _field_value(vals[0], self._members) if vals else None
        return int(n or 0)

    def _scan_migs(self, g: _Gpu) -> list[_Mig]:
        nvml = self.nvml
        out = []
        n = self._call(g.i, "mig_count", "nvmlDeviceGetMaxMigDeviceCount", g.handle) or 0
        for k in range(n):
            try:
                mh = nvml.nvmlDeviceGetMigDeviceHandleByIndex(g.handle, k)
                gi = nvml.nvmlDeviceGetGpuInstanceId(mh)
            except nvml.NVMLError:
                continue  # no instance at this index
            name = self._call(g.i, "mig_name", "nvmlDeviceGetName", mh)
            mig = _Mig(mh, gi, f"{g.uuid}/gi{gi}", _profile(name))
            if g.gpm:
                mig.samples = [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()]
            out.append(mig)
        return out

    def inventory(self) -> dict[str, dict[str, list[Any]]]:
        inv = _cols(INV_FIELDS)
        sl = _cols(INV_SLICE_FIELDS)
        for g in self.gpus:
            for k, v in zip(
                INV_FIELDS, (g.uuid, g.index, g.name, g.pci_bus_id, g.mig), strict=True
            ):
                inv[k].append(v)
            for m in g.migs:
                sl["id"].append(m.slice_id)
                sl["gpu_uuid"].append(g.uuid)
                sl["profile"].append(m.profile)
        return {"gpus": inv, "slices": sl}

    # -- poll -------------------------------------------------------------------------------
    def poll(self) -> Poll:
        """One reading of every GPU; never raises for what a GPU cannot or will not answer."""
        ts = self.clock()
        gpu, sli, lost = _cols(GPU_FIELDS), _cols(SLICE_FIELDS), []
        want_procs = self._polls % self.processes_every == 0
        proc = _cols(PROC_FIELDS) if want_procs else None
        self._polls += 1
        for g in self.gpus:
            try:
                row = self._gpu_row(g)
                slices = [self._slice_row(g, m) for m in g.migs]
                procs = self._processes(g) if want_procs else []
            except _Lost:
                lost.append(g.uuid)
                continue
            pos = len(gpu["uuid"])
            for k, v in zip(GPU_FIELDS, row, strict=True):
                gpu[k].append(v)
            for s in slices:
                for k, v in zip(SLICE_FIELDS, (s[0], pos, *s[1:]), strict=True):
                    sli[k].append(v)
            if proc is not None:
                for p in procs:
                    for k, v in zip(PROC_FIELDS, (pos, *p), strict=True):
                        proc[k].append(v)
        xid = _cols(XID_FIELDS)
        while self._xid:
            t, uuid, code = self._xid.popleft()
            xid["ts"].append(t)
            xid["gpu_uuid"].append(uuid)
            xid["code"].append(code)
        return Poll(ts, gpu, sli, proc, xid, lost)

    def _gpu_row(self, g: _Gpu) -> tuple[Any, ...]:
        nvml, h, i, c = self.nvml, g.handle, g.i, self._call
        util = c(i, "util", "nvmlDeviceGetUtilizationRates", h)
        mem = c(i, "mem_v2", "nvmlDeviceGetMemoryInfo", h, version=nvml.nvmlMemory_v2)
        if mem is None:
            mem = c(i, "mem", "nvmlDeviceGetMemoryInfo", h)
        reserved = getattr(mem, "reserved", None)
        power_mw = c(i, "power", "nvmlDeviceGetPowerUsage", h)
        energy_mj = c(i, "energy", "nvmlDeviceGetTotalEnergyConsumption", h)
        temp = c(i, "temp", "nvmlDeviceGetTemperature", h, nvml.NVML_TEMPERATURE_GPU)
        sm = c(i, "sm_clock", "nvmlDeviceGetClockInfo", h, nvml.NVML_CLOCK_SM)
        memclk = c(i, "mem_clock", "nvmlDeviceGetClockInfo", h, nvml.NVML_CLOCK_MEM)
        tx = c(i, "pcie_tx", "nvmlDeviceGetPcieThroughput", h, nvml.NVML_PCIE_UTIL_TX_BYTES)
        rx = c(i, "pcie_rx", "nvmlDeviceGetPcieThroughput", h, nvml.NVML_PCIE_UTIL_RX_BYTES)
        sbe = c(
            i,
            "ecc",
            "nvmlDeviceGetTotalEccErrors",
            h,
            nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
            nvml.NVML_VOLATILE_ECC,
        )
        dbe = c(
            i,
            "ecc",
            "nvmlDeviceGetTotalEccErrors",
            h,
            nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            nvml.NVML_VOLATILE_ECC,
        )
        remap = c(i, "remap", "nvmlDeviceGetRemappedRows", h)
        reasons = c(i, "reasons", "nvmlDeviceGetCurrentClocksEventReasons", h)
        if reasons is None:
            reasons = c(i, "reasons_old", "nvmlDeviceGetCurrentClocksThrottleReasons", h)
        mem_temp, links = self._fields(g)
        return (
            g.uuid,
            float(util.gpu) if util is not None else None,
            float(util.memory) if util is not None else None,
            int(mem.used) if mem is not None else None,
            int(mem.total) if mem is not None else None,
            int(reserved) if reserved is not None else None,
            power_mw / 1000.0 if power_mw is not None else None,
            energy_mj / 1000.0 if energy_mj is not None else None,
            float(temp) if temp is not None else None,
            float(mem_temp) if mem_temp is not None else None,
            float(sm) if sm is not None else None,
            float(memclk) if memclk is not None else None,
            tx * 1024.0 if tx is not None else None,  # NVML gives KB/s
            rx * 1024.0 if rx is not None else None,
            sbe,
            dbe,
            remap[0] if remap is not None else None,
            remap[1] if remap is not None else None,
            bool(remap[2]) if remap is not None else None,
            bool(remap[3]) if remap is not None else None,
            reasons,
            *links,
        )

    def _fields(self, g: _Gpu) -> tuple[Any, tuple[Any, Any, Any, Any]]:
        """Memory temperature and per-link NVLink counters in one field-values call."""
        nvml = self.nvml
        ids: list[Any] = [nvml.NVML_FI_DEV_MEMORY_TEMP]
        for link in range(g.n_links):
            ids += [
                (nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, link),
                (nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, link),
                (nvml.NVML_FI_DEV_NVLINK_GET_STATE, link),
            ]
        vals = self._call(g.i, "fields", "nvmlDeviceGetFieldValues", g.handle, ids)
        if vals is None:
            none = [None] * g.n_links if g.n_links else None
            return None, (none, none, none, none)
        mem_temp = _field_value(vals[0], self._members)
        if not g.n_links:
            return mem_temp, (None, None, None, None)
        txs, rxs, errs, ups = [], [], [], []
        for link in range(g.n_links):
            vt, vr, vs = vals[1 + 3 * link : 4 + 3 * link]
            t_s = vt.timestamp / 1e6
            m = self._members
            ctx, crx, up = _field_value(vt, m), _field_value(vr, m), _field_value(vs, m)
            prev = g.link_prev[link]
            tx_rate = rx_rate = None
            if ctx is not None and crx is not None:
                if prev is not None and t_s > prev[0] and ctx >= prev[1] and crx >= prev[2]:
                    dt = t_s - prev[0]
                    tx_rate = (ctx - prev[1]) * 1024.0 / dt  # counters are KiB
                    rx_rate = (crx - prev[2]) * 1024.0 / dt
                g.link_prev[link] = (t_s, ctx, crx)
            err = self._call(
                g.i,
                "nvlink_err",
                "nvmlDeviceGetNvLinkErrorCounter",
                g.handle,
                link,
                nvml.NVML_NVLINK_ERROR_DL_CRC_DATA,
            )
            perr = g.err_prev[link]
            errs.append(
                err - perr if err is not None and perr is not None and err >= perr else None
            )
            g.err_prev[link] = err
            txs.append(tx_rate)
            rxs.append(rx_rate)
            ups.append(bool(up) if up is not None else None)
        return mem_temp, (txs, rxs, errs, ups)

    def _slice_row(self, g: _Gpu, m: _Mig) -> tuple[Any, ...]:
        nvml = self.nvml
        mem = self._call(g.i, "mig_mem", "nvmlDeviceGetMemoryInfo", m.handle)
        util = None
        if g.gpm and m.samples:
            cur = m.samples[1]
            got = self._call(g.i, "gpm_mig", "nvmlGpmMigSampleGet", g.handle, m.gi, cur)
            if got is not None:
                if m.have_prev:
                    mg = nvml.c_nvmlGpmMetricsGet_t()
                    mg.version = nvml.NVML_GPM_METRICS_GET_VERSION
                    mg.numMetrics = 1
                    mg.sample1, mg.sample2 = m.samples[0], cur
                    mg.metrics[0].metricId = nvml.NVML_GPM_METRIC_GRAPHICS_UTIL
                    if (
                        self._call(g.i, "gpm_get", "nvmlGpmMetricsGet", mg) is not None
                        and mg.metrics[0].nvmlReturn == nvml.NVML_SUCCESS
                    ):
                        util = float(mg.metrics[0].value)
                m.samples.reverse()  # this sample is the next poll's first
                m.have_prev = True
        return (
            m.slice_id,
            util,
            int(mem.used) if mem is not None else None,
            int(mem.total) if mem is not None else None,
        )

    def _processes(self, g: _Gpu) -> list[tuple[Any, ...]]:
        targets = [(m.handle, m.slice_id) for m in g.migs] if g.mig else [(g.handle, None)]
        out = []
        for h, slice_id in targets:
            procs = self._call(g.i, "procs_v3", "nvmlDeviceGetComputeRunningProcesses_v3", h)
            if procs is None:
                procs = self._call(g.i, "procs_v2", "nvmlDeviceGetComputeRunningProcesses_v2", h)
            for p in procs or ():
                pid = int(p.pid)
                info = self._cgroups.get(pid)
                if info is None:
                    if len(self._cgroups) > 20_000:
                        self._cgroups.clear()  # pids are reused; keep the cache bounded
                    cg = self.lib.read_cgroup(pid)
                    info = self._cgroups[pid] = (container_of(cg), cg, tenant_of(cg))
                used = p.usedGpuMemory
                out.append((slice_id, pid, int(used) if used is not None else None, *info))
        return out

    # -- Xid events ---------------------------------------------------------------------------
    def _events_loop(self) -> None:
        nvml = self.nvml
        try:
            es = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            self.notes.append(f"no Xid events: {exc}")
            return
        registered = 0
        for g in self.gpus:
            try:
                nvml.nvmlDeviceRegisterEvents(g.handle, nvml.nvmlEventTypeXidCriticalError, es)
                registered += 1
            except nvml.NVMLError as exc:
                self.notes.append(f"GPU {g.index}: no Xid events ({exc})")
        try:
            while registered and not self._stop.is_set():
                try:
                    d = nvml.nvmlEventSetWait(es, 500)
                except nvml.NVMLError as exc:
                    if getattr(exc, "value", None) != nvml.NVML_ERROR_TIMEOUT:
                        self._stop.wait(0.5)
                    continue
                try:
                    uuid = nvml.nvmlDeviceGetUUID(d.device)
                except nvml.NVMLError:
                    uuid = None
                self._xid.append((getattr(d, "t", None) or self.clock(), uuid, int(d.eventData)))
        finally:
            try:
                nvml.nvmlEventSetFree(es)
            except nvml.NVMLError:
                pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass
