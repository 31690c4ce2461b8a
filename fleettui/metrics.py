"""The daemon's own Prometheus `/metrics`, on a loopback port (`[daemon] metrics_listen`).

Built at scrape time from what the daemon holds in memory: the runtime's
counters and write queue, each source's runs and rejects (SourceHealth), the
mqtt sources' ingest counters, the alert engine's open alerts and each
delivery target's queue, and the store's size on disk with its projection at
the configured retention (refreshed at most once a minute, off the event
loop). prometheus_client writes the exposition text, so the format is its.

A plain asyncio HTTP server: GET /metrics, nothing else; each request must
arrive within a few seconds and is capped in size, so a stuck or hostile
client cannot pile up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from fleettui import __version__
from fleettui.source_health import SourceHealth

log = logging.getLogger("fleettui.metrics")

# The classic text format every Prometheus 2.x reads (the names here need no UTF-8 escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_DEADLINE_S = 5.0
MAX_REQUEST_BYTES = 8192


class MetricsError(ValueError):
    """metrics_listen is not a loopback HOST:PORT."""


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9465' / '[::1]:9465' / 'localhost:0' -> (host, port); loopback only."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise MetricsError(f"metrics_listen {text!r}: expected HOST:PORT (port 0: a free one)")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise MetricsError(
                f"metrics_listen {text!r}: must be a loopback address "
                "(127.0.0.1, ::1, localhost); put a proxy in front to expose it"
            )
    return host, int(port)


def _family(kind: str, name: str, doc: str, labels: Sequence[str] = ()) -> Metric:
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return cls(name, doc, labels=list(labels))


class DaemonCollector:
    """A prometheus_client collector over the daemon's live objects."""

    def __init__(
        self,
        runtime: Any,
        sources: Sequence[Any],
        tasks: Sequence[Any],
        health: SourceHealth,
        store_size: Callable[[], dict[str, float]] | None = None,
        started_at: float | None = None,
    ):
        self.runtime, self.sources, self.tasks, self.health = runtime, sources, tasks, health
        self.store_size = store_size
        self.started_at = started_at or time.time()

    def describe(self) -> Iterable[Metric]:
        return []  # collected fresh at every scrape; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        yield from self._daemon()
        yield from self._runtime()
        yield from self._sources()
        yield from self._mqtt()
        yield from self._alerts()
        yield from self._store()

    def _daemon(self) -> Iterable[Metric]:
        m = _family("gauge", "fleettui_build_info", "FleetTUI version", ["version"])
        m.add_metric([__version__], 1)
        yield m
        m = _family("gauge", "fleettui_start_time_seconds", "When the daemon started (epoch s)")
        m.add_metric([], self.started_at)
        yield m

    def _runtime(self) -> Iterable[Metric]:
        rt = self.runtime
        st = rt.stats
        d: dict[str, Any] = rt.stats_dict() if hasattr(rt, "stats_dict") else {}
        q = getattr(rt, "_queue", None)
        depth = d.get("queue_depth", q.qsize() if q is not None else 0)
        cap = d.get("queue_max", q.maxsize if q is not None else 0)
        m = _family("counter", "fleettui_rows_written", "Rows written to the store", ["table"])
        for table, n in sorted(st.rows_by_table.items()):
            m.add_metric([table], n)
        yield m
        for name, doc, value in (
            ("fleettui_batches_written", "Batches written to the store", st.batches_written),
            (
                "fleettui_batches_refused",
                "Batches the store refused (their rows are rejects)",
                st.batches_refused,
            ),
            (
                "fleettui_rows_dropped",
                "Rows given up without being stored",
                d.get("rows_dropped", getattr(st, "rows_dropped", 0)),
            ),
            ("fleettui_gathers", "Pull-source gathers", st.gathers),
            ("fleettui_gather_failures", "Pull-source gathers that failed", st.gather_failures),
            (
                "fleettui_store_failures",
                "Write attempts that failed for the database's sake",
                d.get("store_failures", 0),
            ),
        ):
            m = _family("counter", name, doc)
            m.add_metric([], value)
            yield m
        gauges = [
            ("fleettui_write_queue_depth", "Items waiting for the store writer", depth),
            ("fleettui_write_queue_capacity", "Bound of the write queue", cap),
        ]
        # these come with the runtime's back-pressure view (stats_dict), when it has one
        for key, name, doc in (
            (
                "queue_oldest_s",
                "fleettui_write_queue_oldest_seconds",
                "Age of the oldest item waiting",
            ),
            (
                "last_write_lag_s",
                "fleettui_write_lag_seconds",
                "Age of the oldest batch in the last write transaction",
            ),
            (
                "last_write_s",
                "fleettui_write_duration_seconds",
                "Duration of the last write transaction",
            ),
        ):
            if key in d:
                gauges.append((name, doc, d[key]))
        if "store_ok" in d:
            gauges.append(
                ("fleettui_store_up", "1 while the store accepts writes", 1 if d["store_ok"] else 0)
            )
        for name, doc, value in gauges:
            m = _family("gauge", name, doc)
            m.add_metric([], float(value or 0))
            yield m

    def _sources(self) -> Iterable[Metric]:
        h = self.health
        runs = _family(
            "counter", "fleettui_source_runs", "Runs recorded in collector_runs", ["source"]
        )
        fails = _family("counter", "fleettui_source_run_failures", "Runs that failed", ["source"])
        dur = _family(
            "counter",
            "fleettui_source_run_duration_seconds",
            "Time spent in runs (sum)",
            ["source"],
        )
        last_dur = _family(
            "gauge",
            "fleettui_source_last_run_duration_seconds",
            "Duration of the last run",
            ["source"],
        )
        last_ok = _family(
            "gauge",
            "fleettui_source_last_success_time_seconds",
            "When the source last ran successfully (epoch s; 0: never)",
            ["source"],
        )
        interval = _family(
            "gauge",
            "fleettui_source_interval_seconds",
            "The interval the source's last run declared (push: expected report interval)",
            ["source"],
        )
        err = _family(
            "gauge",
            "fleettui_source_last_error_info",
            "The last failing run's error (value: its epoch s)",
            ["source", "error"],
        )
        rejects = _family(
            "counter", "fleettui_rejects", "Rejected messages by reason", ["source", "reason"]
        )
        for name, s in sorted(h.sources.items()):
            runs.add_metric([name], s.runs)
            fails.add_metric([name], s.failures)
            dur.add_metric([name], s.duration_s)
            last_dur.add_metric([name], s.last_duration_s)
            last_ok.add_metric([name], s.last_ok_at or 0.0)
            if s.interval_s is not None:
                interval.add_metric([name], s.interval_s)
            if s.last_error is not None:
                err.add_metric([name, s.last_error], s.last_error_at or 0.0)
        for (src, reason), n in sorted(h.rejects.items()):
            rejects.add_metric([src, reason], n)
        yield from (runs, fails, dur, last_dur, last_ok, interval, err, rejects)

    def _mqtt(self) -> Iterable[Metric]:
        fams = {
            "received": ("fleettui_mqtt_reports_received", "Report messages received"),
            "stored": ("fleettui_mqtt_reports_stored", "Reports handed to the store"),
            "rejected": ("fleettui_mqtt_messages_rejected", "Messages rejected"),
            "duplicates": ("fleettui_mqtt_reports_duplicate", "Redelivered reports dropped"),
            "seq_gaps": ("fleettui_mqtt_report_seq_gaps", "Reports missing from agents' seq"),
            "agent_dropped": (
                "fleettui_mqtt_agent_dropped",
                "Reports agents say they dropped (buffer full)",
            ),
            "write_errors": ("fleettui_mqtt_write_errors", "Flushes the store refused"),
        }
        out = {k: _family("counter", n, d, ["source"]) for k, (n, d) in fams.items()}
        lag = _family(
            "gauge",
            "fleettui_mqtt_ingest_lag_seconds",
            "Report timestamp to handed to the writer, last 1,000 reports",
            ["source", "quantile"],
        )
        any_mqtt = False
        for src in self.sources:
            stats = getattr(src, "stats", None)
            if stats is None or not hasattr(stats, "as_dict"):
                continue
            any_mqtt = True
            values = stats.as_dict()
            for k, fam in out.items():
                if k in values:
                    fam.add_metric([src.name], values[k])
            recent = list(stats.lag_s)[-1000:] if hasattr(stats, "lag_s") else []
            if recent:
                p50, p99 = np.quantile(np.asarray(recent), [0.5, 0.99])
                lag.add_metric([src.name, "0.5"], float(p50))
                lag.add_metric([src.name, "0.99"], float(p99))
        if any_mqtt:
            yield from out.values()
            yield lag

    def _alerts(self) -> Iterable[Metric]:
        states = _family("gauge", "fleettui_alerts", "Open alerts", ["state", "severity"])
        counts: dict[tuple[str, str], int] = {}
        notes = _family(
            "counter",
            "fleettui_alert_notifications",
            "Alert notifications by target and outcome",
            ["target", "outcome"],
        )
        queued = _family(
            "gauge",
            "fleettui_alert_notifications_queued",
            "Notifications waiting for their receiver's confirmation",
            ["target"],
        )
        seen = False
        for task in self.tasks:
            if not hasattr(task, "open_alerts"):
                continue
            seen = True
            for a in task.open_alerts():
                counts[(a.state, a.severity)] = counts.get((a.state, a.severity), 0) + 1
            delivery = getattr(task, "delivery", None)
            for t in getattr(delivery, "targets", []) if delivery is not None else []:
                st = getattr(t, "stats", None)
                if st is None:
                    continue
                notes.add_metric([t.target, "confirmed"], st.confirmed)
                notes.add_metric([t.target, "failed_attempt"], st.attempts_failed)
                notes.add_metric([t.target, "dropped"], st.dropped)
                queued.add_metric([t.target], t.queued)
        if not seen:
            return
        for state in ("pending", "firing"):
            for sev in ("critical", "warning", "info"):
                states.add_metric([state, sev], counts.get((state, sev), 0))
        yield from (states, notes, queued)

    def _store(self) -> Iterable[Metric]:
        if self.store_size is None:
            return
        size = self.store_size()
        for key, name, doc in (
            ("file_bytes", "fleettui_store_file_bytes", "The database file and its WAL on disk"),
            ("used_bytes", "fleettui_store_used_bytes", "Database blocks in use"),
            (
                "bytes_per_hour",
                "fleettui_store_growth_bytes_per_hour",
                "Observed growth of the used bytes",
            ),
            (
                "projected_bytes",
                "fleettui_store_projected_bytes",
                "Size the store reaches at the configured retention, at the observed rate",
            ),
            (
                "projected_rollup_bytes",
                "fleettui_store_projected_rollup_bytes",
                "Of the projected size, the rollup tiers at their retention (1 m, 1 h)",
            ),
            ("retention_h", "fleettui_store_retention_hours", "Configured retention"),
            ("memory_bytes", "fleettui_store_memory_bytes", "DuckDB's memory in use"),
            (
                "memory_uncheckpointed_bytes",
                "fleettui_store_memory_uncheckpointed_bytes",
                "DuckDB's memory holding committed rows not yet checkpointed (freed at each "
                "checkpoint, every 16 MiB of WAL)",
            ),
            ("process_rss_bytes", "fleettui_process_resident_bytes", "The daemon's RSS"),
            (
                "growth_from_checkpoints",
                "fleettui_store_growth_from_checkpoints",
                "1: growth measured on checkpointed (compressed) blocks; 0: on file + WAL, "
                "which overstates it",
            ),
        ):
            if key in size:
                m = _family("gauge", name, doc)
                m.add_metric([], float(size[key]))
                yield m


