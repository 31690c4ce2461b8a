"""dcgm-exporter series -> store batches: GPUs, MIG slices, tenants, Xid events.

Label mapping (see docs/dcgm-prometheus.md):
- host: `Hostname`/`hostname` (any case), else the scrape `instance` without port;
- GPU: `UUID` (else `<host>/gpu<gpu>`), index from `gpu`, name from `modelName`;
- MIG: a series with `GPU_I_ID` describes GPU instance `<UUID>/gi<GPU_I_ID>`
  (profile from `GPU_I_PROFILE`). There is no whole-GPU series on a MIG GPU:
  GPU-level fields (power, temperatures, clocks, energy, PCIe) repeat on every
  instance and are stored ONCE per GPU (a whole-GPU series wins, else the
  instance with the lowest GPU_I_ID), never summed. Per-instance fields
  (framebuffer, profiling activity) go to `slice_samples`; instance activity is
  `PROF_GR_ENGINE_ACTIVE` (ratio 0-1) as util_pct.
- tenant: the workload's Kubernetes namespace (`exported_namespace`, else
  `namespace`), unless it is the exporter's own (its pod or namespace, as a
  Prometheus target adds them), or a configured mapping. Changes are written
  to `assignments` (open/close), not repeated each gather.
- Xid: `XID_ERRORS` is the last Xid seen, not a count: a change to a non-zero
  value is one `events` row.
- DCGM blanks (collectors.dcgm_blank): a sample holding a blank sentinel is
  no reading: its column stays NULL and it is counted in `dropped` with the
  reason; string blanks in labels count as absent. MEMORY_TEMP 0 on a board
  without HBM (no memory sensor) is NULL, counted likewise.

Both classic field names and DCGM 4.6's renamed ones are read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from collectors.assignments import step_assignments
from collectors.dcgm_blank import blank_mask, has_hbm, label_value
from collectors.fabric import NVLINK_NAMES
from collectors.promtext.counters import STALE_S
from collectors.promtext.labels import host_of
from collectors.promtext.series import Snapshot
from storage.batch import Batch, make_batch

MIB = 1 << 20

# column -> [(field name, scale to the column's unit)], first present wins (classic, then 4.6).
GPU_FIELDS: dict[str, list[tuple[str, float]]] = {
    "util_pct": [("DCGM_FI_DEV_GPU_UTIL", 1.0), ("DCGM_FI_DEV_GPU_UTIL_RATIO", 100.0)],
    "mem_util_pct": [("DCGM_FI_DEV_MEM_COPY_UTIL", 1.0), ("DCGM_FI_DEV_MEMORY_UTIL_RATIO", 100.0)],
    "power_w": [("DCGM_FI_DEV_POWER_USAGE", 1.0), ("DCGM_FI_DEV_BOARD_POWER_WATTS", 1.0)],
    "energy_j": [
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1e-3),
        ("DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL", 1.0),
    ],
    "temp_c": [("DCGM_FI_DEV_GPU_TEMP", 1.0), ("DCGM_FI_DEV_GPU_TEMP_CELSIUS", 1.0)],
    "mem_temp_c": [("DCGM_FI_DEV_MEMORY_TEMP", 1.0), ("DCGM_FI_DEV_MEMORY_TEMP_CELSIUS", 1.0)],
    "sm_clock_mhz": [("DCGM_FI_DEV_SM_CLOCK", 1.0), ("DCGM_FI_DEV_SM_CLOCK_HERTZ", 1e-6)],
    "mem_clock_mhz": [("DCGM_FI_DEV_MEM_CLOCK", 1.0), ("DCGM_FI_DEV_MEMORY_CLOCK_HERTZ", 1e-6)],
    # PROF_PCIE_*_BYTES are rates (bytes/s) despite the name.
    "pcie_tx_bytes_per_s": [("DCGM_FI_PROF_PCIE_TX_BYTES", 1.0)],
    "pcie_rx_bytes_per_s": [("DCGM_FI_PROF_PCIE_RX_BYTES", 1.0)],
    "ecc_sbe_total": [
        ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", 1.0),
        ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", 1.0),
    ],
    "ecc_dbe_total": [
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", 1.0),
        ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", 1.0),
    ],
    "throttle_reasons": [
        ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", 1.0),
        ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", 1.0),
    ],
}
# Per-instance on MIG (not repeated): framebuffer and profiling activity.
FB_FIELDS: dict[str, list[tuple[str, float]]] = {
    "fb_used": [("DCGM_FI_DEV_FB_USED", MIB), ("DCGM_FI_DEV_FB_USED_BYTES", 1.0)],
    "fb_free": [("DCGM_FI_DEV_FB_FREE", MIB), ("DCGM_FI_DEV_FB_FREE_BYTES", 1.0)],
    "fb_reserved": [("DCGM_FI_DEV_FB_RESERVED", MIB), ("DCGM_FI_DEV_FB_RESERVED_BYTES", 1.0)],
    "fb_total": [("DCGM_FI_DEV_FB_TOTAL", MIB), ("DCGM_FI_DEV_FB_CAPACITY_BYTES", 1.0)],
    "gr_active_pct": [
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 100.0),
        ("DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO", 100.0),
    ],
}
XID_FIELDS = ("DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_XID_ERROR")

# What each column can hold, in its unit (as the NVML agent's reports are checked,
# collectors/nvml/report.py): a value outside is no reading (a negated counter, 1e308,
# a ratio of 5): its column stays NULL, counted in `dropped` with the reason.
_BYTES_MAX = 2**50
COLUMN_RANGES: dict[str, tuple[float, float]] = {
    "util_pct": (0, 100),
    "mem_util_pct": (0, 100),
    "power_w": (0, 10_000),
    "energy_j": (0, 1e15),
    "temp_c": (-40, 150),
    "mem_temp_c": (-40, 150),
    "sm_clock_mhz": (0, 20_000),
    "mem_clock_mhz": (0, 50_000),
    "pcie_tx_bytes_per_s": (0, 1e12),
    "pcie_rx_bytes_per_s": (0, 1e12),
    "ecc_sbe_total": (0, 2**62),
    "ecc_dbe_total": (0, 2**62),
    "throttle_reasons": (0, 2**62),
    "fb_used": (0, _BYTES_MAX),
    "fb_free": (0, _BYTES_MAX),
    "fb_reserved": (0, _BYTES_MAX),
    "fb_total": (0, _BYTES_MAX),
    "gr_active_pct": (0, 100),
}
XID_RANGE = (0, 2**31)


# Fields dcgm-exporter ships that have no store column (yet), with why: reported, not silent.
NO_COLUMN = {
    "DCGM_FI_DEV_ENC_UTIL": "encoder utilisation: no store column",
    "DCGM_FI_DEV_DEC_UTIL": "decoder utilisation: no store column",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "PCIe replays: no store column",
    "DCGM_FI_DEV_PCIE_REPLAY_TOTAL": "PCIe replays: no store column",
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS": "vGPU licence: no store column",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "row remapping: no store column",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "row remapping: no store column",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "row remapping: no store column",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": "tensor-pipe activity: no store column",
    "DCGM_FI_PROF_TENSOR_UTIL_RATIO": "tensor-pipe activity: no store column",
    "DCGM_FI_PROF_DRAM_ACTIVE": "DRAM activity: no store column",
    "DCGM_FI_PROF_DRAM_UTIL_RATIO": "DRAM activity: no store column",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": "NVLink total of all lanes and both directions: "
    "link_samples keeps tx/rx (PROF_NVLINK_TX/RX_BYTES)",
}

_GPU_COLS = list(GPU_FIELDS)
_FB_COLS = list(FB_FIELDS)
_FIELD_INDEX: dict[str, tuple[str, int, float]] = {}
for _i, _c in enumerate(_GPU_COLS):
    for _rank, (_n, _s) in enumerate(GPU_FIELDS[_c]):
        _FIELD_INDEX[_n] = ("gpu", _i * 4 + _rank, _s)
for _i, _c in enumerate(_FB_COLS):
    for _rank, (_n, _s) in enumerate(FB_FIELDS[_c]):
        _FIELD_INDEX[_n] = ("fb", _i * 4 + _rank, _s)

# Compute slices per GPU model, for a MIG profile's fraction ("2g.10gb" on an A100 = 2/7).
MIG_SLICES_BY_MODEL = (
    ("A30", 4),
    ("RTX PRO 6000", 4),
    ("A100", 7),
    ("H100", 7),
    ("H200", 7),
    ("H20", 7),
    ("B200", 7),
    ("B300", 7),
    ("GB200", 7),
    ("GB300", 7),
)
_PROFILE_G = re.compile(r"^(\d+)g\.")

DEFAULT_EXPORTER_NAMESPACES = ("gpu-operator", "nvidia-gpu-operator", "kube-system", "monitoring")


def is_dcgm_field(name: str) -> bool:
    return name.startswith("DCGM_")


def mig_fraction(profile: str | None, model: str | None) -> float | None:
    m = _PROFILE_G.match(profile or "")
    if not m:
        return None
    slices = next((n for key, n in MIG_SLICES_BY_MODEL if key in (model or "")), 7)
    return min(int(m.group(1)) / slices, 1.0)


def _label(labels: Mapping[str, str], name: str) -> str | None:
    """A label matched case-insensitively (`rack`, `Rack`); empty means absent."""
    for k, v in labels.items():
        if k.lower() == name and v:
            return v[:256]
    return None


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


@dataclass
class TenantRules:
    """How a series' labels name a tenant."""

    by_namespace: Mapping[str, str] = field(default_factory=dict)  # namespace -> tenant
    by_target: Mapping[str, str] = field(
        default_factory=dict
    )  # gpu uuid / slice id / host -> tenant
    exporter_namespaces: tuple[str, ...] = DEFAULT_EXPORTER_NAMESPACES

    def tenant(
        self, labels: Mapping[str, str], gpu: str, slice_id: str | None, host: str
    ) -> str | None:
        for key in (slice_id, gpu, host):
            if key and key in self.by_target:
                return self.by_target[key]
        ns = labels.get("exported_namespace") or labels.get("namespace")
        if not ns:
            return None
        pod = labels.get("exported_pod") or labels.get("pod") or ""
        if "exported_namespace" not in labels and (
            ns in self.exporter_namespaces or "dcgm-exporter" in pod
        ):
            return None  # the namespace Prometheus added is the exporter's, not a workload's
        return self.by_namespace.get(ns, ns)


