"""One snapshot through the DCGM, fabric and latency mappers -> Gathered.

Both pull sources ("prometheus" and "scrape") share this, so the same series
become the same rows whichever way they were fetched. The tenant, endpoint
and fabric options are one config section, `TelemetryOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collectors.base import Gathered
from collectors.dcgm_map import DEFAULT_EXPORTER_NAMESPACES, DcgmMapper, TenantRules
from collectors.fabric import FabricMapper, FabricRules
from collectors.latency import LatencyMapper, LatencyRules
from collectors.promtext.series import Snapshot, keep_times


@dataclass(frozen=True)
class TelemetryOptions:
    """Label-mapping keys shared by kinds "prometheus" and "scrape"."""

    tenant_by_namespace: dict = field(default_factory=dict)  # k8s namespace -> tenant
    tenant_by_target: dict = field(default_factory=dict)  # GPU UUID, slice id or host -> tenant
    tenant_by_endpoint: dict = field(default_factory=dict)  # inference endpoint -> tenant
    exporter_namespaces: list[str] = field(
        default_factory=lambda: list(DEFAULT_EXPORTER_NAMESPACES)
    )
    endpoint_label: str = "service"  # label naming an inference endpoint (then `job`, then model)
    link_kind_by_host: dict = field(
        default_factory=dict
    )  # host pattern -> "roce" / "efa" / "iwarp" (default: by device name, else ib)
    link_kind_by_device: dict = field(default_factory=dict)  # device pattern -> kind (wins)


class TelemetryPipeline:
    def __init__(self, source: str, o: TelemetryOptions | None = None):
        o = o or TelemetryOptions()
        self.dcgm = DcgmMapper(
            source,
            TenantRules(
                by_namespace=o.tenant_by_namespace,
                by_target=o.tenant_by_target,
                exporter_namespaces=tuple(o.exporter_namespaces),
            ),
        )
        self.fabric = FabricMapper(
            source,
            FabricRules(kind_by_host=o.link_kind_by_host, kind_by_device=o.link_kind_by_device),
        )
        self.latency = LatencyMapper(
            source,
            LatencyRules(
                endpoint_label=o.endpoint_label,
                tenant_by_endpoint=o.tenant_by_endpoint,
                tenant_by_namespace=o.tenant_by_namespace,
            ),
        )

    def reset_counters(self) -> None:
        """Forget counter and histogram baselines (after a backfill, whose times are
        query steps, not sample times: a delta across that seam would be wrong)."""
        self.fabric.reset()
        self.latency.reset()

    def map(self, snap: Snapshot, now: float) -> Gathered:
        snap = keep_times(snap, now)  # before any mapper: times become datetimes and last_seen
        d = self.dcgm.map(snap, now)
        f = self.fabric.map(snap)
        lat = self.latency.map(snap)
        dropped = dict(d.dropped)
        for part in (f.dropped, lat.dropped):
            for k, n in part.items():
                dropped[k] = dropped.get(k, 0) + n
        return Gathered(
            d.batches + f.batches + lat.batches,
            snap.skipped + d.skipped + f.skipped + lat.skipped,
            dropped,
        )
