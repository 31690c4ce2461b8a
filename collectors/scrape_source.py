"""Pull source "scrape": read `/metrics` of dcgm-exporter, node_exporter and
inference servers directly, for fleets without Prometheus.

Fetching (`collectors.http_get`, on the event loop, keep-alive connections
per server) is separate from parsing (`parse_exposition`, or a target's last
layout when its series have not changed: `collectors.promtext.layout`), so
parsing is tested on captured files. Targets are
fetched concurrently, each under one deadline (`timeout_s`: connect, headers
and body, whatever the peer does: a server trickling a byte every few seconds
is cut at the deadline); each body is parsed as soon as it is in, in the
source's own executor (a thread, or `workers` processes), never on the event
loop nor in the executor the store writer uses. A target that misses its
deadline, answers an error, HTML, a body over `max_body_bytes` (refused from
its Content-Length before reading, else cut while streaming) or a truncated
body costs only its own samples, with the reason (naming the target) in
`Gathered.skipped`, hence in `collector_runs.error`. Each target may add
labels, as a Prometheus static config does: `instance` names the host for
node_exporter series (which carry no hostname), `service`/`namespace` name an
inference endpoint and its tenant. A target that fails or yields nothing
parsable is also a `collector_runs` row of its own (collectors.promtext.target_runs).
"""

from __future__ import annotations

import asyncio
import gc
import math
import multiprocessing
import time
import urllib.parse
from collections.abc import Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collectors import http_get
from collectors.base import Gathered, register
from collectors.options import OptionsError, parse_options
from collectors.promtext.layout import Layout
from collectors.promtext.layout import learn as layout_learn
from collectors.promtext.layout import read as layout_read
from collectors.promtext.layout import read_many as layout_read_many
from collectors.promtext.parse import parse_exposition
from collectors.promtext.pipeline import TelemetryOptions, TelemetryPipeline
from collectors.promtext.series import MAX_LABELS, Snapshot, merge
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
    timeout_s: float = 5.0  # deadline per target: connect, headers and whole body
    max_body_bytes: int = 64 << 20  # a larger body is cut and reported truncated
    max_labels: int = MAX_LABELS  # a series with more labels is skipped
    tls_verify: bool = True
    max_connections: int = 256  # targets fetched at once
    workers: int = 0  # parse in this many processes; 0: one thread of this process
    align_to_interval: bool = False  # gather just after multiples of interval_s (the first at once)

    def __post_init__(self) -> None:
        if not (0 < self.interval_s < math.inf and 0 < self.timeout_s < math.inf):
            raise ValueError("interval_s and timeout_s must be finite and > 0")
        if self.max_body_bytes <= 0 or self.max_connections <= 0 or self.workers < 0:
            raise ValueError("max_body_bytes and max_connections must be > 0, workers >= 0")


def parse_body(
    body: bytes,
    url: str,
    at: float,
    labels: dict[str, str],
    max_labels: int,
    layout: Layout | None = None,
    learn: bool = False,
) -> tuple[Snapshot, Layout | None]:
    """One fetched body -> (Snapshot, the layout to read the next body of this target with).

    Runs in the source's executor, never on the event loop. A body that fits
    `layout` (same series as last time) is read without parsing labels."""
    if layout is not None:
        snap = layout_read(body, layout, at)
        if snap is not None:
            return snap, layout
    snap = parse_exposition(
        body.decode("utf-8", errors="replace"),
        url,
        now=at,
        extra_labels=labels,
        max_labels=max_labels,
    )
    layout = layout_learn(body, snap, at) if learn else None
    if layout is not None:  # its series are the layout's: mappers may plan on it
        snap.layout = layout
    return snap, layout


def parse_bodies(
    items: list[tuple[bytes, str, float, dict[str, str], int, Layout | None, bool]],
) -> list[tuple[Snapshot, Layout | None]]:
    """Bodies that fit their target's layout are read together (one set of numpy passes
    for the batch); the others are parsed in full."""
    fast = layout_read_many([i[0] for i in items], [i[5] for i in items], [i[2] for i in items])
    return [
        (snap, item[5]) if snap is not None else parse_body(*item[:5], None, item[6])
        for snap, item in zip(fast, items, strict=True)
    ]


_PARSE_BATCH = 64  # bodies per executor hand-off at most
FREEZE_EVERY_S = 300.0  # learned layouts are frozen out of gc scans at most this often
_ACCEPT = {"Accept": "text/plain;version=0.0.4"}


