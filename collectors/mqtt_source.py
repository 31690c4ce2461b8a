"""Push source "mqtt": NVML agents' reports from an MQTT broker into the store.

Subscribes to `<prefix>/+/report` (through `$share/<group>/...` when several
daemons split a fleet) and `<prefix>/+/status` (retained birth/Will, never
shared: every daemon needs every host's presence). Each payload is decoded and
validated (collectors/nvml/report.py); good reports accumulate as column lists
and are written as one batch per table per flush; bad ones go to `rejects` with
the reason; a (host, boot, seq) seen before (QoS 1 redelivery, agent replay)
is counted and dropped. Nothing a publisher sends can stop the source.

With MQTT 5 (the default) messages are acknowledged only once what they became is
committed to the store (`ack_after_store`), and the session is persistent: the
broker redelivers whatever a killed daemon had received but not stored, and the
dedupe absorbs what it redelivers to the same daemon. At SIGTERM the received
messages are stored and acknowledged before the connection closes. With MQTT
3.1.1 (no Receive Maximum to ask the broker for a large window of unacknowledged
messages) they are acknowledged on receipt, and a daemon killed loses what the
client had received but not stored: under a backlog, its whole queue.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from collectors.backoff import Backoff, stop_requested
from collectors.base import Sink, committing, register
from collectors.mqtt_client import Received, ack_all, tune
from collectors.nvml.batches import (
    NVLINK_ROWS,
    SOURCE_COLUMN,
    HostRows,
    ReportBatcher,
    epoch_col,
    ts_col,
)
from collectors.nvml.report import HOST_RE, Report, ReportError, decode, decode_status
from collectors.nvml.report_v2 import Frame, FrameColumns, is_v2, parse
from collectors.options import parse_options
from storage.batch import Batch, make_batch, storable_text

log = logging.getLogger(__name__)

EXCERPT_BYTES = 200  # payload bytes kept with a reject
# intervals a flush waits while the writer still holds the previous one
HOLD_FLUSHES = 3
YIELD_EVERY = 64  # messages handled back to back before the event loop runs again


# -- connection options shared with the agent ----------------------------------------------------
def parse_broker(broker: str, tls: bool = False) -> tuple[str, int]:
    """ "HOST[:PORT]" (IPv6 as "[addr]:port") -> (host, port); default port 1883, 8883 with TLS."""
    default = 8883 if tls else 1883
    b = broker.strip()
    if not b:
        raise ValueError("broker is empty")
    if b.startswith("["):
        host, _, rest = b[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif b.count(":") == 1:
        host, port = b.split(":")
    else:
        host, port = b, ""
    if not host:
        raise ValueError(f"broker {broker!r} has no host")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"broker {broker!r}: port must be 1-65535")
        return host, int(port)
    return host, default


def check_tls_files(**paths: str) -> None:
    """Fail at config time, not at the first connect, when a TLS file is missing."""
    for key, path in paths.items():
        if path and not Path(path).expanduser().is_file():
            raise ValueError(f"{key}: no such file {path!r}")


def tls_parameters(tls: bool, ca: str, cert: str, key: str) -> aiomqtt.TLSParameters | None:
    if not tls:
        return None

    def path(p: str) -> str | None:
        return str(Path(p).expanduser()) if p else None

    return aiomqtt.TLSParameters(
        ca_certs=path(ca),
        certfile=path(cert),
        keyfile=path(key),
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )


def resolve_password(password: str, password_env: str) -> str | None:
    if password_env:
        return os.environ.get(password_env)
    return password or None


@dataclass(frozen=True)
class MqttOptions:
    """Config keys of a `kind = "mqtt"` source (documented in docs/agent-mqtt.md)."""

    name: str = "mqtt"
    broker: str = "127.0.0.1:1883"  # HOST[:PORT]
    topic_prefix: str = "fleettui"  # reports on <prefix>/<host>/report, presence on .../status
    shared_group: str = ""  # "" plain subscription; else $share/<group>/<prefix>/+/report
    qos: int = 1
    protocol: int = 5  # MQTT 5 (shared subscriptions, session expiry) or 3 (3.1.1)
    client_id: str = ""  # "" -> fleettui-<machine>-<name>; fixed ids keep the broker session
    persistent_session: bool = True  # broker queues reports while the daemon is away
    ack_after_store: bool = True  # MQTT 5: acknowledge messages once stored (see above)
    session_expiry_s: int = 3600
    tls: bool = False
    tls_ca: str = ""  # CA file; "" uses the system store
    tls_cert: str = ""
    tls_key: str = ""
    username: str = ""
    password: str = ""
    password_env: str = ""  # name of an environment variable holding the password
    flush_interval_s: float = 0.25  # seconds between writes to the store
    # seconds between the agents' reports (their --interval): CollectorSilent fires
    # after 3 of them (at least one alert interval) without any report arriving
    report_interval_s: float = 1.0
    max_batch_reports: int = 2000  # flush early when this many reports wait
    max_future_s: float = 300.0  # reports stamped further ahead are rejected
    max_age_s: float = 7 * 86400.0  # and older ones too
    dedupe_window: int = 4096  # (host, boot) seq numbers remembered for duplicate checks
    reconnect_max_s: float = 10.0  # longest wait between reconnect attempts
    max_queued_messages: int = 20_000  # received, not yet decoded; beyond it the client drops
    nvlink_rows: str = "per_link"  # link_samples rows: "per_link" or "per_gpu" (18x fewer)
    host_evict_s: float = 3600.0  # per-host dedupe/inventory state dropped after this silence
    max_new_hosts_per_min: int = 1000  # reports of further new hosts are rejected (0: no cap)

    def __post_init__(self) -> None:
        parse_broker(self.broker, self.tls)
        check_tls_files(tls_ca=self.tls_ca, tls_cert=self.tls_cert, tls_key=self.tls_key)
        if self.qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        if self.protocol not in (3, 5):
            raise ValueError("protocol must be 3 (MQTT 3.1.1) or 5")
        if (
            not self.topic_prefix
            or any(c in self.topic_prefix for c in "+#")
            or self.topic_prefix.startswith("$")
        ):
            raise ValueError("topic_prefix must be non-empty, without + # or a leading $")
        if self.nvlink_rows not in NVLINK_ROWS:
            raise ValueError(f"nvlink_rows must be one of {', '.join(NVLINK_ROWS)}")
        if any(c in self.shared_group for c in "+#/"):
            raise ValueError("shared_group must not contain + # or /")
        if self.reconnect_max_s < 0.1 or self.host_evict_s <= 0:
            raise ValueError("reconnect_max_s must be >= 0.1 and host_evict_s > 0")
        if not 0 < self.report_interval_s <= 86400:
            raise ValueError("report_interval_s must be in (0, 86400]")
        if (
            self.flush_interval_s <= 0
            or self.max_batch_reports < 1
            or self.dedupe_window < 1
            or self.max_queued_messages < 1
        ):
            raise ValueError(
                "flush_interval_s, max_batch_reports, dedupe_window and "
                "max_queued_messages must be > 0"
            )


@dataclass(slots=True)
class IngestStats:
    received: int = 0
    stored: int = 0
    rejected: int = 0
    duplicates: int = 0
    seq_gaps: int = 0  # seq numbers skipped (not yet seen) within a boot
    agent_dropped: int = 0  # reports agents say they dropped (buffer full)
    status_messages: int = 0
    write_errors: int = 0
    unstorable: int = 0  # decoded, but batch building refused them (rejected, counted above)
    hosts_capped: int = 0  # reports rejected by max_new_hosts_per_min (counted in rejected)
    hosts_evicted: int = 0
    flushes: int = 0
    lag_s: deque[float] = field(default_factory=lambda: deque(maxlen=500_000))

    def as_dict(self) -> dict[str, int]:
        return {
            k: getattr(self, k)
            for k in (
                "received",
                "stored",
                "rejected",
                "duplicates",
                "seq_gaps",
                "agent_dropped",
                "status_messages",
                "write_errors",
                "unstorable",
                "hosts_capped",
                "hosts_evicted",
                "flushes",
            )
        }


class _SeqWindow:
    """Recently seen seq numbers of one (host, boot)."""

    __slots__ = ("seen", "order", "max_seq", "dropped")

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.order: deque[int] = deque()
        self.max_seq = -1
        self.dropped = 0  # the agent's cumulative count of reports it dropped


class MqttSource:
    """Push source "mqtt" (see module docstring)."""

    row_source = SOURCE_COLUMN  # the `source` its rows carry ("nvml"), not its name

    def __init__(
        self,
        options: MqttOptions | None = None,
        *,
        clock: Any = time.time,
        on_report: Callable[[Report], None] | None = None,
    ):
        self.o = options or MqttOptions()
        self.on_report = on_report  # called with each accepted report, in arrival order
        self.name = self.o.name
        self.clock = clock
        self.stats = IngestStats()
        # hosts rows when they change; last_seen once per report interval (batches.py)
        self._host_rows = HostRows(self.o.report_interval_s, lambda: self.clock())
        self._batcher = self._new_batcher()
        self._rejects: dict[str, list[Any]] = {
            c: [] for c in ("ts", "source", "topic", "host", "reason", "payload_excerpt")
        }
        self._status: dict[str, tuple[str, float | None, str | None, float]] = {}
        self._windows: dict[str, dict[str, _SeqWindow]] = {}
        self._inv_seen: dict[str, Any] = {}
        # accepted reports since the last flush, kept to isolate one that cannot be stored
        self._pending: list[tuple[Report | Frame, bool, str, bytes]] = []
        # version 2 frames whose header and strings passed, their values not yet checked
        # (checked for the whole flush at once: `_settle_frames`)
        self._frames: list[tuple[Frame, str, bytes]] = []
        self._isolated: list[Report] = []
        self._unsent: tuple[list[Batch], list[float], int] | None = None
        self._last_seen: dict[str, float] = {}  # host -> last accepted report (epoch s)
        self._new_hosts_minute, self._new_hosts = -1, 0
        self._evicted_at = 0.0
        self._gpu_owner: dict[str, str] = {}  # GPU uuid -> the host that reported it first
        # host -> the GPU list it last claimed whole: the same list again needs no lookup
        self._claimed: dict[str, list[str]] = {}
        # the last flush's checked frames: their columns serve `take` when all were accepted
        self._checked: FrameColumns | None = None
        self._flush_lock = asyncio.Lock()
        self._held = 0  # flush ticks skipped while the writer holds the last hand-in
        self._work_s = 0.0  # decoding and batching time since the last flush
        self._dups_reported = 0
        # handled messages not yet acknowledged: (client, mid, qos); acks of flushes handed
        # in and waiting for their commit
        self._acks: list[tuple[aiomqtt.Client, int, int]] = []
        self._committing: dict[asyncio.Future[bool], list[tuple[aiomqtt.Client, int, int]]] = {}
        self._getter: asyncio.Future[Received] | None = None
        self.connected = asyncio.Event()
        p = self.o.topic_prefix
        self.report_filter = f"{p}/+/report"
        if self.o.shared_group:
            self.report_filter = f"$share/{self.o.shared_group}/{self.report_filter}"
        self.status_filter = f"{p}/+/status"

    # -- message handling (synchronous, no I/O) -------------------------------------------
    def handle(self, topic: str, payload: bytes) -> None:
        """Decode one message and queue its rows or its reject; never raises."""
        t0 = time.perf_counter()
        try:
            self._handle(topic, payload)
        finally:
            self._work_s += time.perf_counter() - t0

    def _handle(self, topic: str, payload: bytes) -> None:
        now = self.clock()
        try:
            parts = topic.split("/")
            prefix_n = self.o.topic_prefix.count("/") + 1
            host = parts[prefix_n] if len(parts) == prefix_n + 2 else None
            kind = parts[-1] if host else None
            if kind == "report":
                self._handle_report(topic, host, payload, now)
            elif kind == "status":
                self._handle_status(topic, host, payload, now)
            else:
                self._reject(
                    now, topic, None, "topic is not <prefix>/<host>/report|status", payload
                )
        except Exception as exc:  # a bug must not stop ingestion: keep the message and why
            log.exception("%s: unexpected error on %s", self.name, topic)
            self._reject(now, topic, None, f"internal error: {type(exc).__name__}: {exc}", payload)

    def _handle_report(self, topic: str, host: str, payload: bytes, now: float) -> None:
        self.stats.received += 1
        try:
            if is_v2(payload):
                frame = parse(
                    payload,
                    topic_host=host,
                    now=now,
                    max_future_s=self.o.max_future_s,
                    max_age_s=self.o.max_age_s,
                )
                self._frames.append((frame, topic, payload))
                return
            r = decode(
                payload,
                topic_host=host,
                now=now,
                max_future_s=self.o.max_future_s,
                max_age_s=self.o.max_age_s,
            )
        except ReportError as exc:
            self._reject(now, topic, host, str(exc), payload)
            return
        self._accept(r, topic, host, payload, now)

    @property
    def queued_reports(self) -> int:
        return self._batcher.reports + len(self._frames)

    def _settle_frames(self, now: float) -> None:
        """Check the values of every version 2 frame received since the last flush at
        once; a frame with a value version 1 would refuse is rejected alone, the others
        are accepted in arrival order."""
        frames, self._frames = self._frames, []
        self._checked = None
        if not frames:
            return
        try:
            self._checked = FrameColumns([f for f, _, _ in frames])
            bad = self._checked.problems(self._batcher.per_gpu_links)
        except Exception as exc:  # a bug must not stop ingestion: check them one by one
            log.exception("%s: checking %d v2 frames failed", self.name, len(frames))
            self._checked = None
            bad = {}
            for i, (f, _, _) in enumerate(frames):
                try:
                    found = FrameColumns([f]).problems(self._batcher.per_gpu_links)
                except Exception:
                    found = {0: f"internal error: {type(exc).__name__}: {exc}"}
                if found:
                    bad[i] = found[0]
        for i, (f, topic, payload) in enumerate(frames):
            why = bad.get(i)
            if why is not None:
                if why.startswith("cannot be stored"):
                    self.stats.unstorable += 1
                self._reject(now, topic, f.host, why, payload)
            else:
                self._accept(f, topic, f.host, payload, now)

    def _accept(self, r: Report | Frame, topic: str, host: str, payload: bytes, now: float) -> None:
        """A decoded report (or checked v2 frame): host cap, GPU ownership, duplicates,
        then its rows are queued."""
        if not self._admit_host(r.host, now):
            self.stats.hosts_capped += 1
            self._reject(
                now,
                topic,
                host,
                f"new host refused: more than "
                f"{self.o.max_new_hosts_per_min} new hosts in the last minute "
                "(max_new_hosts_per_min)",
                payload,
            )
            return
        owner = self._claim_gpus(r.host, r.uuids if type(r) is Frame else r.gpu["uuid"])
        if owner is not None:
            self._reject(now, topic, host, owner, payload)
            return
        w = self._window(r)
        if r.seq in w.seen:
            self.stats.duplicates += 1
            return
        self._remember(w, r.seq)
        if r.dropped > w.dropped:
            self.stats.agent_dropped += r.dropped - w.dropped
            w.dropped = r.dropped
        with_inv = False
        if r.inv is not None:
            key = repr(r.inv)
            if self._inv_seen.get(r.host) != key:
                self._inv_seen[r.host] = key
                with_inv = True
        try:
            if type(r) is Frame:
                self._batcher.add_meta(r.meta(), with_inv)  # its samples: FrameColumns
            else:
                self._batcher.add(r, with_inv)
        except Exception as exc:  # a half-added report: rebuild the batcher without it
            self._rebuild_batcher()
            self._unstorable(r, topic, payload, now, exc)
            return
        self._pending.append((r, with_inv, topic, payload))
        if self.on_report is not None:
            self.on_report(r.report() if type(r) is Frame else r)

    def seed_hosts(self, hosts: list[tuple[str, float | None]]) -> None:
        """Hosts the store already knows (name, last seen epoch s): not new after a restart."""
        for host, last in hosts:
            self._last_seen.setdefault(host, float(last) if last is not None else self.clock())

    def _admit_host(self, host: str, now: float) -> bool:
        """Track when `host` was last heard; a host not seen (or evicted) counts against
        the per-minute cap of new hosts, so a flood of one-off names is never stored."""
        if host in self._last_seen:
            self._last_seen[host] = now
            return True
        cap = self.o.max_new_hosts_per_min
        if cap:
            minute = int(now // 60)
            if minute != self._new_hosts_minute:
                self._new_hosts_minute, self._new_hosts = minute, 0
            if self._new_hosts >= cap:
                return False
            self._new_hosts += 1
        self._last_seen[host] = now
        return True

    def evict_idle_hosts(self, now: float) -> int:
        """Forget dedupe windows, inventory and last-seen of hosts silent for longer
        than `host_evict_s`; returns how many. Runs once a minute from the flusher."""
        horizon = now - self.o.host_evict_s
        gone = [h for h, t in self._last_seen.items() if t < horizon]
        for h in gone:
            del self._last_seen[h]
            self._windows.pop(h, None)
            self._inv_seen.pop(h, None)
            self._claimed.pop(h, None)
        self._host_rows.drop(gone)
        if gone:
            gone_set = set(gone)
            self._gpu_owner = {u: h for u, h in self._gpu_owner.items() if h not in gone_set}
        self.stats.hosts_evicted += len(gone)
        return len(gone)

    @property
    def hosts_tracked(self) -> int:
        return len(self._last_seen)

    def _new_batcher(self) -> ReportBatcher:
        # host rows go through the shared HostRows, so they are written when they change
        return ReportBatcher(self.o.nvlink_rows, self._host_rows)

    def _rebuild_batcher(self) -> None:
        self._batcher = self._new_batcher()
        for r, with_inv, _, _ in self._pending:
            if type(r) is Frame:
                self._batcher.add_meta(r.meta(), with_inv)
            else:
                self._batcher.add(r, with_inv)

    def _unstorable(
        self, r: Report | Frame, topic: str, payload: bytes, now: float, exc: BaseException
    ) -> None:
        """A report that decoded but cannot become store rows: one reject, nothing else."""
        self.stats.unstorable += 1
        self._inv_seen.pop(r.host, None)  # its inventory was not stored: take the next one
        msg = str(exc).splitlines()[0] if str(exc) else ""
        self._reject(now, topic, r.host, f"cannot be stored: {type(exc).__name__}: {msg}", payload)

    def _isolating_take(
        self, pending: list[tuple[Report, bool, str, bytes]], now: float
    ) -> list[Batch]:
        """Batches for `pending`, splitting it in halves until the report(s) that make
        batch building fail are found and rejected; the rest are kept."""
        batcher = ReportBatcher(self.o.nvlink_rows)
        try:
            for r, with_inv, _, _ in pending:
                batcher.add(r, with_inv)
            return batcher.take()
        except Exception as exc:
            if len(pending) == 1:
                r, _, topic, payload = pending[0]
                self._isolated.append(r)
                self._unstorable(r, topic, payload, now, exc)
                return []
            mid = len(pending) // 2
            return self._isolating_take(pending[:mid], now) + self._isolating_take(
                pending[mid:], now
            )

    def _take_reports(self) -> tuple[list[Batch], list[float], int]:
        """The queued reports as batches; the batcher is reset whatever happens."""
        self._settle_frames(self.clock())
        pending, self._pending = self._pending, []
        ts = self._batcher.report_ts
        try:
            batches = self._batcher.take()
            frames = [p[0] for p in pending if type(p[0]) is Frame]
            checked, self._checked = self._checked, None
            if frames:  # version 2 samples: columns straight from the frames' records
                if not _same_frames(checked, frames):  # some were refused: read the rest
                    checked = FrameColumns(frames)
                cols = checked.batches(self._batcher.per_gpu_links, SOURCE_COLUMN)
                batches += [make_batch(table, c) for table, c in cols.items()]
            return batches + self._seq_batch(pending), ts, len(pending)
        except Exception as exc:
            log.warning(
                "%s: building batches of %d reports failed (%s); isolating the culprit",
                self.name,
                len(pending),
                type(exc).__name__,
            )
            self._batcher = self._new_batcher()
            self._host_rows.forget()  # the isolating batches carry whole host rows
            self._isolated = []
            pending = [(f.report() if type(f) is Frame else f, *rest) for f, *rest in pending]
            batches = self._isolating_take(pending, self.clock())
            bad = {id(r) for r in self._isolated}
            kept = [p for p in pending if id(p[0]) not in bad]
            return batches + self._seq_batch(kept), [p[0].ts for p in kept], len(kept)

    def _seq_batch(self, stored: list[tuple[Report | Frame, bool, str, bytes]]) -> list[Batch]:
        """report_seqs rows for these reports, committed with their rows: a restarted
        daemon seeds its duplicate check from them (`seed_seqs`)."""
        if not stored:
            return []
        try:
            return [
                make_batch(
                    "report_seqs",
                    {
                        "ts": ts_col([int(self.clock() * 1e6)] * len(stored)),
                        "host": [p[0].host for p in stored],
                        "boot": [p[0].boot for p in stored],
                        "seq": [p[0].seq for p in stored],
                    },
                )
            ]
        except Exception as exc:  # only the redelivery check after a crash is weaker
            log.debug("%s: report_seqs rows: %s", self.name, exc)
            return []

    def seed_seqs(self, seqs: list[tuple[str, str, int]]) -> None:
        """(host, boot, seq) of reports stored before a restart: their redelivery is a
        duplicate. Not counted as gaps."""
        gaps = self.stats.seq_gaps
        for host, boot, seq in seqs:
            self._remember(self._window_of(host, boot), int(seq))
        self.stats.seq_gaps = gaps

    def _status_batch(self, now: float) -> list[Batch]:
        """host_status rows; a status the store cannot hold is rejected alone."""
        status, self._status = self._status, {}

        def build(hosts: list[str]) -> Batch:
            vals = [status[h] for h in hosts]
            return make_batch(
                "host_status",
                {
                    "host": hosts,
                    "state": [v[0] for v in vals],
                    "since": epoch_col([v[1] or None for v in vals]),
                    "boot": [v[2] for v in vals],
                    "updated_at": epoch_col([v[3] for v in vals]),
                },
            )

        try:
            return [build(list(status))]
        except Exception:
            good = []
            for h in status:
                try:
                    build([h])
                    good.append(h)
                except Exception as exc:
                    self._reject(
                        now,
                        f"{self.o.topic_prefix}/{h}/status",
                        h,
                        f"status cannot be stored: {type(exc).__name__}",
                        b"",
                    )
            return [build(good)] if good else []

    def _claim_gpus(self, host: str, uuids: list[str]) -> str | None:
        """The first host to report a GPU owns it (in this daemon's lifetime): a report
        naming another host's GPU is refused whole, so one agent cannot overwrite
        another host's telemetry. Returns the reason, or None when the GPUs are its own."""
        if self._claimed.get(host) == uuids:  # each already this host's (only eviction
            return None  # takes an owner away, and it forgets the host's claim too)
        owners = self._gpu_owner
        for u in uuids:
            other = owners.get(u)
            if other is not None and other != host:
                return f"GPU {u} belongs to host {other!r}, not {host!r}"
        for u in uuids:
            owners.setdefault(u, host)
        self._claimed[host] = uuids
        return None

    def _window(self, r: Report | Frame) -> _SeqWindow:
        return self._window_of(r.host, r.boot)

    def _window_of(self, host: str, boot: str) -> _SeqWindow:
        boots = self._windows.setdefault(host, {})
        w = boots.get(boot)
        if w is None:
            if len(boots) >= 4:  # forget the oldest boot of this host
                boots.pop(next(iter(boots)))
            w = boots[boot] = _SeqWindow()
        return w

    def _remember(self, w: _SeqWindow, seq: int) -> None:
        w.seen.add(seq)
        w.order.append(seq)
        if len(w.order) > self.o.dedupe_window:
            w.seen.discard(w.order.popleft())
        if w.max_seq >= 0 and seq > w.max_seq + 1:
            self.stats.seq_gaps += seq - w.max_seq - 1
        w.max_seq = max(w.max_seq, seq)

    def _handle_status(self, topic: str, host: str, payload: bytes, now: float) -> None:
        self.stats.status_messages += 1
        if not payload:
            return  # a cleared retained message
        if not HOST_RE.match(host):  # the topic is its only name: checked as a report's host
            self._reject(now, topic, None, "status: the topic's host is not a host name", payload)
            return
        try:
            state, ts, boot = decode_status(payload)
        except ReportError as exc:
            self._reject(now, topic, host, f"status: {exc}", payload)
            return
        if not self._admit_host(host, now):
            self.stats.hosts_capped += 1
            self._reject(
                now,
                topic,
                host,
                "status of a new host refused: max_new_hosts_per_min reached",
                payload,
            )
            return
        self._status[host] = (state, ts, boot, now)

    def _reject(
        self, now: float, topic: str, host: str | None, reason: str, payload: bytes
    ) -> None:
        self.stats.rejected += 1
        rj = self._rejects
        rj["ts"].append(int(now * 1e6))
        rj["source"].append(self.name)
        rj["topic"].append(storable_text(topic[:1024]))
        rj["host"].append(None if host is None else storable_text(host[:256]))
        rj["reason"].append(storable_text(reason[:500]))
        raw = bytes(payload[:EXCERPT_BYTES]) if isinstance(payload, bytes | bytearray) else b""
        rj["payload_excerpt"].append(raw.decode("utf-8", errors="replace"))

    def take_batches(self) -> tuple[list[Batch], list[float], int]:
        """Everything queued since the last call: (batches, report timestamps, reports)."""
        t0 = time.perf_counter()
        batches, ts, reports = self._take_reports()
        if self._status:
            batches += self._status_batch(self.clock())
        n_rejects = len(self._rejects["ts"])
        first_reason = self._rejects["reason"][0] if n_rejects else None
        if self._rejects["ts"]:
            rj = self._rejects
            self._rejects = {c: [] for c in rj}
            batches.append(make_batch("rejects", {**rj, "ts": ts_col(rj["ts"])}))
        dups = self.stats.duplicates - self._dups_reported
        if batches or dups:
            # the source reports on itself like a pull source's gather: work done, rows, skips
            self._dups_reported = self.stats.duplicates
            work_s, self._work_s = self._work_s + time.perf_counter() - t0, 0.0
            error = None
            if n_rejects:
                error = f"rejected {n_rejects} message(s), first: {first_reason}"[:500]
            batches.append(
                make_batch(
                    "collector_runs",
                    {
                        "ts": epoch_col([self.clock()]),
                        "collector": [self.name],
                        "duration_ms": [work_s * 1000.0],
                        "ok": [True],
                        "rows": [sum(b.rows for b in batches)],
                        "error": [error],
                        "skipped": [n_rejects + dups],
                        "interval_s": [self.o.report_interval_s],
                    },
                )
            )
        return batches, ts, reports

    @property
    def manual_ack(self) -> bool:
        return self.o.ack_after_store and self.o.protocol == 5

    async def flush(self, sink: Sink) -> None:
        async with self._flush_lock:
            acks, self._acks = self._acks, []
            if self._unsent is not None:  # a flush cancelled while handing over (stopping)
                batches, ts, reports, unsent_acks = self._unsent
                self._unsent = None
                more = self.take_batches()
                batches, ts, reports = batches + more[0], ts + more[1], reports + more[2]
                acks = unsent_acks + acks
            else:
                batches, ts, reports = self.take_batches()
            if not batches:
                self._ack(acks)  # duplicates only: nothing to store
                return
            commit = committing(sink)
            try:
                if commit is None:
                    await sink(batches)
                    self._ack(acks)
                else:  # acknowledged when committed (not when dropped: then redelivered)
                    done = await commit(batches)
                    self._committing[done] = acks
                    done.add_done_callback(self._committed)
            except asyncio.CancelledError:  # keep them for the final flush
                self._unsent = (batches, ts, reports, acks)
                raise
            except Exception as exc:  # the store said no: say so, keep running
                self.stats.write_errors += 1
                self._host_rows.forget()  # its host rows too: write them whole again
                log.error(
                    "%s: writing %d reports failed: %s",
                    self.name,
                    reports,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                return
            done = self.clock()
            self.stats.stored += reports
            self.stats.flushes += 1
            self.stats.lag_s.extend(np.subtract(done, ts).tolist() if ts else ())

    def _committed(self, done: asyncio.Future[bool]) -> None:
        acks = self._committing.pop(done, None)
        if acks is not None and not done.cancelled() and done.result():
            self._ack(acks)
        elif acks is not None:  # dropped: its host rows were not stored either
            self._host_rows.forget()

    def _ack(self, acks: list[tuple[aiomqtt.Client, int, int]]) -> None:
        """PUBACK what was stored, one write per connection; never on a connection that
        has gone (its message ids mean nothing to the next one, and the broker
        redelivers those messages anyway)."""
        by_client: dict[aiomqtt.Client, list[tuple[int, int]]] = {}
        for client, mid, qos in acks:
            by_client.setdefault(client, []).append((mid, qos))
        for client, mids in by_client.items():
            ack_all(client, mids)

    async def _settle(self, timeout_s: float = 60.0) -> None:
        """Wait for the flushes handed in to be committed, and acknowledge them."""
        if self._committing:
            await asyncio.wait(list(self._committing), timeout=timeout_s)
            for done in [d for d in self._committing if d.done()]:
                self._committed(done)

    async def _acks_processed(self, client: aiomqtt.Client) -> None:
        """Wait for a round trip, so that the broker has processed the acks sent before
        (it handles a client's packets in order). Closing with unread incoming data
        resets the connection, and the broker then drops what it had not read: acks
        included, and it redelivers what was stored (seen in tests: ~90 of 112)."""
        if not self.manual_ack:
            return
        try:  # a filter never subscribed: the UNSUBACK is the answer, nothing changes
            await asyncio.wait_for(client.unsubscribe(f"{self.o.topic_prefix}/-/sync"), 10.0)
        except Exception as exc:  # gone or slow: the broker redelivers, the dedupe is fresh
            log.warning("%s: the broker did not confirm the last acks: %s", self.name, exc)

    def _receive(self, client: aiomqtt.Client, msg: Received) -> None:
        self.handle(msg.topic, msg.payload)
        if self.manual_ack and msg.qos > 0:
            self._acks.append((client, msg.mid, msg.qos))

    async def _next_message(self, client: aiomqtt.Client) -> Received:
        """The next message. Unlike aiomqtt's iterator, which loses the message its
        getter took off the queue when the task is cancelled (one report at every
        SIGTERM), the getter is kept and `_drain` handles what it took. A message
        already queued is taken without a getter task (most of them in a burst)."""
        queue = client._queue  # noqa: SLF001
        if self._getter is None and queue.qsize():
            return queue.get_nowait()
        if self._getter is None:
            self._getter = asyncio.ensure_future(client._queue.get())  # noqa: SLF001
        gone = client._disconnected  # noqa: SLF001
        await asyncio.wait((self._getter, gone), return_when=asyncio.FIRST_COMPLETED)
        if self._getter.done():
            getter, self._getter = self._getter, None
            return getter.result()
        raise aiomqtt.MqttError("Disconnected during message iteration") from gone.exception()

    # -- the connection ---------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        o = self.o
        host, port = parse_broker(o.broker, o.tls)
        client_id = o.client_id or f"fleettui-{socket.gethostname()}-{o.name}"[:64]
        kw: dict[str, Any] = {}
        if o.protocol == 5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            kw["protocol"] = aiomqtt.ProtocolVersion.V5
            props = Properties(PacketTypes.CONNECT)
            if self.manual_ack:  # unacknowledged until stored: lift the broker's window (20)
                props.ReceiveMaximum = 65535
            if o.persistent_session:
                props.SessionExpiryInterval = o.session_expiry_s
                kw["clean_start"] = False
            else:
                kw["clean_start"] = True
            kw["properties"] = props
        else:
            kw["protocol"] = aiomqtt.ProtocolVersion.V311
            kw["clean_session"] = not o.persistent_session
        client = aiomqtt.Client(  # tuned: buffered reads, light messages (mqtt_client.py)
            host,
            port,
            identifier=client_id,
            username=o.username or None,
            password=resolve_password(o.password, o.password_env),
            tls_params=tls_parameters(o.tls, o.tls_ca, o.tls_cert, o.tls_key),
            max_queued_incoming_messages=o.max_queued_messages,
            **kw,
        )
        client._client.manual_ack_set(self.manual_ack)  # noqa: SLF001 (aiomqtt has no option)
        return tune(client)

    async def run(self, sink: Sink) -> None:
        backoff = Backoff.capped(0.5, self.o.reconnect_max_s)
        client: aiomqtt.Client | None = None
        flusher = asyncio.create_task(self._flush_loop(sink))
        try:
            while True:
                client = self._client()
                try:
                    async with client:
                        await client.subscribe(self.report_filter, qos=self.o.qos)
                        await client.subscribe(self.status_filter, qos=1)
                        log.info(
                            "%s: subscribed to %s on %s",
                            self.name,
                            self.report_filter,
                            self.o.broker,
                        )
                        self.connected.set()
                        backoff.started()  # reset only if this connection stays up
                        n = 0
                        try:
                            while True:
                                self._receive(client, await self._next_message(client))
                                n += 1
                                if self.queued_reports >= self.o.max_batch_reports:
                                    await self.flush(sink)
                                elif n % YIELD_EVERY == 0:  # queued messages need no await:
                                    await asyncio.sleep(0)  # let the loop read and flush
                        except asyncio.CancelledError:
                            # stopping: store what was received and acknowledge it before
                            # the connection closes (nothing redelivered, nothing lost);
                            # what comes after stays unacknowledged, for the next daemon
                            self._drain(client)
                            flusher.cancel()
                            await asyncio.gather(flusher, return_exceptions=True)
                            await self.flush(sink)
                            await self._settle()
                            await self._acks_processed(client)
                            raise
                        except BaseException:
                            self._drain(client)  # redelivered on reconnect: the dedupe drops it
                            raise
                except aiomqtt.MqttError as exc:
                    self._drain(client)  # received (and acked) before the connection went
                    self.connected.clear()
                    if stop_requested():  # the disconnect failed while stopping: still stop
                        raise asyncio.CancelledError from exc
                    delay = backoff.next_delay()
                    log.warning(
                        "%s: broker %s: %s; retrying in %.1f s",
                        self.name,
                        self.o.broker,
                        exc,
                        delay,
                    )
                    await self._record_failure(sink, f"broker {self.o.broker}: {exc}")
                    await asyncio.sleep(delay)
        finally:
            if client is not None and not self.manual_ack:  # acked on receipt: keep it
                self._drain(client)
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            await self.flush(sink)
            await self._settle()

    def _drain(self, client: aiomqtt.Client) -> None:
        """Handle what the client received (and acked) but we have not read yet, so a
        stop or a lost connection does not drop it; the final flush writes it."""
        n = 0
        getter, self._getter = self._getter, None
        if getter is not None:
            if getter.done() and not getter.cancelled():
                self._receive(client, getter.result())
                n += 1
            getter.cancel()
        queue = getattr(client, "_queue", None)  # aiomqtt 2.x keeps received messages here
        while queue is not None:
            try:
                msg = queue.get_nowait()
            except (asyncio.QueueEmpty, AttributeError):
                break
            self._receive(client, msg)
            n += 1
        if n:
            log.info("%s: handled %d messages left in the client's queue", self.name, n)

    async def _record_failure(self, sink: Sink, error: str) -> None:
        """A failing run (ok = false): `fleettui status` and /metrics show the error;
        CollectorSilent keeps counting from the last report received (and, for a source
        that never connected, from its first failure: hence the declared interval)."""
        try:
            await sink(
                [
                    make_batch(
                        "collector_runs",
                        {
                            "ts": epoch_col([self.clock()]),
                            "collector": [self.name],
                            "duration_ms": [0.0],
                            "ok": [False],
                            "rows": [0],
                            "error": [error[:500]],
                            "skipped": [0],
                            "interval_s": [self.o.report_interval_s],
                        },
                    )
                ]
            )
        except Exception as exc:  # the store said no: the log line above still says why
            log.debug("%s: recording the failure: %s", self.name, exc)

    async def _flush_loop(self, sink: Sink) -> None:
        while True:
            await asyncio.sleep(self.o.flush_interval_s)
            await self._flush_tick(sink)
            now = self.clock()
            if now - self._evicted_at >= 60.0:
                self._evicted_at = now
                self.evict_idle_hosts(now)

    async def _flush_tick(self, sink: Sink) -> None:
        if self._committing and self._held < HOLD_FLUSHES:
            # the writer has not committed the last hand-in yet: let this one grow
            # (each write's fixed costs, per statement and per table, are paid once
            # for more reports); max_batch_reports still bounds it
            self._held += 1
            return
        self._held = 0
        await self.flush(sink)


def _same_frames(checked: FrameColumns | None, frames: list[Frame]) -> bool:
    """Whether `checked` was read from exactly these frames, in this order."""
    return (
        checked is not None
        and len(checked.frames) == len(frames)
        and all(map(operator.is_, checked.frames, frames))
    )


@register("mqtt")
def _mqtt_from_config(options: Mapping[str, Any], where: str) -> MqttSource:
    return MqttSource(parse_options(MqttOptions, options, where))
