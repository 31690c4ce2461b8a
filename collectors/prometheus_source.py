"""Pull source "prometheus": dcgm-exporter, node_exporter and inference-server
series read from a Prometheus server over its HTTP API (`collectors/prom_api.py`).

Each gather runs one instant query per selector, as a *range selector* over
the last `window_s` (`{__name__=~"DCGM_FI_.*"}[30s]`): the answer carries the
raw samples with the times Prometheus scraped them, so counter rates and
histogram deltas use real sample times, not our query times. The newest
sample of each series is kept.

On the first gather, and after a gap (no successful gather for 3 intervals),
a range query (step = interval_s, at most `backfill_s` back) fills the missing
history through the same mappers, oldest step first. Range-query values carry
step times, so counter baselines are reset after a backfill: the first live
interval after it has no rates (NULL), rather than rates over a wrong interval.

Each gather also reads Prometheus' active targets: one that is down (`up ==
0`: unreachable, or a text Prometheus could not parse) becomes a failed
`collector_runs` row naming job/instance and Prometheus' lastError.

Every request has one deadline (`timeout_s`: connect, headers and body, whatever
the server does; `collectors/prom_api.py`), and its JSON is decoded and mapped
in the source's own thread, never on the event loop nor in the executor the
store writer uses.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collectors.base import Gathered, register
from collectors.options import parse_options
from collectors.prom_api import PromApi
from collectors.promtext.pipeline import TelemetryOptions, TelemetryPipeline
from collectors.promtext.series import (
    MAX_AHEAD_S,
    MAX_LABELS,
    Snapshot,
    from_prometheus_result,
    matrix_steps,
    merge,
)
from collectors.promtext.target_runs import failure_runs

DEFAULT_SELECTORS = [
    # dcgm-exporter: classic and DCGM 4.6 names share the prefix
    '{__name__=~"DCGM_FI_.*"}',
    '{__name__=~"node_infiniband_.*"}',
    '{__name__=~"(vllm:|ray_vllm:|dynamo_frontend_|nv_inference_).*_bucket"}',
]
MAX_POINTS = 11000  # Prometheus refuses range queries with more points per series


@dataclass(frozen=True)
class PrometheusOptions(TelemetryOptions):
    """Config keys of a `kind = "prometheus"` source (plus the label-mapping keys)."""

    name: str = "prometheus"
    url: str = "http://127.0.0.1:9090"  # Prometheus base URL
    interval_s: float = 15.0  # seconds between gathers
    selectors: list[str] = field(default_factory=lambda: list(DEFAULT_SELECTORS))
    window_s: float = 0.0  # range-selector window; 0 = 2 x interval_s
    backfill_s: float = 300.0  # history fetched on start or after a gap; 0 = none
    headers: dict = field(default_factory=dict)  # e.g. {Authorization = "Bearer ..."}
    basic_auth_user: str = ""
    basic_auth_password: str = ""
    tls_verify: bool = True
    timeout_s: float = 10.0  # deadline per query: connect, headers and whole body
    max_body_bytes: int = 256 << 20  # a larger answer is refused (or cut) and the query fails
    max_labels: int = MAX_LABELS

    def __post_init__(self) -> None:
        if not (0 < self.interval_s < math.inf and 0 < self.timeout_s < math.inf):
            raise ValueError("interval_s and timeout_s must be finite and > 0")
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be > 0")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http(s)://..., got {self.url!r}")
        if self.backfill_s < 0 or self.window_s < 0:
            raise ValueError("backfill_s and window_s must be >= 0")


def _epoch(ts: datetime) -> float:
    return ts.timestamp() if ts.tzinfo else ts.replace(tzinfo=UTC).timestamp()


class PrometheusSource:
    def __init__(self, o: PrometheusOptions):
        self.name = o.name
        self.interval_s = o.interval_s
        self.o = o
        auth = (o.basic_auth_user, o.basic_auth_password) if o.basic_auth_user else None
        # No retries: the next gather is the retry.
        self.client = PromApi(
            o.url,
            headers={str(k): str(v) for k, v in o.headers.items()},
            auth=auth,
            tls_verify=o.tls_verify,
            timeout_s=o.timeout_s,
            max_body_bytes=o.max_body_bytes,
        )
        # JSON decoding and mapping: this source's own thread (never the event loop).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{o.name}-parse")
        self.pipeline = TelemetryPipeline(o.name, o)
        self._last_ok: float | None = None
        self.backfilled_steps = 0

    @property
    def window_s(self) -> float:
        return self.o.window_s or 2 * self.interval_s

    async def _instant(self, selector: str) -> list[dict]:
        return await self.client.query(f"{selector}[{int(max(self.window_s, 1))}s]", self._executor)

    async def _range(self, selector: str, start: float, end: float) -> list[dict]:
        return await self.client.query_range(
            selector, start, end, f"{self.interval_s:g}s", self._executor
        )

    async def _run_all(self, fn, *args) -> tuple[list[tuple[str, list[dict]]], list[str]]:
        results = await asyncio.gather(
            *(fn(sel, *args) for sel in self.o.selectors), return_exceptions=True
        )
        ok, failed = [], []
        for sel, r in zip(self.o.selectors, results, strict=True):
            if isinstance(r, BaseException):
                failed.append(f"{self.o.url}: query {sel} failed: {_one_line(r)}")
            else:
                ok.append((sel, r))
        if failed and not ok:
            raise RuntimeError(failed[0])
        return ok, failed

    async def gather(self, now: datetime) -> Gathered:
        t = _epoch(now)
        out = Gathered()
        if self.o.backfill_s > 0 and (
            self._last_ok is None or t - self._last_ok > 3 * self.interval_s
        ):
            out = await self.backfill(t)
        (ok, failed), down = await asyncio.gather(
            self._run_all(self._instant), self._down_targets()
        )
        g = await asyncio.get_running_loop().run_in_executor(self._executor, self._map, ok, t)
        self._last_ok = t
        at = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
        return Gathered(
            out.batches + g.batches + failure_runs(self.name, at, down),
            out.skipped + failed + g.skipped,
            g.dropped,
        )

    def _map(self, ok: list[tuple[str, list[dict]]], t: float) -> Gathered:
        snap = merge(
            [from_prometheus_result(r, f"{self.o.url} {sel}", self.o.max_labels) for sel, r in ok]
        )
        return self.pipeline.map(snap, t)

    async def _down_targets(self) -> list[tuple[str, str]]:
        """Targets Prometheus could not scrape (health down, i.e. `up == 0`), with its
        lastError (e.g. the exporter's text did not parse): (job/instance, reason)."""
        try:
            answer = await self.client.targets("active", self._executor)
        except Exception as exc:  # e.g. a managed Prometheus without the targets API
            return await self._up_zero(_one_line(exc))
        targets = answer.get("activeTargets", []) if isinstance(answer, dict) else answer
        out = []
        for tg in targets if isinstance(targets, list) else []:
            if not isinstance(tg, dict) or tg.get("health") != "down":
                continue
            lab = _labels(tg.get("labels"))
            name = f"{lab.get('job', '?')}/{lab.get('instance', tg.get('scrapeUrl', '?'))}"
            err = str(tg.get("lastError") or "no reason given")[:300]
            out.append((name, f"target {name} is down in Prometheus (up == 0): {err}"))
        return out

    async def _up_zero(self, why: str) -> list[tuple[str, str]]:
        """The same from `up == 0`, where the targets API is not served (no reason text)."""
        try:
            series = await self.client.query("up == 0", self._executor)
        except Exception as exc:
            return [(self.o.url, f"{self.o.url}: cannot tell down targets: {_one_line(exc)}")]
        out = []
        for sr in series if isinstance(series, list) else []:
            lab = _labels(sr.get("metric")) if isinstance(sr, dict) else {}
            name = f"{lab.get('job', '?')}/{lab.get('instance', '?')}"
            out.append(
                (
                    name,
                    f"target {name} is down in Prometheus (up == 0); "
                    f"no lastError (targets API: {why})",
                )
            )
        return out

    async def backfill(self, t: float) -> Gathered:
        """Range-query history since the last good gather (at most backfill_s) and map it."""
        start = (
            t - self.o.backfill_s
            if self._last_ok is None
            else max(self._last_ok, t - self.o.backfill_s)
        )
        start = max(start, t - self.interval_s * (MAX_POINTS - 1))
        end = t - self.interval_s  # the live gather covers the newest interval
        if end <= start:
            return Gathered()
        try:
            ok, failed = await self._run_all(self._range, start, end)
        except RuntimeError as exc:
            return Gathered([], [f"backfill skipped: {exc}"])
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._map_backfill, ok, failed, t)

    def _map_backfill(
        self, ok: list[tuple[str, list[dict]]], failed: list[str], t: float
    ) -> Gathered:
        per_step: dict[float, list[Snapshot]] = {}
        for sel, r in ok:
            for s in matrix_steps(r, f"{self.o.url} {sel} (backfill)", self.o.max_labels):
                per_step.setdefault(float(s.ts[0]) if len(s) else 0.0, []).append(s)
        out = Gathered([], list(failed))
        for step in sorted(per_step):
            # a step is the answer's time, not ours (its samples' and the mappers' `now`)
            if not 0 <= step <= t + MAX_AHEAD_S:
                out.skipped.append(
                    f"{self.o.url}: backfill step {step:.0f} is before 1970 or over "
                    f"{MAX_AHEAD_S:.0f} s ahead of now, skipped"
                )
                continue
            g = self.pipeline.map(merge(per_step[step]), step)
            out.batches += g.batches
            out.skipped += g.skipped
        self.backfilled_steps += len(per_step)
        # Backfilled samples carry step times; live ones carry sample times. A counter
        # delta across the two would divide by the wrong interval: start afresh.
        self.pipeline.reset_counters()
        return out

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _labels(raw: Any) -> dict:
    """A target's labels from an API answer: a dict, whatever the answer held."""
    return raw if isinstance(raw, dict) else {}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


@register("prometheus")
def _prometheus_from_config(options: Mapping[str, Any], where: str) -> PrometheusSource:
    return PrometheusSource(parse_options(PrometheusOptions, options, where))
