"""Operator knowledge applied to every batch before it is written, whatever its source:
host placement (collectors/topology.py) and contracted tenancy with latency targets
(collectors/contracts.py). Built from the daemon config's `[topology]`, `[tenancy]`
and `[latency_targets]` sections; docs/config.md lists their keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from collectors.contracts import (
    ContractsError,
    Tenancy,
    load_assignments,
    parse_latency_targets,
)
from collectors.options import OptionsError, parse_options
from collectors.topology import Topology, TopologyError, build_topology
from storage.batch import Batch, make_batch
from storage.store import Store


@dataclass(frozen=True)
class TopologyOptions:
    file: str = ""  # topology file, .toml or .csv, relative to the config's folder
    host_pattern: str = ""  # regex with named groups cluster, rack, slot, nvlink_domain, model


@dataclass(frozen=True)
class TenancyOptions:
    assignments: str = ""  # assignments file, .toml or .csv, relative to the config's folder


@dataclass
class Enrichment:
    topology: Topology = field(default_factory=Topology)
    tenancy: Tenancy = field(default_factory=Tenancy)

    @property
    def empty(self) -> bool:
        return self.topology.empty and self.tenancy.empty

    def start(
        self, store: Store, guessing: Sequence[str] = (), now: datetime | None = None
    ) -> list[Batch]:
        """Batches that bring what is already stored up to date with the config, and close
        the assignments that the `guessing` sources (by name) left open when the last run
        stopped: those sources re-open them from their next reports."""
        cur = store.cursor()
        try:
            stale = (
                cur.execute(
                    "SELECT tenant, gpu_uuid, slice_id, valid_from, source FROM assignments "
                    "WHERE valid_to IS NULL AND list_contains($names, source)",
                    {"names": list(guessing)},
                ).to_arrow_table()
                if guessing
                else None
            )
            hosts = cur.execute("SELECT host FROM hosts").to_arrow_table()
            gpus = cur.execute(
                "SELECT host, gpu_index, gpu_uuid FROM gpus WHERE gpu_index IS NOT NULL"
            ).fetchall()
            endpoints = cur.execute("SELECT * FROM endpoints").to_arrow_table()
        finally:
            cur.close()
        out = []
        if stale is not None and stale.num_rows:
            until = now or datetime.now(UTC).replace(tzinfo=None)
            out.append(
                make_batch(
                    "assignments",
                    {
                        **{c: stale.column(c) for c in stale.column_names},
                        "valid_to": pa.array([until] * stale.num_rows, pa.timestamp("us")),
                    },
                )
            )
        if hosts.num_rows and not self.topology.empty:
            out.append(self.topology.place(make_batch("hosts", {"host": hosts.column("host")})))
        out += self.tenancy.first_batches(
            {(h, i): u for h, i, u in gpus}, endpoints if endpoints.num_rows else None
        )
        return out

    def apply(self, batches: list[Batch]) -> list[Batch]:
        if self.empty:
            return batches
        return [self.topology.place(b) for b in self.tenancy.enrich(batches)]


def build_enrichment(
    topology: Mapping[str, Any] | None,
    tenancy: Mapping[str, Any] | None,
    latency_targets: Mapping[str, Any] | None,
    where: str,
    base_dir: Path | None = None,
) -> Enrichment:
    """The three config sections -> an Enrichment; every error is one OptionsError line."""
    try:
        t = parse_options(TopologyOptions, topology or {}, f"{where} [topology]")
        n = parse_options(TenancyOptions, tenancy or {}, f"{where} [tenancy]")
        topo = build_topology(t.file, t.host_pattern, f"{where} [topology]", base_dir)
        contracts, tenants = [], {}
        if n.assignments:
            p = Path(n.assignments).expanduser()
            contracts, tenants = load_assignments(
                p if p.is_absolute() or base_dir is None else base_dir / p
            )
        targets = parse_latency_targets(latency_targets, f"{where} [latency_targets]")
    except (TopologyError, ContractsError) as exc:
        raise OptionsError(str(exc)) from None
    return Enrichment(topo, Tenancy(contracts, tenants, targets))


__all__ = ["Enrichment", "TenancyOptions", "TopologyOptions", "build_enrichment"]