def registry_for(collector: DaemonCollector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)  # type: ignore[arg-type]
    return reg


async def serve(registry: CollectorRegistry, host: str, port: int) -> asyncio.Server:
    """Serve GET /metrics on host:port (port 0: a free one: see server.sockets)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_DEADLINE_S):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split()
            if (
                len(parts) >= 2
                and parts[0] in (b"GET", b"HEAD")
                and parts[1].split(b"?")[0] == b"/metrics"
            ):
                body = generate_latest(registry)
                status, ctype = b"200 OK", CONTENT_TYPE.encode()
            else:
                body, status, ctype = b"only GET /metrics here\n", b"404 Not Found", b"text/plain"
            if parts and parts[0] == b"HEAD":
                body_out = b""
            else:
                body_out = body
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + ctype
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body_out
            )
            async with asyncio.timeout(REQUEST_DEADLINE_S):
                await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass
        except Exception:  # a bug in a collector: log it, keep serving
            log.exception("/metrics failed")
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_BYTES)


class StoreSizeTask:
    """A runtime task: the store's size on disk and its projection at `retention_h`,
    measured off the event loop every `interval_s`; /metrics reads the last result."""

    name = "store-size"

    def __init__(
        self,
        store: Any,
        retention_h: float,
        interval_s: float = 60.0,
        keep_1m_h: float = 30 * 24.0,
        keep_1h_h: float = 730 * 24.0,
    ):
        from storage.footprint import Growth

        self.store, self.retention_h, self.interval_s = store, retention_h, interval_s
        self.keep_1m_h, self.keep_1h_h = keep_1m_h, keep_1h_h  # the rollup tiers' retention
        self.growth = Growth()
        self.last: dict[str, float] = {"retention_h": retention_h}

    def measure(self) -> dict[str, float]:
        from storage.footprint import (
            duckdb_memory_bytes,
            process_rss_bytes,
            rollup_rows,
            store_bytes,
        )

        on_disk, used = store_bytes(self.store)
        self.growth.observe(on_disk, used)
        self.growth.observe_rows(*rollup_rows(self.store))
        self.last = {"file_bytes": on_disk, "used_bytes": used, "retention_h": self.retention_h}
        self.last.update(duckdb_memory_bytes(self.store))
        self.last["process_rss_bytes"] = process_rss_bytes()
        if self.growth.readings >= 2:  # a rate needs two readings
            self.last["bytes_per_hour"] = self.growth.bytes_per_hour
            self.last["projected_bytes"] = self.growth.projected_bytes(
                self.retention_h, self.keep_1m_h, self.keep_1h_h
            )
            self.last["projected_rollup_bytes"] = self.growth.rollup_bytes(
                self.keep_1m_h, self.keep_1h_h
            )
            self.last["growth_from_checkpoints"] = float(self.growth.from_checkpoints)
        return self.last

    async def tick(self, now: Any) -> None:
        await asyncio.to_thread(self.measure)

    def snapshot(self) -> dict[str, float]:
        from storage.footprint import disk_bytes

        out = dict(self.last)
        if getattr(self.store, "lake_file_bytes", None) is None:  # a lake asks its catalog
            out["file_bytes"] = disk_bytes(self.store.path)  # only in measure(), off the loop
        if "projected_bytes" in out:
            out["projected_bytes"] = max(out["projected_bytes"], out["file_bytes"])
        return out
