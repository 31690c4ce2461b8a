"""Decoded reports -> store batches, columnar.

`ReportBatcher.add` extends one list per store column with a report's columns (a
few `list.extend` calls per report, no per-value Python objects); `take` turns
everything added since the last take into one `make_batch` per table. The MQTT
source calls it once per flush.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import chain, repeat
from typing import Any

import numpy as np
import pyarrow as pa

from collectors.nvml.report import GPU_SPEC, PLACE_SPEC, PROC_SPEC, Report
from collectors.nvml.tenancy import ProcTenancy
from storage.batch import Batch, make_batch

SOURCE_COLUMN = "nvml"  # the `source` column of every sample row

# Arrow tries `import dateutil` for most Python lists it converts (`pa.array`); where it
# is not installed each try searches sys.path again (~0.4 ms, ~12 per flush). Marked
# absent once, the import fails at once, as Arrow expects.
if importlib.util.find_spec("dateutil") is None:
    sys.modules.setdefault("dateutil", None)  # type: ignore[arg-type]

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


def ts_col(us: list[int | None]) -> pa.Array:
    """Epoch microseconds -> the store's timestamp column."""
    return pa.array(us, type=pa.int64()).cast(pa.timestamp("us"))


def naive_utc(t: float) -> datetime:
    """Epoch seconds -> naive UTC datetime (the store's convention)."""
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def epoch_col(seconds: list[float | None]) -> pa.Array:
    """Epoch seconds -> the store's timestamp column, rounded to the microsecond as
    `naive_utc` is. Not from datetimes: Arrow tries `import dateutil` (absent) for
    every list of datetimes it converts, ~0.5 ms each, several per flush."""
    return ts_col([None if t is None else round(t * 1e6) for t in seconds])


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
_PORT_NAMES = pa.array(_PORTS, pa.string())


NVLINK_ROWS = ("per_link", "per_gpu")


class HostRows:
    """What the `hosts` table was last handed per host, so that a flush writes a host's
    row only when the merge would change it. A new host, a new driver or placement,
    or an earlier first report: its whole row, in that flush. A later report: its
    last_seen, handed in with the first flush of the next `seen_every_s` step of
    the clock, for every host at once (one small merge per step instead of one per
    flush; host and last_seen only, which is not a layout change for the live
    snapshot). Writing the same driver and placement again changes nothing (the
    merge keeps the latest non-NULL value), so only last_seen lags, by at most one
    step: the source's report interval, a third of what stale-host alerts wait.
    `forget()` after a flush that was not stored: every host's next row is whole."""

    def __init__(self, seen_every_s: float, clock: Callable[[], float]) -> None:
        self.seen_every_s = seen_every_s
        self.clock = clock
        # host -> [driver, place, first_seen, last_seen] as last handed to the store
        self.written: dict[str, list[Any]] = {}
        self.unwritten: dict[str, float] = {}  # host -> a later last_seen not handed yet
        self._step = -1.0  # the clock's step of the last last_seen hand-in

    def forget(self) -> None:
        self.written.clear()
        self._step = -1.0

    def drop(self, hosts: list[str]) -> None:
        """Hosts the source forgot (evicted): whole rows again if they come back."""
        for h in hosts:
            self.written.pop(h, None)

    def split(self, hosts: dict[str, list[Any]]) -> tuple[list[str], list[tuple[str, float]]]:
        """(hosts whose whole row is due, (host, last_seen) pairs due); records both as
        handed in. `hosts`: the batcher's host -> [first ts, last ts, driver, place]."""
        full: list[str] = []
        written, unwritten = self.written, self.unwritten
        for h, (first, last, driver, place) in hosts.items():
            w = written.get(h)
            if w is None:
                written[h] = [driver, place, first, last]
            elif (
                (driver is not None and driver != w[0]) or (place and place != w[1]) or first < w[2]
            ):
                w[0] = driver if driver is not None else w[0]
                w[1] = place or w[1]
                w[2], w[3] = min(first, w[2]), max(last, w[3])
            else:
                if last > w[3]:
                    unwritten[h] = max(last, unwritten.get(h, last))
                continue
            full.append(h)  # its row carries `last`: a later one still waits
            if unwritten.get(h, last) <= last:
                unwritten.pop(h, None)
        step = self.clock() // self.seen_every_s
        if step <= self._step:  # handed in this step already
            return full, []
        self._step = step
        seen = list(unwritten.items())
        unwritten.clear()
        for h, last in seen:
            w = written.get(h)
            if w is not None:
                w[3] = max(w[3], last)
        return full, seen


