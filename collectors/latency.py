"""Inference-server latency histograms -> p50/p99 per endpoint and model.

vLLM, NVIDIA Dynamo's frontend and Triton publish cumulative histograms. The
p50/p99 of an interval come from the bucket *deltas* between two gathers
(what was observed in between), interpolated inside the bucket as Prometheus'
histogram_quantile does. Deltas of every series of one endpoint+model (several
engines, hosts or pods) are summed before the quantile: histograms add,
quantiles do not.

Endpoint: the `service` label (configurable), else `job`, else the model.
Tenant: a configured endpoint -> tenant mapping, else the Kubernetes
`namespace` (`exported_namespace` first) of the serving pod (through the
namespace mapping).

Names across versions: vLLM before 0.10 publishes inter-token latency only as
`vllm:time_per_output_token_seconds`; it is read as ITL when
`vllm:inter_token_latency_seconds` is absent for that endpoint and model (when
both exist, as in 0.9, the old one is left out and counted, never added twice).
Ray Serve's LLM deployments publish vLLM's families as `ray_vllm:*`: read as `vllm:*`.

Every endpoint+model seen becomes an `endpoints` row (endpoint, tenant, model)
and its tenant a `tenants` row, written when they change; latency targets are
never written here (config owns them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from collectors.promtext.counters import HistogramTracker, histogram_quantile
from collectors.promtext.labels import series_key
from collectors.promtext.series import Snapshot
from storage.batch import Batch, make_batch

# histogram family -> (quantity, factor to ms, server, model label)
FAMILIES: dict[str, tuple[str, float, str, str]] = {
    "vllm:inter_token_latency_seconds": ("itl", 1000.0, "vllm", "model_name"),
    "vllm:time_to_first_token_seconds": ("ttft", 1000.0, "vllm", "model_name"),
    "vllm:e2e_request_latency_seconds": ("e2e", 1000.0, "vllm", "model_name"),
    "dynamo_frontend_inter_token_latency_seconds": ("itl", 1000.0, "dynamo", "model"),
    "dynamo_frontend_time_to_first_token_seconds": ("ttft", 1000.0, "dynamo", "model"),
    "dynamo_frontend_request_duration_seconds": ("e2e", 1000.0, "dynamo", "model"),
    "nv_inference_first_response_histogram_ms": ("ttft", 1.0, "triton", "model"),
    # vLLM < 0.10: ITL under its old name (used only where the new one is absent)
    "vllm:time_per_output_token_seconds": ("itl", 1000.0, "vllm", "model_name"),
}
OLD_ITL = "vllm:time_per_output_token_seconds"
NEW_ITL = "vllm:inter_token_latency_seconds"
_BUCKETS = {f + "_bucket": f for f in FAMILIES}
# Ray Serve LLM: vLLM's families under the `ray_vllm:` prefix
_BUCKETS |= {"ray_" + f + "_bucket": f for f in FAMILIES if f.startswith("vllm:")}
QUANTITIES = ("itl", "ttft", "e2e")
_VALUES = [f"{q}_p{p}_ms" for q in QUANTITIES for p in (50, 99)] + ["requests_per_s"]


def is_latency_bucket(name: str) -> bool:
    return name in _BUCKETS


@dataclass
class LatencyRules:
    endpoint_label: str = "service"
    tenant_by_endpoint: Mapping[str, str] = field(default_factory=dict)
    tenant_by_namespace: Mapping[str, str] = field(default_factory=dict)


@dataclass
class LatencyResult:
    batches: list[Batch]
    skipped: list[str]
    endpoints: int = 0
    used: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


class LatencyMapper:
    def __init__(self, source: str, rules: LatencyRules | None = None):
        self.source = source
        self.rules = rules or LatencyRules()
        self._hist = HistogramTracker()
        self._described: dict[str, tuple[str | None, str | None]] = {}  # endpoint -> row
        self._plan: tuple[dict[tuple, dict], set, int] | None = None
        self._plan_key: object = None

    def reset(self) -> None:
        self._hist = HistogramTracker()

    def _endpoint(self, labels: Mapping[str, str], model: str) -> str:
        return labels.get(self.rules.endpoint_label) or labels.get("job") or model

    def _plan_for(self, snap: Snapshot) -> tuple[dict[tuple, dict], set, int]:
        """Histogram series grouped (names and labels only): reused while the layout holds."""
        if snap.layout is not None and self._plan is not None and snap.layout == self._plan_key:
            return self._plan
        members: dict[tuple, dict] = {}
        used = 0
        for i, name in enumerate(snap.names):
            fam = _BUCKETS.get(name)
            if fam is None:
                continue
            labels = snap.labels[i]
            try:
                le = float(labels.get("le", "nan"))
            except ValueError:
                le = float("nan")
            key = series_key(fam, labels, drop=("le",))
            g = members.get(key)
            if g is None:
                g = members[key] = {"fam": fam, "labels": labels, "le": [], "idx": []}
            g["le"].append(le)
            g["idx"].append(i)
            used += 1
        for g in members.values():
            model_label = FAMILIES[g["fam"]][3]
            g["model"] = g["labels"].get(model_label) or g["labels"].get("model") or ""
            g["endpoint"] = self._endpoint(g["labels"], g["model"])
            g["le"] = np.asarray(g["le"])
            g["idx"] = np.asarray(g["idx"], dtype=np.int64)
        has_new_itl = {(g["endpoint"], g["model"]) for g in members.values() if g["fam"] == NEW_ITL}
        self._plan, self._plan_key = (members, has_new_itl, used), snap.layout
        return self._plan

    def map(self, snap: Snapshot) -> LatencyResult:
        members, has_new_itl, used = self._plan_for(snap)
        groups: dict[tuple, dict] = {}
        for key, m in members.items():
            groups[key] = {
                **m,
                "cum": snap.values[m["idx"]],
                "ts": max(0.0, float(snap.ts[m["idx"]].max())),
            }
        skipped: list[str] = []
        dropped: dict[str, int] = {}
        # (endpoint, model) -> quantity -> [le, summed cumulative deltas, dt]
        agg: dict[tuple[str, str], dict] = {}
        for key, g in groups.items():
            quantity, scale, server, model_label = FAMILIES[g["fam"]]
            labels = g["labels"]
            model, endpoint = g["model"], g["endpoint"]
            if g["fam"] == OLD_ITL and (endpoint, model) in has_new_itl:
                why = f"{OLD_ITL}: {NEW_ITL} present, the old name is not counted twice"
                dropped[why] = dropped.get(why, 0) + len(g["le"])
                continue
            bounds = g["le"]
            if np.isnan(bounds).any():
                skipped.append(
                    f"{self.source}: {g['fam']} ({endpoint}): bucket with a bad `le`, skipped"
                )
                continue
            d = self._hist.update(key, g["ts"], bounds, g["cum"])
            if d.reason:
                skipped.append(f"{self.source}: {g['fam']} ({endpoint}, {model}): {d.reason}")
            e = agg.setdefault(
                (endpoint, model), {"tenant": self._tenant(endpoint, labels), "ts": 0.0, "q": {}}
            )
            e["ts"] = max(e["ts"], g["ts"])
            if d.counts is None or d.le is None:
                continue
            cur = e["q"].get(quantity)
            if cur is None:
                e["q"][quantity] = [d.le * scale, d.counts.copy(), d.dt]
            elif len(cur[0]) == len(d.le) and np.all(cur[0] == d.le * scale):
                cur[1] += d.counts
                cur[2] = max(cur[2], d.dt)
            else:
                skipped.append(
                    f"{self.source}: {g['fam']} ({endpoint}): bucket layouts differ "
                    "between series of one endpoint; one series left out"
                )
        if snap.latest_ts is not None:
            self._hist.prune(snap.latest_ts)
        rows = []
        for (endpoint, model), e in agg.items():
            if not e["q"]:
                continue
            row = {
                "endpoint": endpoint,
                "model": model or None,
                "tenant": e["tenant"],
                "ts": e["ts"],
            }
            for q in QUANTITIES:
                h = e["q"].get(q)
                row[f"{q}_p50_ms"] = histogram_quantile(0.5, h[0], h[1]) if h else None
                row[f"{q}_p99_ms"] = histogram_quantile(0.99, h[0], h[1]) if h else None
            basis = next(
                (e["q"][q] for q in ("e2e", "ttft") if q in e["q"]), None
            )  # one per request
            row["requests_per_s"] = (
                float(basis[1][-1]) / basis[2] if basis and basis[2] > 0 else None
            )
            # bounds or counts near 1e308 overflow to inf, negative bounds give negative
            # latencies: no reading, not a value
            wild = [k for k in _VALUES if row[k] is not None and not 0 <= row[k] < np.inf]
            for k in wild:
                row[k] = None
            if wild:
                skipped.append(
                    f"{self.source}: {endpoint} ({model}): {', '.join(wild)} negative or "
                    "not finite (wild buckets or counts), stored as NULL"
                )
            rows.append(row)
        batches = []
        if rows:
            cols = {k: [r[k] for r in rows] for k in rows[0]}
            cols["ts"] = [datetime.fromtimestamp(t, UTC).replace(tzinfo=None) for t in cols["ts"]]
            cols["source"] = [self.source] * len(rows)
            batches.append(make_batch("latency_samples", cols))
        batches += self._describe(agg)
        return LatencyResult(batches, skipped, len(rows), used, dropped)

    def _describe(self, agg: dict[tuple[str, str], dict]) -> list[Batch]:
        """`endpoints` (endpoint, tenant, model) and `tenants` rows for servers whose
        row changed; target columns are left to config (absent here, so untouched)."""
        found: dict[str, tuple[str | None, set[str]]] = {}
        for (endpoint, model), e in agg.items():
            tenant, models = found.setdefault(endpoint, (e["tenant"], set()))
            if model:
                models.add(model)
            if tenant is None and e["tenant"]:
                found[endpoint] = (e["tenant"], models)
        changed = {}
        for endpoint, (tenant, models) in found.items():
            row = (tenant, ", ".join(sorted(models)) or None)
            if self._described.get(endpoint) != row:
                self._described[endpoint] = row
                changed[endpoint] = row
        if not changed:
            return []
        eps = sorted(changed)
        out = [
            make_batch(
                "endpoints",
                {
                    "endpoint": eps,
                    "tenant": [changed[e][0] for e in eps],
                    "model": [changed[e][1] for e in eps],
                },
            )
        ]
        tenants = sorted({t for t, _ in changed.values() if t})
        if tenants:
            out.append(make_batch("tenants", {"tenant": tenants}))
        return out

    def _tenant(self, endpoint: str, labels: Mapping[str, str]) -> str | None:
        if endpoint in self.rules.tenant_by_endpoint:
            return self.rules.tenant_by_endpoint[endpoint]
        ns = labels.get("exported_namespace") or labels.get("namespace")
        return self.rules.tenant_by_namespace.get(ns, ns) if ns else None
