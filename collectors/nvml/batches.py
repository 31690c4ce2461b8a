"""Decoded reports -> store batches, columnar.

`ReportBatcher.add` extends one list per store column with a report's columns (a
few `list.extend` calls per report, no per-value Python objects); `take` turns
everything added since the last take into one `make_batch` per table. The MQTT
source calls it once per flush.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from collectors.nvml.report import GPU_SPEC, PLACE_SPEC, PROC_SPEC, Report
from collectors.nvml.tenancy import ProcTenancy
from storage.batch import Batch, make_batch

SOURCE_COLUMN = "nvml"  # the `source` column of every sample row

XID_NAMES = {
    13: "Graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "Preemptive cleanup",
    48: "Double Bit ECC Error",
    61: "Internal micro-controller breakpoint",
    63: "ECC page retirement or row remapping recording event",
    64: "Row remapping failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "High single-bit ECC error rate",
    94: "Contained ECC error",
    95: "Uncontained ECC error",
}


def ts_col(us: list[int]) -> pa.Array:
    """Epoch microseconds -> the store's timestamp column."""
    return pa.array(us, type=pa.int64()).cast(pa.timestamp("us"))


def naive_utc(t: float) -> datetime:
    """Epoch seconds -> naive UTC datetime (the store's convention)."""
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


_GPU_COLS = [k for k in GPU_SPEC if not k.startswith("nvlink_") and k != "uuid"]
_SAMPLE_COLS = [
    c
    for c in _GPU_COLS
    if c
    not in (
        "mem_reserved_bytes",
        "remapped_rows_correctable",
        "remapped_rows_uncorrectable",
        "remap_pending",
        "remap_failed",
    )
]
_MEM_COLS = [
    "mem_reserved_bytes",
    "remapped_rows_correctable",
    "remapped_rows_uncorrectable",
    "remap_pending",
    "remap_failed",
]
_PORTS = [f"nvlink{i}" for i in range(64)]


NVLINK_ROWS = ("per_link", "per_gpu")