class ReportBatcher:
    """Accumulates decoded reports as column lists; `take` turns them into batches.

    `nvlink_rows="per_link"` writes one link_samples row per NVLink (port
    `nvlink<N>`); "per_gpu" one per GPU (port `nvlink`: rates and errors summed,
    up only if every link is up), 18x fewer rows on H100/GB200 fleets.
    """

    def __init__(self, nvlink_rows: str = "per_link", host_rows: HostRows | None = None) -> None:
        if nvlink_rows not in NVLINK_ROWS:
            raise ValueError(f"nvlink_rows must be one of {', '.join(NVLINK_ROWS)}")
        self.per_gpu_links = nvlink_rows == "per_gpu"
        self.host_rows = host_rows  # None: every host's row at every take
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
        # per report: (ts_us, host, uuids, tx, rx, errors, up), the NVLink lists as decoded
        self.links: list[tuple[Any, ...]] = []
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
        self.add_samples(r)
        self.add_meta(r, with_inventory)

    def add_samples(self, r: Report) -> None:
        """The report's GPU, slice, NVLink and process rows."""
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
        if tx is not None or rx is not None:  # turned into rows for all reports in `take`
            self.links.append(
                (ts_us, r.host, uuids, tx, rx, gpu.get("nvlink_errors"), gpu.get("nvlink_up"))
            )
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

    def add_meta(self, r: Report, with_inventory: bool) -> None:
        """What is per report rather than per sample: the report's count and time, Xid
        events, tenancy, the host's row and the inventory (version 2 frames add only
        this: their samples are read as columns, collectors/nvml/report_v2.py)."""
        self.reports += 1
        self.report_ts.append(r.ts)
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
        ln = _link_columns(self.links, self.per_gpu_links) if self.links else None
        if ln is not None:
            m = len(ln["ts"])
            ln["ts"] = ts_col(ln["ts"])
            out.append(
                make_batch("link_samples", {**ln, "kind": ["nvlink"] * m, "source": [src] * m})
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
        if self.inv_gpus["gpu_uuid"]:
            out.append(make_batch("gpus", self.inv_gpus))
        if self.inv_slices["slice_id"]:
            m = len(self.inv_slices["slice_id"])
            out.append(make_batch("slices", {**self.inv_slices, "kind": ["mig"] * m}))
        out += self.tenancy.take(naive_utc)
        out += self._host_batches()  # last: marks rows as handed in only when all built
        self.reset()
        return out

    def _host_batches(self) -> list[Batch]:
        seen: list[tuple[str, float]] = []
        if self.host_rows is None:
            names = list(self.hosts)
        else:
            names, seen = self.host_rows.split(self.hosts)
        out: list[Batch] = []
        if names:
            cols = {
                "host": names,
                "driver_version": [self.hosts[h][2] for h in names],
                "first_seen": epoch_col([self.hosts[h][0] for h in names]),
                "last_seen": epoch_col([self.hosts[h][1] for h in names]),
            }
            places = [self.hosts[h][3] or {} for h in names]
            if any(places):  # the agent's own placement (the topology file overrides it)
                for key in PLACE_SPEC:
                    cols[key] = [p.get(key) for p in places]
            out.append(make_batch("hosts", cols))
        if seen:
            last = epoch_col([t for _, t in seen])
            out.append(make_batch("hosts", {"host": [h for h, _ in seen], "last_seen": last}))
        return out


def _fit(per: list[Any] | None, k: int, nones: list[None]) -> list[Any]:
    if per is None:
        return nones
    if len(per) == k:
        return per
    return (per + nones)[:k]


def _per_gpu_lists(links: list[tuple[Any, ...]], j: int, n_per: list[int]) -> list[Any]:
    """Field `j` of every report's NVLink tuple as one per-GPU list (None: not reported)."""
    return list(
        chain.from_iterable(
            e[j] if e[j] is not None else repeat(None, n) for e, n in zip(links, n_per, strict=True)
        )
    )


def _lists(per_gpu: list[Any], typ: pa.DataType) -> tuple[np.ndarray, pa.Array]:
    """(number of values of each GPU, all values in order as one typed array, nulls kept),
    read by Arrow in C from the per-GPU lists."""
    arr = pa.array(per_gpu)
    if pa.types.is_null(arr.type):  # no GPU reported this field
        return np.zeros(len(per_gpu), np.int64), pa.array([], typ)
    lengths = arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    flat = arr.flatten()
    return lengths, flat.cast(typ) if flat.type != typ else flat


def _link_columns(links: list[tuple[Any, ...]], per_gpu: bool) -> dict[str, Any] | None:
    """link_samples columns for every report's NVLink lists at once: a GPU with k links
    (k = the longer of its tx and rx lists) gives k rows, port `nvlink<N>`, or with
    `per_gpu` one row, port `nvlink`, rates and errors summed over the links it reported
    (null if none), up only if every link it reported is up. Per link, values are never
    touched one by one in Python: Arrow reads the lists, numpy repeats; per GPU, see
    `_per_gpu_columns`."""
    if per_gpu:
        return _per_gpu_columns(links)
    n_per = [len(e[2]) for e in links]
    cols = [_per_gpu_lists(links, j, n_per) for j in (3, 4, 5, 6)]
    typs = (pa.float64(), pa.float64(), pa.int64(), pa.bool_())
    read = [_lists(c, t) for c, t in zip(cols, typs, strict=True)]
    ks = np.maximum(read[0][0], read[1][0])
    keep = np.flatnonzero(ks)
    if not len(keep):
        return None
    gpu_ts = np.repeat(np.array([e[0] for e in links], np.int64), n_per)
    gpu_host = np.repeat(np.arange(len(links)), n_per)
    hosts = pa.array([e[1] for e in links], pa.string())
    uuids = pa.array(list(chain.from_iterable(e[2] for e in links)), pa.string())
    names = ("tx_bytes_per_s", "rx_bytes_per_s", "errors", "link_up")
    rows = np.repeat(np.arange(len(ks)), ks)
    port = np.arange(len(rows)) - np.repeat(np.cumsum(ks) - ks, ks)  # link index in its GPU
    out = {
        "ts": gpu_ts[rows],
        "host": hosts.take(gpu_host[rows]),
        "port": _PORT_NAMES.take(port),
        "gpu_uuid": uuids.take(rows),
    }
    kk = ks[keep].tolist()
    fit = [None] * int(ks.max())
    for name, col, (lengths, flat) in zip(names, cols, read, strict=True):
        if np.array_equal(lengths, ks):  # the common case: every list has k values
            out[name] = flat
        else:  # pad or cut each GPU's list to its k links
            out[name] = list(
                chain.from_iterable(
                    _fit(col[i], k, fit[:k]) for i, k in zip(keep.tolist(), kk, strict=True)
                )
            )
    return out


def _total(vals: list[Any] | None) -> Any:
    """A GPU's links summed (null if it reported none): `sum` in C, the nulls left out
    only when there are some."""
    if not vals:
        return None
    try:
        return sum(vals)
    except TypeError:  # a null among them
        known = [v for v in vals if v is not None]
        return sum(known) if known else None


def _all_up_of(vals: list[Any] | None) -> bool | None:
    if not vals:
        return None
    if None in vals:
        vals = [v for v in vals if v is not None]
        if not vals:
            return None
    return all(vals)


def _per_gpu_columns(links: list[tuple[Any, ...]]) -> dict[str, Any] | None:
    """`per_gpu` link rows: one per GPU that reported a link, its lists reduced by
    builtins (a few C calls per GPU; Arrow's conversion of the nested lists cost
    more than the sums). The same rules as the per-link path: rates and errors summed
    over the links reported, up only if every reported link is up."""
    cols: dict[str, list[Any]] = {k: [] for k in ("ts", "host", "gpu_uuid", *_LINK_VALUES)}
    ts, host, uuid = cols["ts"], cols["host"], cols["gpu_uuid"]
    tx_c, rx_c, err_c, up_c = (cols[k] for k in _LINK_VALUES)
    for ts_us, h, uuids, tx, rx, errs, ups in links:
        for i, u in enumerate(uuids):
            t = tx[i] if tx is not None else None
            r = rx[i] if rx is not None else None
            if not t and not r:
                continue
            e = errs[i] if errs is not None else None
            ts.append(ts_us)
            host.append(h)
            uuid.append(u)
            tx_c.append(_total(t))
            rx_c.append(_total(r))
            err = _total(e)
            if err is not None and not -(2**63) <= err < 2**63:
                raise OverflowError("NVLink error counts sum beyond a 64-bit integer")
            err_c.append(err)
            up_c.append(_all_up_of(ups[i] if ups is not None else None))
    if not ts:
        return None
    cols["port"] = ["nvlink"] * len(ts)
    return cols


_LINK_VALUES = ("tx_bytes_per_s", "rx_bytes_per_s", "errors", "link_up")