@dataclass
class DcgmResult:
    batches: list[Batch]
    skipped: list[str]
    gpus: int = 0
    slices: int = 0
    used: int = 0  # samples mapped to a column, an event or an assignment
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> samples


# What a DCGM sample is, in a plan: a GPU-level column, a per-instance framebuffer or
# activity column (of a slice or of a whole GPU), the last Xid, an NVLink field
# (collectors.fabric's), or a field without a column.
_GPU, _FB_SLICE, _FB_GPU, _XID, _NVLINK, _OTHER = range(6)


@dataclass(slots=True)
class _Plan:
    """Per DCGM sample (in snapshot order, host and GPU known): where its value goes."""

    idx: np.ndarray  # sample index in the snapshot
    row: np.ndarray  # GPU row
    slice: np.ndarray  # slice row, -1 for a whole-GPU series
    kind: np.ndarray  # _GPU ... _OTHER
    col: np.ndarray  # column*4 + name rank in the kind's matrix
    scale: np.ndarray  # to the column's unit
    lo: np.ndarray  # the column's range, in its unit (COLUMN_RANGES)
    hi: np.ndarray
    name_code: np.ndarray  # index in `names`
    names: list[str]
    gpu_order: np.ndarray  # _GPU samples by (row, column, instance rank, position)
    xid_order: np.ndarray  # _XID samples by (row, instance rank, position)
    gpu_info: list[dict]
    gpu_row: dict[str, int]
    slice_info: list[dict]
    skipped: list[str]
    dropped: dict[str, int]  # label-only reasons (no host/GPU label)


