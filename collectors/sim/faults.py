"""Injected faults: what goes wrong in the simulated fleet, where and when.

A fault is active on [start_s, start_s + duration_s) after the model's start,
repeating every `period_s` when the schedule has one (the demo repeats hourly
so a long-running demo keeps showing trouble). Alert scenario tests build
their own schedules; `faults=()` gives the healthy baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from collectors.sim.topology import Fleet

FAULT_KINDS = (
    "xid79",  # GPU falls off the bus: Xid 79, then no samples from that GPU
    "thermal",  # HW thermal slowdown: hot, clocks down, throttle reasons set
    "ecc_dbe",  # uncorrectable ECC error: Xid 48, DBE counter increments
    "nvlink_crc",  # NVLink CRC error burst on one GPU's links
    "ib_link_down",  # an InfiniBand port goes down
    "host_silent",  # a host stops reporting anything
    "traffic_surge",  # an endpoint's traffic saturates its GPUs; latency climbs
    "idle_allocation",  # a tenant's allocated GPUs sit idle (job ended, still paid for)
)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    target: str  # gpu "host:index", host name, link "host:port", endpoint or tenant name
    start_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.duration_s <= 0:
            raise ValueError(f"fault {self.kind} on {self.target}: duration_s must be > 0")


# The demo's schedule: a fault starts every 5 s in the first 40 s, so a short
# look already shows trouble; the schedule repeats every hour.
DEFAULT_FAULTS = (
    Fault("thermal", "hgx-05-n2:3", 5, 900),
    Fault("nvlink_crc", "nvl72-01-t05:nvlink-gpu2", 10, 300),
    Fault("xid79", "nvl72-02-t03:1", 15, 1200),
    Fault("host_silent", "hgx-04-n3", 20, 600),
    Fault("traffic_surge", "quanta-risk", 25, 900),
    Fault("idle_allocation", "internal-eval", 30, 1500),
    Fault("ecc_dbe", "hgx-03-n4:6", 35, 600),
    Fault("ib_link_down", "hgx-04-n1:mlx5_3/1", 40, 300),
)
DEFAULT_PERIOD_S = 3600.0

# A fixed schedule for tests and pictures, independent of the demo's (which
# may change): every fault has started by 240 s and all are active at 295 s.
REFERENCE_FAULTS = (
    Fault("thermal", "hgx-05-n2:3", 20, 900),
    Fault("nvlink_crc", "nvl72-01-t05:nvlink-gpu2", 40, 300),
    Fault("xid79", "nvl72-02-t03:1", 60, 1200),
    Fault("host_silent", "hgx-04-n3", 90, 600),
    Fault("traffic_surge", "quanta-risk", 120, 900),
    Fault("idle_allocation", "internal-eval", 150, 1500),
    Fault("ecc_dbe", "hgx-03-n4:6", 200, 600),
    Fault("ib_link_down", "hgx-04-n1:mlx5_3/1", 240, 300),
)


@dataclass(frozen=True, slots=True)
class ResolvedFault:
    """A fault with its target resolved to array indices in the fleet."""

    fault: Fault
    index: int  # gpu, host, link, endpoint or tenant index, by kind

    def active(self, t_rel: float, period_s: float | None) -> bool:
        if period_s:
            t_rel = t_rel % period_s
        return self.fault.start_s <= t_rel < self.fault.start_s + self.fault.duration_s

    def started_between(self, a_rel: float, b_rel: float, period_s: float | None) -> list[float]:
        """Offsets (relative to model start) at which this fault starts in (a_rel, b_rel]."""
        s = self.fault.start_s
        if not period_s:
            return [s] if a_rel < s <= b_rel else []
        k0 = int((a_rel - s) // period_s) + 1
        out = []
        k = max(k0, 0)
        while s + k * period_s <= b_rel:
            out.append(s + k * period_s)
            k += 1
        return out


def resolve(fleet: Fleet, faults: tuple[Fault, ...]) -> list[ResolvedFault]:
    """Map each fault's target to an index; faults whose target the fleet lacks are errors."""
    host_idx = {h: i for i, h in enumerate(fleet.host)}
    out = []
    for f in faults:
        try:
            if f.kind in ("xid79", "thermal", "ecc_dbe"):
                host, _, index = f.target.rpartition(":")
                h = host_idx[host]
                idx = next(
                    g
                    for g in range(fleet.n_gpus)
                    if fleet.gpu_host_idx[g] == h and fleet.gpu_index[g] == int(index)
                )
            elif f.kind in ("nvlink_crc", "ib_link_down"):
                host, _, port = f.target.partition(":")
                h = host_idx[host]
                idx = next(
                    i
                    for i in range(len(fleet.link_port))
                    if fleet.link_host_idx[i] == h and fleet.link_port[i] == port
                )
            elif f.kind == "host_silent":
                idx = host_idx[f.target]
            elif f.kind == "traffic_surge":
                idx = fleet.endpoint_index(f.target)
            else:
                idx = fleet.tenant_index(f.target)
        except (KeyError, ValueError, StopIteration) as exc:
            raise ValueError(f"fault {f.kind}: target {f.target!r} is not in the fleet") from exc
        out.append(ResolvedFault(f, idx))
    return out
