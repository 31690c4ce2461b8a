"""Pull source "scrape": read `/metrics` of dcgm-exporter, node_exporter and
inference servers directly, for fleets without Prometheus.

Fetching (`fetch`, HTTP only) is separate from parsing (`parse_exposition`),
so parsing is tested on captured files. Targets are fetched concurrently; a
target that times out, answers an error, HTML or a truncated body costs only
its own samples, with the reason in `Gathered.skipped`. Each target may add
labels, as a Prometheus static config does: `instance` names the host for
node_exporter series (which carry no hostname), `service`/`namespace` name an
inference endpoint and its tenant. A target that fails or yields nothing
parsable is also a `collector_runs` row of its own (collectors.promtext.target_runs).
"""

from __future__ import annotations

import asyncio
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collectors.base import Gathered, register
from collectors.options import OptionsError, parse_options
from collectors.promtext.parse import parse_exposition
from collectors.promtext.pipeline import TelemetryOptions, TelemetryPipeline
from collectors.promtext.series import MAX_LABELS, merge
from collectors.promtext.target_runs import failure_runs


@dataclass(frozen=True)
class ScrapeTarget:
    """One `[[sources.targets]]` entry."""

    url: str  # http(s)://host:port/metrics
    labels: dict = field(default_factory=dict)  # added where a series lacks them

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"url must be http(s)://..., got {self.url!r}")


@dataclass(frozen=True)
class ScrapeOptions(TelemetryOptions):
    """Config keys of a `kind = "scrape"` source (plus the label-mapping keys)."""

    name: str = "scrape"
    interval_s: float = 15.0  # seconds between scrapes
    targets: list[dict] = field(default_factory=list)  # [{url = "...", labels = {...}}]
    timeout_s: float = 5.0  # per target
    max_body_bytes: int = 64 << 20  # a larger body is cut and reported truncated
    max_labels: int = MAX_LABELS  # a series with more labels is skipped
    tls_verify: bool = True

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be > 0")


@dataclass(slots=True)
class Fetched:
    url: str
    text: str | None
    reason: str | None
    at: float


def fetch(url: str, timeout_s: float, max_bytes: int, verify: bool = True) -> Fetched:
    """GET one /metrics body; never raises: a failure is a reason."""
    at = time.time()
    ctx = None
    if url.startswith("https") and not verify:
        import ssl

        ctx = ssl._create_unverified_context()
    req = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=ctx) as resp:
            expected = resp.headers.get("Content-Length")
            try:
                body = resp.read(max_bytes + 1)
            except http.client.IncompleteRead as exc:
                body = exc.partial
    except TimeoutError:
        return Fetched(url, None, f"{url}: timed out after {timeout_s:g} s", at)
    except urllib.error.HTTPError as exc:
        return Fetched(url, None, f"{url}: HTTP {exc.code} {exc.reason}", at)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return Fetched(url, None, f"{url}: timed out after {timeout_s:g} s", at)
        return Fetched(url, None, f"{url}: cannot fetch: {reason}", at)
    except (http.client.HTTPException, ValueError) as exc:
        return Fetched(url, None, f"{url}: bad HTTP answer: {type(exc).__name__}: {exc}", at)
    text = body[:max_bytes].decode("utf-8", errors="replace")
    if len(body) > max_bytes:
        return Fetched(url, text, f"{url}: body over {max_bytes} bytes, cut", at)
    if expected and expected.isdigit() and len(body) < int(expected):
        # the connection dropped mid-body: parse what came (its partial last line is dropped)
        return Fetched(
            url, text, f"{url}: connection closed after {len(body)} of {expected} bytes", at
        )
    return Fetched(url, text, None, at)  # an HTML page is recognised by its body when parsed


class ScrapeSource:
    def __init__(self, o: ScrapeOptions, targets: list[ScrapeTarget]):
        self.name = o.name
        self.interval_s = o.interval_s
        self.o = o
        self.targets = targets
        self.pipeline = TelemetryPipeline(o.name, o)

    async def fetch_all(self) -> list[Fetched]:
        return list(
            await asyncio.gather(
                *(
                    asyncio.to_thread(
                        fetch, t.url, self.o.timeout_s, self.o.max_body_bytes, self.o.tls_verify
                    )
                    for t in self.targets
                )
            )
        )

    async def gather(self, now: datetime) -> Gathered:
        fetched = await self.fetch_all()
        snaps, skipped, failed = [], [], []
        for t, f in zip(self.targets, fetched, strict=True):
            if f.reason:
                skipped.append(f.reason)
            if f.text is None:
                failed.append((t.url, f"target {t.url} failed: {f.reason}"))
                continue
            netloc = urllib.parse.urlsplit(t.url).netloc
            labels = {"instance": netloc, **{str(k): str(v) for k, v in t.labels.items()}}
            snap = parse_exposition(
                f.text, t.url, now=f.at, extra_labels=labels, max_labels=self.o.max_labels
            )
            if not len(snap):  # HTML, empty, nothing parsable: a failure, not a quiet target
                why = "; ".join(snap.skipped[:2]) or "no samples"
                failed.append((t.url, f"target {t.url} unparsable: {why}"))
            snaps.append(snap)
        if fetched and all(f.text is None for f in fetched):
            raise RuntimeError(f"scrape: no target answered ({skipped[0]})")
        g = self.pipeline.map(merge(snaps), _epoch(now))
        g.skipped[:0] = skipped
        g.batches += failure_runs(self.name, _naive(now), failed)
        return g

    async def close(self) -> None:
        return None


def _epoch(ts: datetime) -> float:
    return ts.timestamp() if ts.tzinfo else ts.replace(tzinfo=UTC).timestamp()


def _naive(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


@register("scrape")
def _scrape_from_config(options: Mapping[str, Any], where: str) -> ScrapeSource:
    o = parse_options(ScrapeOptions, options, where)
    if not o.targets:
        raise OptionsError(f"{where}: key 'targets' needs at least one {{url = ...}}")
    targets = [
        parse_options(ScrapeTarget, t, f"{where} targets[{i}]") for i, t in enumerate(o.targets)
    ]
    return ScrapeSource(o, targets)