def _scaled(v: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`v * scale`, as the decimal the text meant where that loses nothing. mJ -> J
    divides by 1000: the correctly rounded quotient, which the store keeps as whole mJ
    (`* 1e-3` is an ulp off in 14 % of values, stored then as raw doubles). A ratio -> %
    where the ratio has 6 decimals (dcgm-exporter prints doubles with Go's "%f") takes
    the product rounded to 4 decimals, the double nearest the decimal product, from
    which rounding `/ 100` to 6 decimals gives back the ratio read: 0.123456 * 100 is
    12.345600000000001 (a quarter of such products), which ALP cannot store in few
    bits. Any other ratio keeps the plain product."""
    # over: 1e308 * 100 is inf, then out of its column's range (map)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = np.round(1 / scale)
        div = (scale < 1) & (inv > 1) & (np.abs(inv * scale - 1) < 1e-12)
        out = np.where(div, v / np.where(div, inv, 1.0), v * scale)
        pct = scale == 100.0
        snap = np.round(out, 4)
        return np.where(pct & (np.round(snap / 100.0, 6) == v), snap, out)


def _first_per_group(order: np.ndarray, ok: np.ndarray, group: np.ndarray) -> np.ndarray:
    """The first sample of `order` in each group among those `ok`."""
    sel = order[ok[order]]
    if not len(sel):
        return sel
    key = group[sel]
    first = np.ones(len(sel), dtype=np.bool_)
    first[1:] = key[1:] != key[:-1]
    return sel[first]


class DcgmMapper:
    """Stateful (assignments, last Xid, inventory already written) DCGM mapper."""

    def __init__(
        self, source: str, tenants: TenantRules | None = None, describe_every_s: float = 300.0
    ):
        self.source = source
        self.tenants = tenants or TenantRules()
        self.describe_every_s = describe_every_s
        self._last_xid: dict[str, float] = {}
        self._xid_seen: dict[str, float] = {}  # GPU -> last refresh that saw it (_forget_gone)
        self._assigned: dict[tuple[str, str | None], tuple[str, datetime, float | None]] = {}
        self._dims: dict[tuple[str, str], tuple] = {}
        self._dims_at: float = float("-inf")
        # the plan (its gpu_info) the assignments and inventory were last stepped with,
        # and the values the inventory rows were made of then (has GPU_UTIL, fb total)
        self._assigned_for: list[dict] | None = None
        self._described: tuple[list[dict], np.ndarray, np.ndarray, np.ndarray] | None = None
        self._host_rows: tuple[list[dict], dict[str, int]] | None = None
        self._plan: _Plan | None = None
        self._plan_key: object = None

    def map(self, snap: Snapshot, now: float) -> DcgmResult:
        plan = self._plan_for(snap)
        ng, ns = len(plan.gpu_info), len(plan.slice_info)
        gvals = np.full((ng, len(_GPU_COLS) * 4), np.nan)  # [row, column*4 + name rank]
        fgpu = np.full((ng, len(_FB_COLS) * 4), np.nan)  # whole-GPU framebuffer/activity
        fslice = np.full((ns, len(_FB_COLS) * 4), np.nan)
        gts, sts = np.zeros(ng), np.zeros(ns)
        dropped = dict(plan.dropped)
        v = snap.values[plan.idx]
        t = snap.ts[plan.idx]
        ok = ~blank_mask(v)  # a DCGM blank is no reading: its column stays NULL
        for code, n in enumerate(np.bincount(plan.name_code[~ok], minlength=len(plan.names))):
            if n:
                why = f"{plan.names[code]}: DCGM blank value (not supported/found/permitted), "
                why += "stored as NULL"
                dropped[why] = dropped.get(why, 0) + int(n)
        r, col, sv = plan.row, plan.col, _scaled(v, plan.scale)
        wild = ok & ~((sv >= plan.lo) & (sv <= plan.hi))  # out of its column's range
        if wild.any():
            ok &= ~wild
            for code, n in enumerate(np.bincount(plan.name_code[wild], minlength=len(plan.names))):
                if n:
                    why = f"{plan.names[code]}: value outside its column's range, stored as NULL"
                    dropped[why] = dropped.get(why, 0) + int(n)
        other = ok & (plan.kind == _OTHER)
        for code, n in enumerate(np.bincount(plan.name_code[other], minlength=len(plan.names))):
            if n:
                name = plan.names[code]
                why = f"{name}: {NO_COLUMN.get(name, 'field not mapped')}"
                dropped[why] = dropped.get(why, 0) + int(n)
        used = int((ok & (plan.kind != _OTHER)).sum())
        # GPU-level fields: the whole-GPU series, else the lowest GPU instance, never summed
        win = _first_per_group(plan.gpu_order, ok, r * gvals.shape[1] + col)
        gvals[r[win], col[win]] = sv[win]
        m = ok & (plan.kind == _FB_SLICE)
        fslice[plan.slice[m], col[m]] = sv[m]
        np.maximum.at(sts, plan.slice[m], t[m])
        m = ok & (plan.kind == _FB_GPU)
        fgpu[r[m], col[m]] = sv[m]
        m = ok & ((plan.kind == _GPU) | (plan.kind == _FB_GPU) | (plan.kind == _XID))
        np.maximum.at(gts, r[m], t[m])
        xid = {
            plan.gpu_info[r[k]]["uuid"]: (float(v[k]), 0.0)
            for k in _first_per_group(plan.xid_order, ok, r)
        }
        self._no_memory_sensor(plan.gpu_info, gvals, dropped)
        gpu_info, slice_info = plan.gpu_info, plan.slice_info
        batches: list[Batch] = []
        if ng:
            batches.append(self._gpu_batch(gpu_info, gvals, fgpu, gts))
        if ns:
            batches.append(self._slice_batch(slice_info, fslice, sts))
        batches += self._events(xid, gpu_info, plan.gpu_row, gts, now)
        batches += self._assignments(gpu_info, slice_info, now)
        batches += self._describe(gpu_info, slice_info, gvals, fgpu, fslice, gts, now)
        return DcgmResult(batches, list(plan.skipped), ng, ns, used, dropped)

    def _plan_for(self, snap: Snapshot) -> _Plan:
        """What each DCGM series means (row, column, instance rank): it depends on
        names and labels only, so it is reused while the snapshot's layout holds."""
        if snap.layout is not None and self._plan is not None and snap.layout == self._plan_key:
            return self._plan
        plan = self._make_plan(snap)
        self._plan, self._plan_key = plan, snap.layout
        return plan

    def _make_plan(self, snap: Snapshot) -> _Plan:
        gpu_row: dict[str, int] = {}
        gpu_info: list[dict] = []
        slice_row: dict[str, int] = {}
        slice_info: list[dict] = []
        codes: dict[str, int] = {}
        dropped: dict[str, int] = {}
        skipped: list[str] = []
        idx, rows, slices, ranks, kinds, cols, scales, name_codes = ([] for _ in range(8))
        los: list[float] = []
        his: list[float] = []
        for i, name in enumerate(snap.names):
            if not is_dcgm_field(name):
                continue
            labels = snap.labels[i]
            host = host_of(labels)
            gpu = labels.get("UUID") or (
                f"{host}/gpu{labels['gpu']}" if host and "gpu" in labels else None
            )
            if not host or not gpu:
                skipped.append(f"{self.source}: {name}: no host or GPU label, sample skipped")
                dropped["no host/GPU label"] = dropped.get("no host/GPU label", 0) + 1
                continue
            r = gpu_row.get(gpu)
            if r is None:
                r = gpu_row[gpu] = len(gpu_info)
                gpu_info.append(
                    {
                        "uuid": gpu,
                        "host": host,
                        "labels": labels,
                        "mig": False,
                        "tenant": None,
                        "whole": False,
                    }
                )
            info = gpu_info[r]
            gi = labels.get("GPU_I_ID") or ""
            gi_rank = -1.0
            s = None
            if gi:
                info["mig"] = True
                try:
                    gi_rank = float(gi)
                except ValueError:
                    gi_rank = 1e9
                sid = f"{gpu}/gi{gi}"
                s = slice_row.get(sid)
                if s is None:
                    s = slice_row[sid] = len(slice_info)
                    slice_info.append(
                        {
                            "slice_id": sid,
                            "gpu": gpu,
                            "gi": gi,
                            "profile": label_value(labels, "GPU_I_PROFILE"),
                            "tenant": None,
                            "labels": labels,
                        }
                    )
            else:
                info["whole"] = True
            tenant = self.tenants.tenant(
                labels, gpu, slice_info[s]["slice_id"] if s is not None else None, host
            )
            if tenant:
                if s is not None:
                    slice_info[s]["tenant"] = tenant
                else:
                    info["tenant"] = tenant
            spec = _FIELD_INDEX.get(name)
            col, scale = 0, 1.0
            lo, hi = -np.inf, np.inf
            if spec is not None:
                kind_name, col, scale = spec
                kind = _GPU if kind_name == "gpu" else (_FB_SLICE if s is not None else _FB_GPU)
                lo, hi = COLUMN_RANGES[(_GPU_COLS if kind == _GPU else _FB_COLS)[col // 4]]
            elif name in XID_FIELDS:
                kind = _XID
                lo, hi = XID_RANGE
            elif name in NVLINK_NAMES:
                kind = _NVLINK  # collectors.fabric maps these
            else:
                kind = _OTHER
            idx.append(i)
            rows.append(r)
            slices.append(-1 if s is None else s)
            ranks.append(gi_rank)
            kinds.append(kind)
            cols.append(col)
            scales.append(scale)
            los.append(lo)
            his.append(hi)
            name_codes.append(codes.setdefault(name, len(codes)))
        row = np.asarray(rows, dtype=np.int64)
        col_a = np.asarray(cols, dtype=np.int64)
        rank = np.asarray(ranks, dtype=np.float64)
        kind_a = np.asarray(kinds, dtype=np.int8)
        pos = np.arange(len(idx))
        # candidates in (row, column, instance rank, position) order: the first one left
        # after blanks are dropped is the value kept (whole GPU first, then lowest GI)
        g = np.flatnonzero(kind_a == _GPU)
        gpu_order = g[np.lexsort((pos[g], rank[g], col_a[g], row[g]))]
        x = np.flatnonzero(kind_a == _XID)
        xid_order = x[np.lexsort((pos[x], rank[x], row[x]))]
        return _Plan(
            idx=np.asarray(idx, dtype=np.int64),
            row=row,
            slice=np.asarray(slices, dtype=np.int64),
            kind=kind_a,
            col=col_a,
            scale=np.asarray(scales, dtype=np.float64),
            lo=np.asarray(los, dtype=np.float64),
            hi=np.asarray(his, dtype=np.float64),
            name_code=np.asarray(name_codes, dtype=np.int64),
            names=list(codes),
            gpu_order=gpu_order,
            xid_order=xid_order,
            gpu_info=gpu_info,
            gpu_row=gpu_row,
            slice_info=slice_info,
            skipped=skipped,
            dropped=dropped,
        )

    @staticmethod
    def _no_memory_sensor(info: list[dict], g: np.ndarray, dropped: dict[str, int]) -> None:
        """MEMORY_TEMP 0 on a board without HBM is "no sensor": NULL, not 0 degC."""
        if not len(info):
            return
        col = _GPU_COLS.index("mem_temp_c") * 4
        block = g[:, col : col + 4]  # a view: edits land in g
        no_hbm = np.array([_no_hbm(d) for d in info])
        zero = (block == 0) & no_hbm[:, None]
        n = int(zero.any(axis=1).sum())
        if n:
            block[zero] = np.nan
            why = "DCGM_FI_DEV_MEMORY_TEMP: 0 on a board without HBM (no sensor), stored as NULL"
            dropped[why] = dropped.get(why, 0) + n

    # -- per-sample tables ------------------------------------------------------
    @staticmethod
    def _pick(m: np.ndarray, col: int) -> np.ndarray:
        """The first present name (classic, then 4.6) of column `col` for every row."""
        block = m[:, col * 4 : (col + 1) * 4]
        out = np.full(len(m), np.nan)
        for k in range(3, -1, -1):
            have = ~np.isnan(block[:, k])
            out[have] = block[have, k]
        return out

    def _fb(self, fb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        used, free, res, total = (
            self._pick(fb, _FB_COLS.index(c))
            for c in ("fb_used", "fb_free", "fb_reserved", "fb_total")
        )
        summed = used + free + np.nan_to_num(res)
        return used, np.where(np.isnan(total), summed, total)

    def _gpu_batch(self, info: list[dict], g: np.ndarray, fb: np.ndarray, ts: np.ndarray) -> Batch:
        cols = {c: self._pick(g, i) for i, c in enumerate(_GPU_COLS)}
        used, total = self._fb(fb)
        n = len(info)
        out = {
            "ts": pa.array(np.round(ts * 1e6).astype(np.int64)).cast(pa.timestamp("us")),
            "host": [d["host"] for d in info],
            "gpu_uuid": [d["uuid"] for d in info],
        }
        for c, v in cols.items():
            out[c] = _nullable(v)
        out["mem_used_bytes"] = _nullable(used, np.int64)
        out["mem_total_bytes"] = _nullable(total, np.int64)
        for c in ("ecc_sbe_total", "ecc_dbe_total", "throttle_reasons"):
            out[c] = _nullable(cols[c], np.int64)
        out["source"] = [self.source] * n
        return make_batch("gpu_samples", out)

    def _slice_batch(self, info: list[dict], fb: np.ndarray, ts: np.ndarray) -> Batch:
        used, total = self._fb(fb)
        gr = self._pick(fb, _FB_COLS.index("gr_active_pct"))
        return make_batch(
            "slice_samples",
            {
                "ts": pa.array(np.round(ts * 1e6).astype(np.int64)).cast(pa.timestamp("us")),
                "slice_id": [d["slice_id"] for d in info],
                "gpu_uuid": [d["gpu"] for d in info],
                "util_pct": _nullable(gr),
                "mem_used_bytes": _nullable(used, np.int64),
                "mem_total_bytes": _nullable(total, np.int64),
                "source": [self.source] * len(info),
            },
        )

    def _events(
        self, xid: dict, info: list[dict], rows: dict, ts: np.ndarray, now: float
    ) -> list[Batch]:
        ev_ts, hosts, gpus, codes, details = [], [], [], [], []
        for gpu, (v, _) in xid.items():
            prev = self._last_xid.get(gpu)
            self._last_xid[gpu] = v
            if v == 0 or v == prev:
                continue
            r = rows[gpu]
            ev_ts.append(_ts(ts[r] or now))
            hosts.append(info[r]["host"])
            gpus.append(gpu)
            codes.append(int(v))
            details.append(
                f"Xid {int(v)} (last Xid reported by DCGM"
                + (", already set at first scrape)" if prev is None else ")")
            )
        if not ev_ts:
            return []
        return [
            make_batch(
                "events",
                {
                    "ts": ev_ts,
                    "host": hosts,
                    "gpu_uuid": gpus,
                    "kind": ["xid"] * len(ev_ts),
                    "code": codes,
                    "detail": details,
                    "source": [self.source] * len(ev_ts),
                },
            )
        ]

    # -- assignments: written when they change ----------------------------------------
    def _assignments(self, gpus: list[dict], slices: list[dict], now: float) -> list[Batch]:
        if gpus is self._assigned_for:
            return []  # the plan's labels again: the same assignments, nothing to step
        self._assigned_for = gpus
        seen: dict[tuple[str, str | None], tuple[str, float | None]] = {}
        for d in gpus:
            if d["tenant"] and not d["mig"]:
                seen[(d["uuid"], None)] = (d["tenant"], 1.0)
        model = {g["uuid"]: label_value(g["labels"], "modelName") for g in gpus}
        for s in slices:
            if s["tenant"]:
                seen[(s["gpu"], s["slice_id"])] = (
                    s["tenant"],
                    mig_fraction(s["profile"], model.get(s["gpu"])),
                )
        gpus_here = {d["uuid"] for d in gpus}
        t = _ts(now)
        # a GPU absent from this scrape closes nothing: only what was observed changes
        rows = step_assignments(self._assigned, seen, t, lambda key: key[0] in gpus_here)
        if not rows:
            return []
        cols = list(zip(*rows, strict=True))
        return [
            make_batch("tenants", {"tenant": sorted({r[0] for r in rows})}),
            make_batch(
                "assignments",
                {
                    "tenant": cols[0],
                    "gpu_uuid": cols[1],
                    "slice_id": cols[2],
                    "fraction": [1.0 if f is None else f for f in cols[3]],
                    "valid_from": cols[4],
                    "valid_to": pa.array(cols[5], type=pa.timestamp("us")),
                    "source": [self.source] * len(rows),  # guessed from labels (restart closes)
                },
            ),
        ]

    def _forget_gone(self, gpus: list[dict], now: float) -> None:
        """Per-GPU state of GPUs no longer scraped is dropped, so an exporter inventing
        UUIDs scrape after scrape cannot grow it without end: inventory rows (all rows of
        the GPUs present are written again at this refresh) and, after an hour unseen,
        the last Xid (a GPU back later reports a set Xid again, as after a restart)."""
        self._dims = {}
        seen = self._xid_seen
        for d in gpus:
            seen[d["uuid"]] = now
        for u in self._last_xid:
            seen.setdefault(u, now)
        for u in [u for u, t in seen.items() if now - t > STALE_S]:
            del seen[u]
            self._last_xid.pop(u, None)

    # -- inventory: on change, and every describe_every_s ----------------------------
    def _describe(
        self,
        gpus: list[dict],
        slices: list[dict],
        g: np.ndarray,
        fb: np.ndarray,
        fslice: np.ndarray,
        gts: np.ndarray,
        now: float,
    ) -> list[Batch]:
        refresh = now - self._dims_at >= self.describe_every_s
        if refresh:
            self._forget_gone(gpus, now)
        _, total = self._fb(fb)
        _, stotal = self._fb(fslice)
        host_rows, gpu_rows, slice_rows = {}, [], []
        has_util = ~np.isnan(self._pick(g, 0))
        # Same plan, no refresh: only rows whose values changed can differ from _dims.
        gpu_todo: Iterable[int] = range(len(gpus))
        slice_todo: Iterable[int] = range(len(slices))
        last = self._described
        if not refresh and last is not None and last[0] is gpus:
            gpu_todo = np.flatnonzero((has_util != last[1]) | _differ(total, last[2])).tolist()
            slice_todo = np.flatnonzero(_differ(stotal, last[3])).tolist()
        self._described = (gpus, has_util, total, stotal)
        for r in gpu_todo:
            d = gpus[r]
            lab = d["labels"]
            uuid = d["uuid"]
            labelled = d.get("described")  # label-only parts: once per plan
            if labelled is None:
                labelled = d["described"] = (
                    _int(lab.get("gpu")),
                    label_value(lab, "modelName"),
                    label_value(lab, "pci_bus_id"),
                    # placement from labels a scrape config or relabelling added
                    (
                        d["host"],
                        label_value(lab, "DCGM_FI_DRIVER_VERSION"),
                        _label(lab, "cluster"),
                        _label(lab, "rack"),
                    ),
                )
            # mig_mode: instances seen -> True; GPU_UTIL (absent on MIG) -> False; else unknown
            mig = True if d["mig"] else (False if has_util[r] else None)
            row = (
                uuid,
                d["host"],
                *labelled[:3],
                mig,
                None if np.isnan(total[r]) else int(total[r]),
            )
            if refresh or self._dims.get(("gpu", uuid)) != row:
                self._dims[("gpu", uuid)] = row
                gpu_rows.append(row)
            hrow = labelled[3]
            if refresh or self._dims.get(("host", d["host"])) != hrow:
                self._dims[("host", d["host"])] = hrow
                host_rows[d["host"]] = hrow
        model = (
            {g_["uuid"]: label_value(g_["labels"], "modelName") for g_ in gpus}
            if slice_todo
            else {}
        )
        for s in slice_todo:
            d = slices[s]
            row = (
                d["slice_id"],
                d["gpu"],
                "mig",
                d["profile"],
                mig_fraction(d["profile"], model.get(d["gpu"])),
                None if np.isnan(stotal[s]) else int(stotal[s]),
            )
            if refresh or self._dims.get(("slice", d["slice_id"])) != row:
                self._dims[("slice", d["slice_id"])] = row
                slice_rows.append(row)
        if refresh:
            self._dims_at = now
        out = []
        if self._host_rows is None or self._host_rows[0] is not gpus:
            # host -> its last GPU row, in order of first appearance: once per plan
            self._host_rows = (gpus, {d["host"]: r for r, d in enumerate(gpus)})
        last_seen = {h: _ts(max(gts[r], 0) or now) for h, r in self._host_rows[1].items()}
        if last_seen:
            hosts = sorted(last_seen)
            out.append(
                make_batch(
                    "hosts",
                    {
                        "host": hosts,
                        "last_seen": [last_seen[h] for h in hosts],
                        "first_seen": [last_seen[h] for h in hosts],
                        "driver_version": [
                            (host_rows.get(h) or self._dims[("host", h)])[1] for h in hosts
                        ],
                        "cluster": [
                            (host_rows.get(h) or self._dims[("host", h)])[2] for h in hosts
                        ],
                        "rack": [(host_rows.get(h) or self._dims[("host", h)])[3] for h in hosts],
                    },
                )
            )
        if gpu_rows:
            c = list(zip(*gpu_rows, strict=True))
            out.append(
                make_batch(
                    "gpus",
                    {
                        "gpu_uuid": c[0],
                        "host": c[1],
                        "gpu_index": c[2],
                        "name": c[3],
                        "pci_bus_id": c[4],
                        "mig_mode": pa.array(c[5], type=pa.bool_()),
                        "mem_total_bytes": pa.array(c[6], type=pa.int64()),
                    },
                )
            )
        if slice_rows:
            c = list(zip(*slice_rows, strict=True))
            out.append(
                make_batch(
                    "slices",
                    {
                        "slice_id": c[0],
                        "gpu_uuid": c[1],
                        "kind": c[2],
                        "profile": c[3],
                        "fraction": pa.array(c[4], type=pa.float64()),
                        "mem_total_bytes": pa.array(c[5], type=pa.int64()),
                    },
                )
            )
        return out


def _differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where a and b differ, NaN equal to NaN."""
    return ~((a == b) | (np.isnan(a) & np.isnan(b)))


def _no_hbm(d: dict) -> bool:
    """The GPU's board has no HBM sensor (from its model label; kept with the plan's row)."""
    v = d.get("no_hbm")
    if v is None:
        v = d["no_hbm"] = has_hbm(label_value(d["labels"], "modelName")) is not True
    return v


def _nullable(v: np.ndarray, dtype: type | None = None) -> pa.Array:
    mask = np.isnan(v)
    if dtype is not None:
        return pa.array(np.where(mask, 0, np.round(v)).astype(dtype), mask=mask)
    return pa.array(v, mask=mask)


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v not in (None, "") else None
    except ValueError:
        return None
