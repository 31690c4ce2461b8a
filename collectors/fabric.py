"""Fabric counters -> link_samples: InfiniBand/RoCE from node_exporter, NVLink from DCGM.

node_exporter's `node_infiniband_*` series (labels `device`, `port`) are
counters: rates are deltas over the time between the two samples, and error
counts are the errors that happened in the interval. A counter that goes
backwards (reset) gives NULL for that interval with a recorded reason.
Host: the series' hostname label, else the scrape instance without its port.
Every host seen gets a `hosts` row (last_seen = its newest sample), so a host
known only from node_exporter is covered by the staleness rule.

`errors` is the increase of every error counter node_exporter's infiniband
collector exports (IB_ERRORS). `port_transmit_wait_total` counts congestion
*ticks*, not errors, and the packet counters have no column: those are
counted as dropped, with the reason.

Link kind is per *device*, not per host (an iWARP NIC sits beside HCAs):
`kind_by_device` (fnmatch on the device name) wins, then the device name
(kernel naming: `i40iw*`, `irdma*`, `iw_*`, `cxgb4*`, `siw*` iwarp;
`roce*`, `bnxt_re*`, `rxe*`, `hns*`, `qedr*` roce; `efa*`, `rdmap*` efa) or the
`hca_type` of `node_infiniband_info` (I40IW), then `kind_by_host`, else ib.
node_exporter does not export a port's link_layer, so an mlx5 HCA running
RoCE is `ib` unless configured.

NVLink (one aggregate row per GPU, port `nvlink-gpu<index>`): DCGM's profiling
rates `PROF_NVLINK_TX/RX_BYTES` (bytes/s) and the error counters
(`NVLINK_CRC_*`, `NVLINK_REPLAY_*`, `NVLINK_RECOVERY_*`, classic and 4.6
names). On a MIG GPU these repeat on every instance: read once per GPU.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from collectors.dcgm_blank import blank_mask
from collectors.promtext.counters import STALE_S, CounterTracker
from collectors.promtext.labels import host_of
from collectors.promtext.series import Snapshot
from storage.batch import Batch, make_batch

IB_TX = "node_infiniband_port_data_transmitted_bytes_total"
IB_RX = "node_infiniband_port_data_received_bytes_total"
# Every error counter of node_exporter's collector/infiniband_linux.go (port counters).
IB_ERRORS = (
    "node_infiniband_excessive_buffer_overrun_errors_total",
    "node_infiniband_link_downed_total",
    "node_infiniband_link_error_recovery_total",
    "node_infiniband_local_link_integrity_errors_total",
    "node_infiniband_port_constraint_errors_received_total",
    "node_infiniband_port_constraint_errors_transmitted_total",
    "node_infiniband_port_discards_received_total",
    "node_infiniband_port_discards_transmitted_total",
    "node_infiniband_port_errors_received_total",
    "node_infiniband_port_receive_remote_physical_errors_total",
    "node_infiniband_port_receive_switch_relay_errors_total",
    "node_infiniband_symbol_error_total",
    "node_infiniband_vl15_dropped_total",
)
IB_RATE = "node_infiniband_rate_bytes_per_second"
IB_STATE = "node_infiniband_state_id"  # 4 = ACTIVE
IB_PHYS = "node_infiniband_physical_state_id"  # 5 = LinkUp
IB_INFO = "node_infiniband_info"  # labels device, hca_type, board_id, firmware_version
IB_NAMES = frozenset((IB_TX, IB_RX, IB_RATE, IB_STATE, IB_PHYS, *IB_ERRORS))
IB_PREFIX = "node_infiniband_"
# node_infiniband_* series with no column, and why (counted, not silent); first match wins
IB_NO_COLUMN = {
    "node_infiniband_port_transmit_wait_total": "congestion ticks, not errors: no store column",
    "node_infiniband_legacy_": "32-bit legacy counters duplicating port_data/packets: not used",
    "node_infiniband_": "packet / RDMA hardware counter: no store column",
}

# Device-name prefixes (kernel naming) -> link kind.
DEVICE_KINDS = (
    (("i40iw", "irdma", "iw_", "cxgb4", "siw"), "iwarp"),
    (("roce", "bnxt_re", "rxe", "hns", "qedr"), "roce"),
    (("efa", "rdmap"), "efa"),
)
HCA_KINDS = {"I40IW": "iwarp"}

NVLINK_TX = ("DCGM_FI_PROF_NVLINK_TX_BYTES",)
NVLINK_RX = ("DCGM_FI_PROF_NVLINK_RX_BYTES",)
NVLINK_ERRORS = (
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_CRC_ERROR_TOTAL",
    "DCGM_FI_DEV_NVLINK_REPLAY_TOTAL",
    "DCGM_FI_DEV_NVLINK_RECOVERY_TOTAL",
)
NVLINK_NAMES = frozenset((*NVLINK_TX, *NVLINK_RX, *NVLINK_ERRORS))


# A port's rate (per direction, bytes/s; a GPU's NVLinks together are under 2e12) and
# its errors in one interval beyond these are no reading: counters of 1e30, a reset
# from -1e308, a negated rate. NULL, with the reason.
RATE_MAX = 1e13
ERRORS_MAX = 2**62


def _bounded(values: list, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """A column (None as NaN) and where it is out of [0, hi] or not finite (then NaN)."""
    a = np.array(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        wild = ~np.isnan(a) & ~((a >= 0) & (a <= hi))
    a[wild] = np.nan
    return a, wild


def _nullable(a: np.ndarray, dtype: type | None = None) -> pa.Array:
    mask = np.isnan(a)
    return pa.array(a if dtype is None else np.where(mask, 0, a).astype(dtype), mask=mask)


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


@dataclass
class FabricResult:
    batches: list[Batch]
    skipped: list[str]
    links: int = 0
    used: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class FabricRules:
    kind_by_host: Mapping[str, str] = field(default_factory=dict)  # fnmatch pattern -> kind
    kind_by_device: Mapping[str, str] = field(default_factory=dict)  # device pattern -> kind

    def kind(self, host: str, device: str = "", hca_type: str | None = None) -> str:
        for pattern, kind in self.kind_by_device.items():
            if fnmatch.fnmatchcase(device, pattern):
                return kind
        for prefixes, kind in DEVICE_KINDS:
            if device.startswith(prefixes):
                return kind
        if hca_type and hca_type.upper() in HCA_KINDS:
            return HCA_KINDS[hca_type.upper()]
        for pattern, kind in self.kind_by_host.items():
            if fnmatch.fnmatchcase(host, pattern):
                return kind
        return "ib"


@dataclass(slots=True)
class _FabricPlan:
    ib: list[tuple[int, tuple[str, str, str], None]]  # IB/RoCE samples with a port
    steps: list[tuple]
    dropped: dict[str, int]  # series with no column (labels only)
    nv_idx: np.ndarray  # NVLink samples, for their blank check
    ib_cols: _IbColumns | None = None  # the IB samples as columns (None: one at a time)


# What an IB/RoCE sample feeds: a counter (rates, errors), the line rate, a state.
_TX, _RX, _RATE, _STATE, _PHYS, _ERR = range(6)


class _IbColumns:
    """IB/RoCE samples of a plan as columns, their counter baselines as arrays.

    Used when no port has the same series twice (else one sample at a time, in
    order, as before). Baselines move to these arrays from the mapper's
    CounterTracker when the plan is made, and back when it is replaced."""

    def __init__(self, ib: list[tuple[int, tuple[str, str, str], None]], names: list[str]):
        ports: dict[tuple[str, str, str], int] = {}
        what = {IB_TX: _TX, IB_RX: _RX, IB_RATE: _RATE, IB_STATE: _STATE, IB_PHYS: _PHYS}
        self.idx = np.asarray([i for i, _, _ in ib], dtype=np.int64)
        self.row = np.asarray(
            [ports.setdefault(key, len(ports)) for _, key, _ in ib], dtype=np.int64
        )
        self.kind = np.asarray([what.get(names[i], _ERR) for i, _, _ in ib], dtype=np.int8)
        self.keys = list(ports)
        counter = (self.kind == _TX) | (self.kind == _RX) | (self.kind == _ERR)
        self.counter = np.flatnonzero(counter)  # positions of counter samples
        self.counter_keys = [(*ib[k][1], names[ib[k][0]]) for k in self.counter.tolist()]
        self.prev_t = np.full(len(self.counter), np.nan)
        self.prev_v = np.full(len(self.counter), np.nan)

    @staticmethod
    def usable(ib: list[tuple[int, tuple[str, str, str], None]], names: list[str]) -> bool:
        return len({(key, names[i]) for i, key, _ in ib}) == len(ib)

    def load(self, tracker: CounterTracker) -> None:
        for k, key in enumerate(self.counter_keys):
            b = tracker.get(key)
            self.prev_t[k], self.prev_v[k] = b if b is not None else (np.nan, np.nan)

    def save(self, tracker: CounterTracker) -> None:
        for key, t, v in zip(
            self.counter_keys, self.prev_t.tolist(), self.prev_v.tolist(), strict=True
        ):
            tracker.put(key, None if t != t else (t, v))


class FabricMapper:
    def __init__(self, source: str, rules: FabricRules | None = None):
        self.source = source
        self.rules = rules or FabricRules()
        self._counters = CounterTracker()
        self._up: dict[tuple[str, str, str], bool] = {}  # last link state, for down events
        self._plan: _FabricPlan | None = None
        self._plan_key: object = None

    def reset(self) -> None:
        self._counters = CounterTracker()
        self._plan = None  # its baselines go with the tracker

    def _plan_for(self, snap: Snapshot) -> _FabricPlan:
        """What each fabric series is (names and labels only): reused while the layout holds."""
        if snap.layout is not None and self._plan is not None and snap.layout == self._plan_key:
            return self._plan
        ib: list[tuple[int, tuple[str, str, str], None]] = []  # (sample, port key, no GPU)
        steps: list[tuple] = []  # in sample order: ("skip", why) / ("nv", ...)
        dropped: dict[str, int] = {}
        nv_idx: list[int] = []
        hca: dict[tuple[str, str], str] = {}  # (host, device) -> hca_type
        for i, name in enumerate(snap.names if IB_INFO in snap.names else ()):
            if name == IB_INFO:
                labels = snap.labels[i]
                host = host_of(labels)
                if host and labels.get("device") and labels.get("hca_type"):
                    hca[(host, labels["device"])] = labels["hca_type"]
        for i, name in enumerate(snap.names):
            if name in IB_NAMES:
                labels = snap.labels[i]
                host = host_of(labels)
                dev, port = labels.get("device"), labels.get("port")
                if not host or not dev:
                    steps.append(
                        ("skip", f"{self.source}: {name}: no host or device label, skipped")
                    )
                    continue
                kind = self.rules.kind(host, dev, hca.get((host, dev)))
                ib.append((i, (host, kind, f"{dev}/{port}" if port else dev), None))
            elif name.startswith(IB_PREFIX):
                if name != IB_INFO:
                    why = next(
                        f"{name}: {r}" for p, r in IB_NO_COLUMN.items() if name.startswith(p)
                    )
                    dropped[why] = dropped.get(why, 0) + 1
            elif name in NVLINK_NAMES:
                labels = snap.labels[i]
                host = host_of(labels)
                key = None
                if host and labels.get("UUID"):
                    key = (host, "nvlink", f"nvlink-gpu{labels.get('gpu', '')}")
                gi = labels.get("GPU_I_ID") or ""
                rank = float(gi) if gi.isdigit() else -1.0
                steps.append(("nv", i, name, key, rank, len(nv_idx)))
                nv_idx.append(i)
        plan = _FabricPlan(ib, steps, dropped, np.asarray(nv_idx, dtype=np.int64))
        if self._plan is not None and self._plan.ib_cols is not None:
            self._plan.ib_cols.save(self._counters)  # baselines back, for the new plan
        if _IbColumns.usable(ib, snap.names):
            plan.ib_cols = _IbColumns(ib, snap.names)
            plan.ib_cols.load(self._counters)
        self._plan, self._plan_key = plan, snap.layout
        return plan

    def map(self, snap: Snapshot) -> FabricResult:
        plan = self._plan_for(snap)
        ports: dict[tuple[str, str, str], dict] = {}  # (host, kind, port) -> row
        skipped: list[str] = []
        dropped = dict(plan.dropped)
        used = 0
        cols = plan.ib_cols
        if cols is not None:  # IB/RoCE as columns; NVLink below, one GPU at a time
            ports.update(zip(cols.keys, self._ib_rows(cols, snap, skipped), strict=True))
            used += len(cols.idx)
        picked: list[tuple[int, tuple[str, str, str], str | None]] = (
            [] if cols is not None else list(plan.ib)
        )
        nv_best: dict[tuple, tuple[float, int]] = {}  # (key, name) -> (GI rank, sample index)
        # DCGM blanks among the NVLink samples
        blank = blank_mask(snap.values[plan.nv_idx]).tolist()
        for step in plan.steps:
            if step[0] == "skip":
                skipped.append(step[1])
            else:
                _, i, name, key, rank, k = step
                if blank[k]:
                    why = (
                        f"{name}: DCGM blank value (not supported/found/permitted), stored as NULL"
                    )
                    dropped[why] = dropped.get(why, 0) + 1
                    continue
                if key is None:
                    skipped.append(f"{self.source}: {name}: no host or UUID label, skipped")
                    continue
                # repeated on every MIG instance: keep the lowest instance's value, once
                best = nv_best.get((key, name))
                if best is None or rank < best[0]:
                    nv_best[(key, name)] = (rank, i)
        picked += [(i, key, snap.labels[i]["UUID"]) for (key, _), (_, i) in nv_best.items()]
        # Python floats of the picked samples only (not of the whole snapshot)
        at = np.fromiter((p[0] for p in picked), np.int64, len(picked))
        for (i, key, gpu), t, v in zip(
            picked, snap.ts[at].tolist(), snap.values[at].tolist(), strict=True
        ):
            name = snap.names[i]
            used += 1
            row = ports.get(key)
            if row is None:
                row = ports[key] = {
                    "gpu": gpu,
                    "ts": 0.0,
                    "tx": None,
                    "rx": None,
                    "rate": None,
                    "errors": None,
                    "up": None,
                    "err_parts": {},
                }
            row["ts"] = max(row["ts"], t)
            if name in (IB_TX, IB_RX):
                d = self._counters.update((*key, name), t, v)
                if d.reason:
                    skipped.append(f"{self.source}: {key[0]} {key[2]} {name}: {d.reason}")
                if d.delta is not None:
                    row["tx" if name == IB_TX else "rx"] = d.delta / d.dt
            elif name in NVLINK_TX or name in NVLINK_RX:
                row["tx" if name in NVLINK_TX else "rx"] = v
            elif name == IB_RATE:
                row["rate"] = v
            elif name == IB_STATE:
                row["up"] = v == 4 if row["up"] is None else (row["up"] and v == 4)
            elif name == IB_PHYS:
                row["up"] = v == 5 if row["up"] is None else (row["up"] and v == 5)
            else:  # error counters: errors in this interval
                d = self._counters.update((*key, name), t, v)
                if d.reason:
                    skipped.append(f"{self.source}: {key[0]} {key[2]} {name}: {d.reason}")
                row["err_parts"][name] = d.delta
        if snap.latest_ts is not None:
            self._counters.prune(snap.latest_ts)
            if cols is not None:
                stale = snap.latest_ts - cols.prev_t > STALE_S  # as CounterTracker.prune
                cols.prev_t[stale] = np.nan
                cols.prev_v[stale] = np.nan
        if cols is not None and snap.layout is None:  # this plan is not reused: baselines back
            cols.save(self._counters)
            plan.ib_cols = None
        if not ports:
            return FabricResult([], skipped, 0, used, dropped)
        keys = list(ports)
        rows = [ports[k] for k in keys]
        errors = []
        for r in rows:
            if "errors_sum" in r:  # from columns
                errors.append(r["errors_sum"])
                continue
            parts = r["err_parts"]
            # NULL when any part has no delta this time (first sight, reset)
            errors.append(
                None if not parts or any(v is None for v in parts.values()) else sum(parts.values())
            )
        checked = {
            c: _bounded([r[k] for r in rows], RATE_MAX)
            for c, k in (
                ("tx_bytes_per_s", "tx"),
                ("rx_bytes_per_s", "rx"),
                ("line_rate_bytes_per_s", "rate"),
            )
        }
        checked["errors"] = _bounded(errors, ERRORS_MAX)
        wild = {c: int(w.sum()) for c, (_, w) in checked.items() if w.any()}
        if wild:
            c = next(iter(wild))
            host, _, port = keys[int(np.flatnonzero(checked[c][1])[0])]
            skipped.append(
                f"{self.source}: {sum(wild.values())} link values negative, not finite or "
                f"beyond {RATE_MAX:g} B/s ({ERRORS_MAX} errors), stored as NULL; the first: "
                f"{host} {port} {c}"
            )
        batch = make_batch(
            "link_samples",
            {
                "ts": [_ts(r["ts"]) for r in rows],
                "host": [k[0] for k in keys],
                "kind": [k[1] for k in keys],
                "port": [k[2] for k in keys],
                "gpu_uuid": [r["gpu"] for r in rows],
                **{c: _nullable(a) for c, (a, _) in checked.items() if c != "errors"},
                "errors": _nullable(checked["errors"][0], np.int64),
                "link_up": [r["up"] for r in rows],
                "source": [self.source] * len(rows),
            },
        )
        return FabricResult(
            [batch, *self._hosts(keys, rows), *self._link_events(keys, rows)],
            skipped,
            len(rows),
            used,
            dropped,
        )

    def _ib_rows(self, c: _IbColumns, snap: Snapshot, skipped: list[str]) -> list[dict]:
        """Each IB/RoCE port's row from its samples, as the one-at-a-time loop makes it."""
        t, v = snap.ts[c.idx], snap.values[c.idx]
        n = len(c.keys)
        ts = np.zeros(n)
        np.maximum.at(ts, c.row, t)
        # counters: CounterTracker.update, for every counter sample at once
        tc, vc = t[c.counter], v[c.counter]
        first = np.isnan(c.prev_t)
        dt = tc - c.prev_t
        adv = ~first & (dt > 0)
        reset = adv & (vc < c.prev_v)
        with np.errstate(over="ignore"):  # 1e308 - -1e308: inf, out of range (_bounded)
            delta = np.where(adv & ~reset, vc - c.prev_v, np.nan)
        for k in np.flatnonzero(reset).tolist():
            host, _, port, name = c.counter_keys[k]
            skipped.append(
                f"{self.source}: {host} {port} {name}: counter went backwards "
                f"({c.prev_v[k]:g} -> {vc[k]:g}): reset, no rate"
            )
        store = first | adv
        c.prev_t[store] = tc[store]
        c.prev_v[store] = vc[store]
        kind, row = c.kind[c.counter], c.row[c.counter]
        tx, rx, rate = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        m = (kind == _TX) & ~np.isnan(delta)
        tx[row[m]] = delta[m] / dt[m]
        m = (kind == _RX) & ~np.isnan(delta)
        rx[row[m]] = delta[m] / dt[m]
        err = kind == _ERR
        parts = np.bincount(row[err], minlength=n)
        missing = np.bincount(row[err & np.isnan(delta)], minlength=n)
        err_sum = np.zeros(n)
        ok = err & ~np.isnan(delta)
        with np.errstate(over="ignore"):
            np.add.at(err_sum, row[ok], delta[ok])
        m = c.kind == _RATE
        rate[c.row[m]] = v[m]
        # link up: every state sample says ACTIVE (4) and every physical one LinkUp (5)
        st = (c.kind == _STATE) | (c.kind == _PHYS)
        says_up = np.where(c.kind[st] == _STATE, v[st] == 4, v[st] == 5)
        seen = np.bincount(c.row[st], minlength=n)
        down = np.bincount(c.row[st][~says_up], minlength=n)
        out = []
        for ts_r, tx_r, rx_r, rate_r, p, miss, e, s_, d_ in zip(
            ts.tolist(),
            tx.tolist(),
            rx.tolist(),
            rate.tolist(),
            parts.tolist(),
            missing.tolist(),
            err_sum.tolist(),
            seen.tolist(),
            down.tolist(),
            strict=True,
        ):
            out.append(
                {
                    "gpu": None,
                    "ts": ts_r,
                    "tx": None if tx_r != tx_r else tx_r,
                    "rx": None if rx_r != rx_r else rx_r,
                    "rate": None if rate_r != rate_r else rate_r,
                    "up": None if not s_ else d_ == 0,
                    "errors_sum": None if not p or miss else e,
                }
            )
        return out

    @staticmethod
    def _hosts(keys: list[tuple[str, str, str]], rows: list[dict]) -> list[Batch]:
        """A `hosts` row per host seen (newest sample time), for the staleness rule."""
        newest: dict[str, float] = {}
        for k, r in zip(keys, rows, strict=True):
            newest[k[0]] = max(newest.get(k[0], 0.0), r["ts"])
        hosts = sorted(newest)
        seen = [_ts(newest[h]) for h in hosts]
        return [make_batch("hosts", {"host": hosts, "last_seen": seen, "first_seen": seen})]

    def _link_events(self, keys: list[tuple[str, str, str]], rows: list[dict]) -> list[Batch]:
        """An `events` row (kind "link") when a port goes down or comes back up."""
        ev = []
        for k, r in zip(keys, rows, strict=True):
            up = r["up"]
            if up is None:
                continue
            before = self._up.get(k)
            self._up[k] = up
            if before is not None and before != up:
                ev.append((_ts(r["ts"]), k[0], r["gpu"], f"{k[2]}: link {'up' if up else 'down'}"))
        if not ev:
            return []
        c = list(zip(*ev, strict=True))
        n = len(ev)
        return [
            make_batch(
                "events",
                {
                    "ts": c[0],
                    "host": c[1],
                    "gpu_uuid": c[2],
                    "kind": ["link"] * n,
                    "code": [None] * n,
                    "detail": c[3],
                    "source": [self.source] * n,
                },
            )
        ]
