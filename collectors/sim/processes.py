"""The simulated fleet's GPU processes: one per busy whole GPU, one per busy slice.

The same pids and cgroup paths as the fake NVML (`collectors/nvml/fake.py`)
gives its agent, so the demo's drill-down shows what an agent would report:
a process lives on a GPU (or in a MIG instance / fractional share) while that
GPU or slice is busy, and holds most of its memory. Built once per fleet as
arrays; each sample only masks and scales them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from collectors.nvml.library import container_of, tenant_of
from collectors.sim.topology import IDLE, TENANTS, Fleet

BUSY_UTIL_PCT = 5.0  # below this a GPU or slice has no process (a job ended, or none started)
PID_BASE = 100_000  # the fake NVML's pid scheme: PID_BASE + gpu * 256 + k


@dataclass(frozen=True, slots=True)
class ProcessTable:
    """Static columns of every process the fleet can run (one row each)."""

    gpu_idx: np.ndarray  # int, the GPU the process runs on
    slice_idx: np.ndarray  # int, its slice, -1 for a whole GPU
    pid: np.ndarray  # int64
    slice_id: list[str | None]
    cgroup: list[str]
    container: list[str | None]
    tenant: list[str | None]


def _cgroup(g: int, k: int, tenant: int) -> str:
    cid = f"{zlib.crc32(f'{g}:{k}'.encode()):08x}" * 8
    if tenant < 0:
        return f"0::/system.slice/docker-{cid}.scope"
    return f"0::/tenants.slice/tenant-{TENANTS[tenant][0]}.slice/cri-containerd-{cid}.scope"


def build_processes(f: Fleet) -> ProcessTable:
    gpu_idx: list[int] = []
    slice_idx: list[int] = []
    ks: list[int] = []
    tenants: list[int] = []
    slice_ids: list[str | None] = []
    shares_seen: dict[int, int] = {}
    for s, sid in enumerate(f.slice_id):
        g = int(f.slice_gpu_idx[s])
        if f.slice_kind[s] == "mig":
            k = int(sid.rsplit("/gi", 1)[1])
        else:  # fractional shares: 100 + the share's position on its GPU
            k = 100 + shares_seen.get(g, 0)
            shares_seen[g] = shares_seen.get(g, 0) + 1
        gpu_idx.append(g)
        slice_idx.append(s)
        ks.append(k)
        tenants.append(int(f.slice_tenant[s]))
        slice_ids.append(sid)
    has_slices = np.bincount(np.asarray(f.slice_gpu_idx, dtype=np.int64), minlength=f.n_gpus) > 0
    for whole in np.flatnonzero((np.asarray(f.gpu_workload) != IDLE) & ~has_slices):
        g = int(whole)
        gpu_idx.append(g)
        slice_idx.append(-1)
        ks.append(0)
        tenants.append(int(f.gpu_tenant[g]))
        slice_ids.append(None)
    cgroups = [_cgroup(g, k, t) for g, k, t in zip(gpu_idx, ks, tenants, strict=True)]
    return ProcessTable(
        gpu_idx=np.asarray(gpu_idx, dtype=np.int64),
        slice_idx=np.asarray(slice_idx, dtype=np.int64),
        pid=PID_BASE + np.asarray(gpu_idx, dtype=np.int64) * 256 + np.asarray(ks, dtype=np.int64),
        slice_id=slice_ids,
        cgroup=cgroups,
        container=[container_of(c) for c in cgroups],
        tenant=[tenant_of(c) for c in cgroups],
    )
