"""Tenants from the agent's process lists: each process's `tenant_guess` (from its
cgroup: a Kubernetes namespace, a Slurm account, a systemd slice) becomes who holds
the GPU, or the MIG slice, it runs on.

Written the way dcgm-exporter's pod labels are (collectors/dcgm_map.py): an
assignment opens when a (GPU, slice) first shows a tenant's process, closes when a
later process list of that host no longer shows it, and is not repeated in between.
Where several tenants' processes share a GPU, the one using the most memory holds it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from collectors.assignments import Key, step_assignments
from collectors.nvml.report import Report
from storage.batch import Batch, make_batch

_TS = pa.timestamp("us")
SOURCE = "nvml"  # the `source` of what the agents' process lists say (as their samples)


class ProcTenancy:
    def __init__(self) -> None:
        # host -> (gpu_uuid, slice_id) -> (tenant, since epoch s, fraction)
        self._open: dict[str, dict[tuple[str, str | None], tuple[str, float, float]]] = {}
        self.rows: list[tuple[str, str, str | None, float, float, float | None]] = []

    def observe(self, r: Report) -> None:
        """One decoded report; only reports carrying a process list change anything."""
        proc = r.proc
        if proc is None:
            return
        guesses = proc.get("tenant_guess")
        uuids = r.gpu["uuid"]
        now: dict[tuple[str, str | None], tuple[str, int]] = {}
        if guesses:
            slices = proc.get("slice_id") or [None] * len(guesses)
            mem = proc.get("used_mem_bytes") or [0] * len(guesses)
            for gpu, sl, tenant, m in zip(proc["gpu"], slices, guesses, mem, strict=True):
                if not tenant:
                    continue
                key = (uuids[gpu], sl)
                if key not in now or (m or 0) > now[key][1]:
                    now[key] = (tenant, m or 0)
        fractions = self._fractions(r)
        seen: dict[Key, tuple[str, float]] = {}
        unsized: set[Key] = set()  # a slice whose size the report does not give: not guessed
        for key, (tenant, _) in now.items():
            frac = 1.0 if key[1] is None else fractions.get(key[1])
            if frac is None:
                unsized.add(key)
            else:
                seen[key] = (tenant, frac)
        held = self._open.setdefault(r.host, {})
        self.rows += step_assignments(held, seen, r.ts, lambda key: key not in unsized)

    @staticmethod
    def _fractions(r: Report) -> dict[str, float]:
        """slice id -> share of its GPU, from the memory sizes in the same report."""
        sl = r.slice
        if not sl or "mem_total_bytes" not in sl or "mem_total_bytes" not in r.gpu:
            return {}
        totals = r.gpu["mem_total_bytes"]
        out = {}
        for sid, gpu, mem in zip(sl["id"], sl["gpu"], sl["mem_total_bytes"], strict=True):
            whole = totals[gpu]
            if mem and whole:
                out[sid] = min(round(mem / whole, 3), 1.0)
        return out

    def take(self, to_ts: Any) -> list[Batch]:
        """`tenants` and `assignments` batches for what changed since the last take."""
        rows, self.rows = self.rows, []
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
                    "slice_id": pa.array(cols[2], pa.string()),
                    "fraction": cols[3],
                    "valid_from": pa.array([to_ts(t) for t in cols[4]], _TS),
                    "valid_to": pa.array([None if t is None else to_ts(t) for t in cols[5]], _TS),
                    "source": [SOURCE] * len(rows),
                },
            ),
        ]