class ReportBatcher:
    """Accumulates decoded reports as column lists; `take` turns them into batches.

    `nvlink_rows="per_link"` writes one link_samples row per NVLink (port
    `nvlink<N>`); "per_gpu" one per GPU (port `nvlink`: rates and errors summed,
    up only if every link is up), 18x fewer rows on H100/GB200 fleets.
    """

    def __init__(self, nvlink_rows: str = "per_link") -> None:
        if nvlink_rows not in NVLINK_ROWS:
            raise ValueError(f"nvlink_rows must be one of {', '.join(NVLINK_ROWS)}")
        self.per_gpu_links = nvlink_rows == "per_gpu"
        self.tenancy = ProcTenancy()  # kept across takes: assignments open and close
        self.reset()

    def reset(self) -> None:
        self.reports = 0
        self.report_ts: list[float] = []
        self.g: dict[str, list[Any]] = {c: [] for c in ["ts", "host", "gpu_uuid", *_GPU_COLS]}
        self.s: dict[str, list[Any]] = {
            c: []
            for c in ("ts", "slice_id", "gpu_uuid", "util_pct", "mem_used_bytes", "mem_total_bytes")
        }
        self.ln: dict[str, list[Any]] = {
            c: []
            for c in (
                "ts",
                "host",
                "port",
                "gpu_uuid",
                "tx_bytes_per_s",
                "rx_bytes_per_s",
                "errors",
                "link_up",
            )
        }
        self.p: dict[str, list[Any]] = {
            c: [] for c in ("ts", "host", "gpu_uuid", *[k for k in PROC_SPEC if k != "gpu"])
        }
        self.ev: dict[str, list[Any]] = {
            c: [] for c in ("ts", "host", "gpu_uuid", "code", "detail")
        }
        self.hosts: dict[str, list[Any]] = {}  # host -> [first ts, last ts, driver, place]
        self.inv_gpus: dict[str, list[Any]] = {
            c: []
            for c in (
                "gpu_uuid",
                "host",
                "gpu_index",
                "name",
                "pci_bus_id",
                "mig_mode",
                "mem_total_bytes",
            )
        }
        self.inv_slices: dict[str, list[Any]] = {c: [] for c in ("slice_id", "gpu_uuid", "profile")}

    def add(self, r: Report, with_inventory: bool) -> None:
        self.reports += 1
        self.report_ts.append(r.ts)
        ts_us = int(r.ts * 1e6)
        n = r.n_gpus
        g, gpu = self.g, r.gpu
        uuids = gpu["uuid"]
        g["ts"] += [ts_us] * n
        g["host"] += [r.host] * n
        g["gpu_uuid"] += uuids
        for c in _GPU_COLS:
            col = gpu.get(c)
            g[c] += col if col is not None else [None] * n
        tx, rx = gpu.get("nvlink_tx_bytes_per_s"), gpu.get("nvlink_rx_bytes_per_s")
        if tx is not None or rx is not None:
            errs, ups = gpu.get("nvlink_errors"), gpu.get("nvlink_up")
            ln = self.ln
            for i in range(n):
                per_tx = tx[i] if tx is not None else None
                per_rx = rx[i] if rx is not None else None
                k = max(len(per_tx or ()), len(per_rx or ()))
                if not k:
                    continue
                if self.per_gpu_links:
                    self._add_gpu_link(
                        r,
                        ts_us,
                        uuids[i],
                        per_tx,
                        per_rx,
                        errs[i] if errs is not None else None,
                        ups[i] if ups is not None else None,
                    )
                    continue
                nones = [None] * k
                ln["ts"] += [ts_us] * k
                ln["host"] += [r.host] * k
                ln["port"] += _PORTS[:k]
                ln["gpu_uuid"] += [uuids[i]] * k
                ln["tx_bytes_per_s"] += _fit(per_tx, k, nones)
                ln["rx_bytes_per_s"] += _fit(per_rx, k, nones)
                ln["errors"] += _fit(errs[i] if errs is not None else None, k, nones)
                ln["link_up"] += _fit(ups[i] if ups is not None else None, k, nones)
        sl = r.slice
        if sl:
            m = len(sl["id"])
            s = self.s
            s["ts"] += [ts_us] * m
            s["slice_id"] += sl["id"]
            s["gpu_uuid"] += [uuids[i] for i in sl["gpu"]]
            for c in ("util_pct", "mem_used_bytes", "mem_total_bytes"):
                col = sl.get(c)
                s[c] += col if col is not None else [None] * m
        if r.proc:
            m = len(r.proc["pid"])
            p = self.p
            p["ts"] += [ts_us] * m
            p["host"] += [r.host] * m
            p["gpu_uuid"] += [uuids[i] for i in r.proc["gpu"]]
            for c in PROC_SPEC:
                if c != "gpu":
                    col = r.proc.get(c)
                    p[c] += col if col is not None else [None] * m
        if r.xid:
            m = len(r.xid["code"])
            ev = self.ev
            ev["ts"] += [int(t * 1e6) for t in r.xid["ts"]]
            ev["host"] += [r.host] * m
            ev["gpu_uuid"] += r.xid.get("gpu_uuid") or [None] * m
            ev["code"] += r.xid["code"]
            ev["detail"] += [
                f"Xid {c}: {XID_NAMES.get(c, 'see NVIDIA Xid catalog')}" for c in r.xid["code"]
            ]
        self.tenancy.observe(r)
        seen = self.hosts.get(r.host)
        if seen is None:
            self.hosts[r.host] = [r.ts, r.ts, r.driver, r.place]
        else:
            seen[0], seen[1] = min(seen[0], r.ts), max(seen[1], r.ts)
            seen[2] = r.driver or seen[2]
            seen[3] = r.place or seen[3]
        if with_inventory and r.inv:
            gi, si = r.inv["gpus"], r.inv["slices"]
            k = len(gi["uuid"])
            self.inv_gpus["gpu_uuid"] += gi["uuid"]
            self.inv_gpus["host"] += [r.host] * k
            for src, dst in (
                ("index", "gpu_index"),
                ("name", "name"),
                ("pci_bus_id", "pci_bus_id"),
                ("mig_mode", "mig_mode"),
            ):
                self.inv_gpus[dst] += gi.get(src) or [None] * k
            # the GPU's memory size rides on its samples in the same report
            totals = dict(zip(r.gpu["uuid"], r.gpu.get("mem_total_bytes") or (), strict=False))
            self.inv_gpus["mem_total_bytes"] += [totals.get(u) for u in gi["uuid"]]
            k = len(si.get("id", []))
            if k:
                self.inv_slices["slice_id"] += si["id"]
                self.inv_slices["gpu_uuid"] += si.get("gpu_uuid") or [None] * k
                self.inv_slices["profile"] += si.get("profile") or [None] * k

    def _add_gpu_link(
        self,
        r: Report,
        ts_us: int,
        uuid: str,
        tx: list | None,
        rx: list | None,
        errs: list | None,
        ups: list | None,
    ) -> None:
        def total(vals: list | None) -> float | None:
            known = [v for v in vals or () if v is not None]
            return sum(known) if known else None

        known_up = [u for u in ups or () if u is not None]
        ln = self.ln
        ln["ts"].append(ts_us)
        ln["host"].append(r.host)
        ln["port"].append("nvlink")
        ln["gpu_uuid"].append(uuid)
        ln["tx_bytes_per_s"].append(total(tx))
        ln["rx_bytes_per_s"].append(total(rx))
        ln["errors"].append(total(errs))
        ln["link_up"].append(all(known_up) if known_up else None)

    def take(self) -> list[Batch]:
        """Batches for everything added since the last take (one per table), then reset."""
        out: list[Batch] = []
        src = SOURCE_COLUMN
        g = self.g
        n = len(g["ts"])
        if n:
            ts = ts_col(g["ts"])
            cols: dict[str, Any] = {"ts": ts, "host": g["host"], "gpu_uuid": g["gpu_uuid"]}
            cols.update({c: g[c] for c in _SAMPLE_COLS})
            cols["source"] = [src] * n
            out.append(make_batch("gpu_samples", cols))
            mem = {
                "ts": ts,
                "host": g["host"],
                "gpu_uuid": g["gpu_uuid"],
                **{c: g[c] for c in _MEM_COLS},
                "source": [src] * n,
            }
            out.append(make_batch("gpu_mem_samples", mem))
        if self.s["ts"]:
            m = len(self.s["ts"])
            out.append(
                make_batch(
                    "slice_samples", {**self.s, "ts": ts_col(self.s["ts"]), "source": [src] * m}
                )
            )
        if self.ln["ts"]:
            m = len(self.ln["ts"])
            out.append(
                make_batch(
                    "link_samples",
                    {
                        **self.ln,
                        "ts": ts_col(self.ln["ts"]),
                        "kind": pa.array(["nvlink"] * m),
                        "source": [src] * m,
                    },
                )
            )
        if self.p["ts"]:
            m = len(self.p["ts"])
            out.append(
                make_batch("processes", {**self.p, "ts": ts_col(self.p["ts"]), "source": [src] * m})
            )
        if self.ev["ts"]:
            m = len(self.ev["ts"])
            out.append(
                make_batch(
                    "events",
                    {
                        **self.ev,
                        "ts": ts_col(self.ev["ts"]),
                        "kind": ["xid"] * m,
                        "source": [src] * m,
                    },
                )
            )
        if self.hosts:
            names = list(self.hosts)
            cols = {
                "host": names,
                "driver_version": [self.hosts[h][2] for h in names],
                "first_seen": [naive_utc(self.hosts[h][0]) for h in names],
                "last_seen": [naive_utc(self.hosts[h][1]) for h in names],
            }
            places = [self.hosts[h][3] or {} for h in names]
            if any(places):  # the agent's own placement (the topology file overrides it)
                for key in PLACE_SPEC:
                    cols[key] = [p.get(key) for p in places]
            out.append(make_batch("hosts", cols))
        if self.inv_gpus["gpu_uuid"]:
            out.append(make_batch("gpus", self.inv_gpus))
        if self.inv_slices["slice_id"]:
            m = len(self.inv_slices["slice_id"])
            out.append(make_batch("slices", {**self.inv_slices, "kind": ["mig"] * m}))
        out += self.tenancy.take(naive_utc)
        self.reset()
        return out


def _fit(per: list[Any] | None, k: int, nones: list[None]) -> list[Any]:
    if per is None:
        return nones
    if len(per) == k:
        return per
    return (per + nones)[:k]