class ScrapeSource:
    def __init__(self, o: ScrapeOptions, targets: list[ScrapeTarget]):
        self.name = o.name
        self.interval_s = o.interval_s
        self.align_to_interval = o.align_to_interval
        self.o = o
        self.targets = targets
        self.pipeline = TelemetryPipeline(o.name, o)
        self._labels = [
            {
                "instance": urllib.parse.urlsplit(t.url).netloc,
                **{str(k): str(v) for k, v in t.labels.items()},
            }
            for t in targets
        ]
        self._ssl = http_get.ssl_context(o.tls_verify)
        # keep-alive: a target's connection serves its next scrape (no connect per scrape)
        self._conns = http_get.Pool(max_idle_per_host=o.max_connections)
        # Each target's last clean layout (thread executor only: a process pool would
        # copy it both ways on every call, costing more than it saves).
        self._layouts: list[Layout | None] = [None] * len(targets)
        # Parsing and mapping run here, never on the event loop and never in the
        # default executor the store writer uses: a slow source keeps to itself.
        self._executor: Executor | None = None
        self._frozen_at = -math.inf  # when layouts were last frozen out of gc scans
        self._mapper: ThreadPoolExecutor | None = None

    def _pool(self) -> Executor:
        if self._executor is None:
            if self.o.workers > 0:
                # spawn: never fork a process whose threads (DuckDB, executors) hold locks
                self._executor = ProcessPoolExecutor(
                    self.o.workers, mp_context=multiprocessing.get_context("spawn")
                )
            else:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-parse")
        return self._executor

    async def gather(self, now: datetime) -> Gathered:
        n = len(self.targets)
        loop = asyncio.get_running_loop()
        reasons: list[str | None] = [None] * n
        ready: list[tuple[int, http_get.Response]] = []  # fetched, not yet parsed
        arrived = asyncio.Event()
        snaps: dict[int, Snapshot] = {}
        learned = [0]  # layouts learned this gather

        async def fetch_next() -> None:
            # max_connections of these share one iterator over the targets: as many
            # fetches at once, without a task and a semaphore wait per target
            for i in todo:
                r = await http_get.get(
                    self.targets[i].url,
                    deadline_s=self.o.timeout_s,
                    max_bytes=self.o.max_body_bytes,
                    headers=_ACCEPT,
                    ssl_ctx=self._ssl,
                    pool=self._conns,
                )
                reasons[i] = r.reason
                if r.body is not None:
                    ready.append((i, r))
                    arrived.set()

        async def parse_arrived() -> None:
            # Fetches and parses overlap: whatever has arrived is parsed in one
            # executor call (one hand-off per batch, not per target) while the
            # rest is still being fetched.
            while True:
                if not ready:
                    if fetching.done():
                        return
                    arrived.clear()
                    await arrived.wait()
                    continue
                batch = ready[:_PARSE_BATCH]
                del ready[:_PARSE_BATCH]
                learn = self.o.workers == 0
                items = [
                    (
                        r.body or b"",
                        self.targets[i].url,
                        r.at,
                        self._labels[i],
                        self.o.max_labels,
                        self._layouts[i],
                        learn,
                    )
                    for i, r in batch
                ]
                parsed = await loop.run_in_executor(self._pool(), parse_bodies, items)
                for (i, _), (snap, layout) in zip(batch, parsed, strict=True):
                    snaps[i] = snap
                    learned[0] += layout is not None and layout is not self._layouts[i]
                    self._layouts[i] = layout

        todo = iter(range(n))
        fetchers = min(n, self.o.max_connections)
        fetching = asyncio.ensure_future(asyncio.gather(*(fetch_next() for _ in range(fetchers))))
        fetching.add_done_callback(lambda _: arrived.set())
        parsers = [asyncio.ensure_future(parse_arrived()) for _ in range(max(1, self.o.workers))]
        try:
            await fetching
            await asyncio.gather(*parsers)
        finally:
            fetching.cancel()
            for p in parsers:
                p.cancel()
        skipped = [r for r in reasons if r]
        if n and not snaps:
            raise RuntimeError(f"scrape: no target answered ({skipped[0]})")
        failed = []  # each failed or unparsable target is a collector_runs row of its own
        for i, t in enumerate(self.targets):
            snap = snaps.get(i)
            if snap is None:
                failed.append((t.url, f"target {t.url} failed: {reasons[i]}"))
            elif not len(snap):  # HTML, empty, nothing parsable: a failure, not a quiet target
                why = "; ".join(snap.skipped[:2]) or "no samples"
                failed.append((t.url, f"target {t.url} unparsable: {why}"))
        merged = merge([snaps[i] for i in sorted(snaps)])  # target order, as configured
        g = await loop.run_in_executor(self._map_executor(), self.pipeline.map, merged, _epoch(now))
        g.skipped[:0] = skipped
        g.batches += failure_runs(self.name, _naive(now), failed)
        if learned[0]:
            self._freeze_layouts()
        return g

    def _freeze_layouts(self) -> None:
        """Layouts (a name and a label dict per series, 542,157 series at 10,032 GPUs)
        live as long as their targets' series: moved out of the cyclic collector's
        scans (gc.freeze), each of which would visit them all again. At most once per
        FREEZE_EVERY_S, after a collection (no garbage is frozen); what is frozen is
        still freed by reference counting when a layout is replaced."""
        now = time.monotonic()
        if now - self._frozen_at < FREEZE_EVERY_S:
            return
        self._frozen_at = now
        gc.collect()
        gc.freeze()

    def _map_executor(self) -> Executor:
        # The mappers keep counter baselines: they run in this process, on one thread.
        if self.o.workers > 0:
            if self._mapper is None:
                self._mapper = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-map")
            return self._mapper
        return self._pool()

    async def close(self) -> None:
        self._conns.close()
        for ex in (self._executor, self._mapper):
            if ex is not None:
                ex.shutdown(wait=False, cancel_futures=True)
        self._executor = self._mapper = None


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
