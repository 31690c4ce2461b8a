"""The simulated fleet's shape: racks, hosts, GPUs, slices, links, tenants, endpoints.

Built once per (seed, scale) as columnar numpy arrays so that sampling 10,000+
GPUs per tick stays vectorised. One "unit" at scale 1 is:

- 2 GB200 NVL72 racks: 18 compute trays x 4 GPUs, one NVLink domain per rack;
- 4 racks of 4 HGX H100 8-GPU hosts on an InfiniBand NDR fabric;
- 1 rack of 4 RTX PRO 6000 Blackwell hosts, half MIG-sliced, half shared in
  fractions down to 1/8 of a GPU.

`scale` repeats the unit (scale 33 gives 10,032 GPUs). Identifiers follow the
conventions every collector uses, so sources agree on keys:
slice_id is `<gpu_uuid>/gi<N>` for a MIG GPU instance and `<gpu_uuid>/f<N>`
for a fractional share.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# GPU models: name, memory (bytes), board power limit (W), max SM / memory clocks (MHz)
GPU_MODELS = {
    "gb200": ("NVIDIA GB200", 199_715_979_264, 1200.0, 2062.0, 3996.0),
    "h100": ("NVIDIA H100 80GB HBM3", 85_520_809_984, 700.0, 1980.0, 2619.0),
    "rtx6000": (
        "NVIDIA RTX PRO 6000 Blackwell Server Edition",
        102_643_105_792,
        600.0,
        2617.0,
        14001.0,
    ),
}
KIND_CODE = {"gb200": 0, "h100": 1, "rtx6000": 2}

NVLINK5_BYTES_PER_S = 900e9  # per GPU per direction (1.8 TB/s bidirectional)
NVLINK4_BYTES_PER_S = 450e9
IB_NDR_BYTES_PER_S = 50e9  # 400 Gb/s
ROCE_200G_BYTES_PER_S = 25e9

HGX_BUS_IDS = ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]
GB200_DOMAINS = ["00000008", "00000009", "00000018", "00000019"]

# Workload codes per GPU / slice
IDLE, TRAINING, INFERENCE = 0, 1, 2

# RTX PRO 6000 MIG layouts (profile, count) and fractional layouts (fractions)
MIG_LAYOUTS = [[("1g.24gb", 4)], [("2g.48gb", 2)], [("2g.48gb", 1), ("1g.24gb", 2)]]
FRACTION_LAYOUTS = [[1 / 8] * 8, [1 / 4] * 4, [1 / 2] * 2, [1 / 2, 1 / 4, 1 / 4]]
MIG_PROFILE_FRACTION = {"1g.24gb": 0.25, "2g.48gb": 0.5, "4g.96gb": 1.0}

TENANTS = [
    # tenant, display name, tier
    ("acme-llm", "Acme LLM", "reserved"),
    ("orbital-ai", "Orbital AI", "reserved"),
    ("nimbus-search", "Nimbus Search", "on-demand"),
    ("helix-bio", "Helix Bio", "reserved"),
    ("quanta-trade", "Quanta Trade", "on-demand"),
    ("lumen-video", "Lumen Video", "on-demand"),
    ("kestrel-labs", "Kestrel Labs", "spot"),
    ("internal-eval", "Internal Eval", "internal"),
]

ENDPOINTS = [
    # endpoint, tenant, model, base ITL ms, base TTFT ms, ITL target ms, TTFT target ms, peak load
    (
        "nimbus-chat",
        "nimbus-search",
        "meta-llama/Llama-3.1-70B-Instruct",
        18.0,
        220.0,
        55.0,
        900.0,
        0.78,
    ),
    ("quanta-risk", "quanta-trade", "Qwen/Qwen2.5-7B-Instruct", 7.0, 60.0, 21.0, 300.0, 0.72),
    ("lumen-caption", "lumen-video", "Qwen/Qwen2.5-VL-7B-Instruct", 9.0, 140.0, 27.0, 600.0, 0.70),
    ("kestrel-sandbox", "kestrel-labs", "Qwen/Qwen2.5-0.5B-Instruct", 4.0, 35.0, 12.0, 200.0, 0.60),
    ("eval-judge", "internal-eval", "Qwen/Qwen2.5-32B-Instruct", 14.0, 180.0, 42.0, 800.0, 0.65),
]


def gpu_uuid_for(seed: int, host: str, index: int) -> str:
    digest = hashlib.sha1(f"{seed}:{host}:{index}".encode()).digest()[:16]
    return f"GPU-{uuid.UUID(bytes=digest)}"


# Index and value columns: Python lists while the fleet is built, numpy arrays
# after `finish()` (all that users of a Fleet see).
Column = Any


@dataclass
class Fleet:
    """Columnar description of the fleet; index arrays tie the tables together."""

    seed: int
    scale: int
    # hosts
    host: list[str] = field(default_factory=list)
    host_cluster: list[str] = field(default_factory=list)
    host_rack: list[str] = field(default_factory=list)
    host_slot: list[int] = field(default_factory=list)
    host_domain: list[str | None] = field(default_factory=list)
    host_model: list[str] = field(default_factory=list)
    host_driver: list[str] = field(default_factory=list)
    # gpus
    gpu_uuid: list[str] = field(default_factory=list)
    gpu_host_idx: Column = field(default_factory=list)
    gpu_index: Column = field(default_factory=list)
    gpu_kind: Column = field(default_factory=list)
    gpu_pci: list[str] = field(default_factory=list)
    gpu_mig: Column = field(default_factory=list)
    gpu_tenant: Column = field(default_factory=list)  # -1: unassigned or sliced
    gpu_workload: Column = field(default_factory=list)
    gpu_endpoint: Column = field(default_factory=list)  # -1: none
    # slices
    slice_id: list[str] = field(default_factory=list)
    slice_gpu_idx: Column = field(default_factory=list)
    slice_kind: list[str] = field(default_factory=list)
    slice_profile: list[str] = field(default_factory=list)
    slice_fraction: Column = field(default_factory=list)
    slice_tenant: Column = field(default_factory=list)
    slice_endpoint: Column = field(default_factory=list)
    # links
    link_host_idx: Column = field(default_factory=list)
    link_kind: list[str] = field(default_factory=list)
    link_port: list[str] = field(default_factory=list)
    link_gpu_idx: Column = field(default_factory=list)  # -1 for NICs
    link_rate: Column = field(default_factory=list)

    def finish(self) -> Fleet:
        """Turn the index lists into numpy arrays for vectorised sampling."""
        for name in (
            "gpu_host_idx",
            "gpu_index",
            "gpu_kind",
            "gpu_tenant",
            "gpu_workload",
            "gpu_endpoint",
            "slice_gpu_idx",
            "slice_tenant",
            "slice_endpoint",
            "link_host_idx",
            "link_gpu_idx",
        ):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        for name in ("slice_fraction", "link_rate"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        self.gpu_mig = np.asarray(self.gpu_mig, dtype=bool)
        return self

    @property
    def n_gpus(self) -> int:
        return len(self.gpu_uuid)

    @property
    def n_hosts(self) -> int:
        return len(self.host)

    def tenant_index(self, tenant: str) -> int:
        return [t[0] for t in TENANTS].index(tenant)

    def endpoint_index(self, endpoint: str) -> int:
        return [e[0] for e in ENDPOINTS].index(endpoint)


def build_fleet(seed: int = 7, scale: int = 1, first_unit: int = 0) -> Fleet:
    """`scale` units (factories) from `first_unit` on: daemons given disjoint unit ranges
    simulate disjoint shares of one larger fleet (the DuckLake scale-out benchmark)."""
    if scale < 1 or first_unit < 0:
        raise ValueError("scale must be >= 1 and first_unit >= 0")
    f = Fleet(seed=seed, scale=scale)
    t = f.tenant_index
    e = f.endpoint_index
    for unit in range(first_unit, first_unit + scale):
        cluster = f"factory-{unit + 1}"
        base = unit * 7

        def add_host(
            name: str,
            rack: str,
            slot: int,
            domain: str | None,
            model: str,
            driver: str = "580.82.07",
            cluster: str = cluster,
        ) -> int:
            f.host.append(name)
            f.host_cluster.append(cluster)
            f.host_rack.append(rack)
            f.host_slot.append(slot)
            f.host_domain.append(domain)
            f.host_model.append(model)
            f.host_driver.append(driver)
            return len(f.host) - 1

        def add_gpu(
            hidx: int,
            index: int,
            kind: str,
            pci: str,
            tenant: int,
            workload: int,
            endpoint: int = -1,
            mig: bool = False,
        ) -> int:
            f.gpu_uuid.append(gpu_uuid_for(seed, f.host[hidx], index))
            f.gpu_host_idx.append(hidx)
            f.gpu_index.append(index)
            f.gpu_kind.append(KIND_CODE[kind])
            f.gpu_pci.append(pci)
            f.gpu_mig.append(mig)
            f.gpu_tenant.append(tenant)
            f.gpu_workload.append(workload)
            f.gpu_endpoint.append(endpoint)
            return len(f.gpu_uuid) - 1

        def add_link(hidx: int, kind: str, port: str, gidx: int, rate: float) -> None:
            f.link_host_idx.append(hidx)
            f.link_kind.append(kind)
            f.link_port.append(port)
            f.link_gpu_idx.append(gidx)
            f.link_rate.append(rate)

        # Two NVL72 racks: acme-llm trains on the first; orbital-ai on 64 GPUs of the second.
        for r in range(2):
            rack = f"nvl72-{base + r + 1:02d}"
            for tray in range(18):
                hidx = add_host(
                    f"{rack}-t{tray + 1:02d}", rack, tray + 1, f"{rack}-nvl", "GB200 NVL72"
                )
                for g in range(4):
                    if r == 0:
                        tenant, work = t("acme-llm"), TRAINING
                    elif tray < 16:
                        tenant, work = t("orbital-ai"), TRAINING
                    else:
                        tenant, work = -1, IDLE
                    gidx = add_gpu(hidx, g, "gb200", f"{GB200_DOMAINS[g]}:01:00.0", tenant, work)
                    add_link(hidx, "nvlink", f"nvlink-gpu{g}", gidx, NVLINK5_BYTES_PER_S)
                for p in range(4):
                    add_link(hidx, "ib", f"mlx5_{p}/1", -1, IB_NDR_BYTES_PER_S)

        # Four HGX H100 racks of four hosts.
        for r in range(4):
            rack = f"hgx-{base + r + 3:02d}"
            driver = "570.172.08" if r == 3 else "580.82.07"
            for n in range(4):
                hidx = add_host(
                    f"{rack}-n{n + 1}",
                    rack,
                    n + 1,
                    f"{rack}-n{n + 1}-nvs",
                    "HGX H100 8-GPU",
                    driver,
                )
                if r < 2:
                    tenant, work, ep = t("nimbus-search"), INFERENCE, e("nimbus-chat")
                elif r == 2:
                    tenant, work, ep = t("helix-bio"), TRAINING, -1
                elif n < 2:
                    tenant, work, ep = t("quanta-trade"), INFERENCE, e("quanta-risk")
                elif n == 2:
                    tenant, work, ep = t("internal-eval"), INFERENCE, e("eval-judge")
                else:
                    tenant, work, ep = -1, IDLE, -1
                for g in range(8):
                    gidx = add_gpu(
                        hidx, g, "h100", f"00000000:{HGX_BUS_IDS[g]}:00.0", tenant, work, ep
                    )
                    add_link(hidx, "nvlink", f"nvlink-gpu{g}", gidx, NVLINK4_BYTES_PER_S)
                    add_link(hidx, "ib", f"mlx5_{g}/1", -1, IB_NDR_BYTES_PER_S)

        # One rack of RTX PRO 6000 hosts: n1-n2 MIG-sliced, n3-n4 fractional shares.
        rack = f"rtx-{base + 7:02d}"
        for n in range(4):
            hidx = add_host(f"{rack}-n{n + 1}", rack, n + 1, None, "RTX PRO 6000 Server")
            for g in range(8):
                mig = n < 2
                gidx = add_gpu(
                    hidx, g, "rtx6000", f"00000000:{HGX_BUS_IDS[g]}:00.0", -1, IDLE, mig=mig
                )
                uuid_ = f.gpu_uuid[gidx]
                if mig:
                    gi = 1
                    for profile, count in MIG_LAYOUTS[g % len(MIG_LAYOUTS)]:
                        for _ in range(count):
                            f.slice_id.append(f"{uuid_}/gi{gi}")
                            f.slice_kind.append("mig")
                            f.slice_profile.append(profile)
                            f.slice_fraction.append(MIG_PROFILE_FRACTION[profile])
                            f.slice_tenant.append(t("lumen-video"))
                            f.slice_endpoint.append(e("lumen-caption"))
                            f.slice_gpu_idx.append(gidx)
                            gi += 1
                else:
                    for k, frac in enumerate(FRACTION_LAYOUTS[g % len(FRACTION_LAYOUTS)]):
                        f.slice_id.append(f"{uuid_}/f{k + 1}")
                        f.slice_kind.append("fraction")
                        f.slice_profile.append(f"1/{round(1 / frac)}")
                        f.slice_fraction.append(frac)
                        owner = "kestrel-labs" if (g + k) % 3 else "internal-eval"
                        f.slice_tenant.append(t(owner))
                        f.slice_endpoint.append(
                            e("kestrel-sandbox" if owner == "kestrel-labs" else "eval-judge")
                        )
                        f.slice_gpu_idx.append(gidx)
            for p in range(2):
                add_link(hidx, "roce", f"mlx5_{p}/1", -1, ROCE_200G_BYTES_PER_S)
    return f.finish()
