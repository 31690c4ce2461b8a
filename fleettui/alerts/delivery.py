"""Sending alerts out: an MQTT topic (aiomqtt) and Prometheus Alertmanager's API v2.

Both are optional. MQTT gets one JSON message per transition (fired,
resolved); Alertmanager gets the list of firing alerts again every
`resend_s` (it forgets alerts whose `endsAt` passes) and each resolution once,
as Prometheus does.

`send()` only queues: each target has a bounded queue and its own sender task,
so a receiver that is down or slow never holds up the engine. A notification
counts as sent only once the receiver confirmed it: an MQTT publish at QoS 1
or 2 acknowledged by the broker (at QoS 0, written to the socket), an
Alertmanager POST answered 2xx. Until then it is retried with exponential
backoff (`backoff_s` doubled up to `max_backoff_s`), for ever; each attempt has
a deadline on the whole exchange. A full queue drops its oldest entry, counted
in `dropped` and logged. An HTTP 4xx other than 429 will not get better by
retrying: those alerts are dropped with one log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiomqtt

from collectors.backoff import Backoff, stop_requested
from fleettui.alerts import http_post
from fleettui.alerts.engine import Instance, Notification

log = logging.getLogger("fleettui.alerts.delivery")

TOPIC_FIELDS = ("rule", "severity", "scope", "state")


def iso(ts: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds, as Alertmanager and most consumers parse it."""
    return None if ts is None else ts.isoformat(timespec="milliseconds") + "Z"


def mqtt_payload(n: Notification) -> dict[str, Any]:
    a = n.alert
    return {
        "alert_id": a.alert_id,
        "rule": a.rule,
        "event": n.reason,
        "state": a.state,
        "scope": a.scope,
        "scope_key": a.scope_key,
        "severity": a.severity,
        "started_at": iso(a.started_at),
        "fired_at": iso(a.fired_at),
        "resolved_at": iso(a.resolved_at),
        "value": a.last_value,
        "peak_value": a.peak_value,
        "threshold": a.threshold,
        "labels": a.labels,
        "annotations": a.annotations,
    }


def alertmanager_alert(
    a: Instance, now: datetime, valid_s: float, generator_url: str | None = None
) -> dict[str, Any]:
    """One element of the POST /api/v2/alerts body (postableAlert)."""
    ends = a.resolved_at if a.state == "resolved" else now + timedelta(seconds=valid_s)
    out: dict[str, Any] = {
        "labels": {k: str(v) for k, v in sorted(a.labels.items())},
        "annotations": {k: str(v) for k, v in sorted(a.annotations.items())},
        "startsAt": iso(a.fired_at or a.started_at),
        "endsAt": iso(ends),
    }
    if generator_url:
        out["generatorURL"] = generator_url
    return out


@dataclass
class DeliveryStats:
    """What /metrics and `fleettui status` show for one target."""

    confirmed: int = 0  # notifications the receiver acknowledged
    attempts_failed: int = 0  # attempts that ended without confirmation
    dropped: int = 0  # given up: queue full, or refused for good (HTTP 4xx)
    last_error: str | None = None


class _Sender:
    """A bounded queue of notifications and the task that delivers them, retrying with
    backoff until the receiver confirms. Subclasses implement `_deliver(items)`."""

    kind = "target"

    def __init__(
        self, *, max_queued: int, backoff_s: float, max_backoff_s: float, timeout_s: float
    ):
        self.max_queued = max_queued
        self.backoff_s, self.max_backoff_s, self.timeout_s = backoff_s, max_backoff_s, timeout_s
        self.stats = DeliveryStats()
        # key -> (notification, the engine's `now` when queued, monotonic time queued)
        self._queue: OrderedDict[str, tuple[Notification, datetime, float]] = OrderedDict()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None

    @property
    def target(self) -> str:
        raise NotImplementedError

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _key(self, n: Notification) -> str:
        raise NotImplementedError

    def _wanted(self, n: Notification) -> bool:
        return True

    async def send(self, notifications: list[Notification], now: datetime) -> None:
        """Queue `notifications`; returns at once (delivery happens in the background)."""
        added = 0
        for n in notifications:
            if not self._wanted(n):
                continue
            key = self._key(n)
            self._queue.pop(key, None)
            self._queue[key] = (n, now, time.monotonic())
            added += 1
        over = len(self._queue) - self.max_queued
        if over > 0:
            for _ in range(over):
                key, (n, _, _) = self._queue.popitem(last=False)
                self.stats.dropped += 1
            log.warning(
                "%s: queue full (%d): dropped the %d oldest notification(s), last %s %s",
                self.target,
                self.max_queued,
                over,
                n.reason,
                n.alert.alert_id,
            )
        if added:
            self._idle.clear()
            self._wake.set()
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name=f"alert delivery {self.target}")

    async def _run(self) -> None:
        backoff = Backoff.capped(self.backoff_s, self.max_backoff_s)
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._deliver()
                backoff.succeeded()
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if stop_requested():  # the client's exit failed while stopping: still stop
                    raise asyncio.CancelledError from exc
                self.stats.attempts_failed += 1
                self.stats.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                delay = backoff.next_delay()
                log.warning(
                    "%s: delivery failed (%d queued): %s; retrying in %.1f s",
                    self.target,
                    len(self._queue),
                    self.stats.last_error,
                    delay,
                )
            await asyncio.sleep(delay)

    async def _deliver(self) -> None:
        raise NotImplementedError

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued is confirmed (True) or `timeout_s` passes."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout_s: float = 2.0) -> None:
        """Give what is queued `timeout_s` to go out, then stop; says what was left."""
        if self._queue and not await self.drain(timeout_s):
            log.warning(
                "%s: %d notification(s) not confirmed at shutdown", self.target, len(self._queue)
            )
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class AlertmanagerDelivery(_Sender):
    kind = "alertmanager"

    def __init__(
        self,
        url: str,
        *,
        valid_s: float = 240.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 5.0,
        max_queued: int = 10_000,
        generator_url: str | None = None,
    ):
        super().__init__(
            max_queued=max_queued,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            timeout_s=timeout_s,
        )
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.valid_s = valid_s
        self.generator_url = generator_url
        self.sent_batches = 0  # POSTs answered 2xx

    @property
    def target(self) -> str:
        return f"alertmanager {self.url}"

    def _key(self, n: Notification) -> str:
        # the newest word about an alert replaces an unsent older one (resolved after fired)
        return n.alert.alert_id

    def body(self, notifications: list[Notification], now: datetime) -> list[dict[str, Any]]:
        return [
            alertmanager_alert(n.alert, now, self.valid_s, self.generator_url)
            for n in notifications
        ]

    async def _deliver(self) -> None:
        items = list(self._queue.items())
        mono = time.monotonic()
        # endsAt counts from when the POST goes out, not from when it was first queued
        data = json.dumps(
            [
                alertmanager_alert(
                    n.alert,
                    now + timedelta(seconds=mono - queued),
                    self.valid_s,
                    self.generator_url,
                )
                for _, (n, now, queued) in items
            ]
        ).encode()
        try:
            status = await http_post.post(self.url, data, deadline_s=self.timeout_s)
        except http_post.HttpError as exc:
            raise RuntimeError(str(exc)) from None
        if 200 <= status < 300:
            self._forget(items)
            self.sent_batches += 1
            self.stats.confirmed += len(items)
            return
        if 400 <= status < 500 and status != 429:
            self._forget(items)
            self.stats.dropped += len(items)
            self.stats.last_error = f"HTTP {status} from {self.url}"
            log.warning(
                "%s: HTTP %d: %d alert(s) refused (not retried)", self.target, status, len(items)
            )
            return
        raise RuntimeError(f"HTTP {status} from {self.url}")

    def _forget(self, items: list[tuple[str, tuple[Notification, datetime, float]]]) -> None:
        for key, entry in items:
            if self._queue.get(key) is entry:  # unless a newer word came in meanwhile
                del self._queue[key]


class MqttDelivery(_Sender):
    """Publishes fired and resolved alerts as JSON, QoS 1 by default, over one
    connection kept open while there is something to send."""

    kind = "mqtt"

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        topic: str = "fleettui/alerts/{severity}/{rule}",
        qos: int = 1,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 5.0,
        max_queued: int = 10_000,
        tls_params: aiomqtt.TLSParameters | None = None,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
    ):
        super().__init__(
            max_queued=max_queued,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            timeout_s=timeout_s,
        )
        self.host, self.port, self.topic, self.qos = host, port, topic, qos
        self.tls_params, self.username, self.password = tls_params, username, password
        self.client_id = client_id
        self.published = 0  # messages confirmed

    @property
    def target(self) -> str:
        return f"mqtt {self.host}:{self.port}"

    def topic_for(self, a: Instance) -> str:
        return self.topic.format(rule=a.rule, severity=a.severity, scope=a.scope, state=a.state)

    def _wanted(self, n: Notification) -> bool:
        return n.reason in ("fired", "resolved")

    def _key(self, n: Notification) -> str:
        return f"{n.alert.alert_id}|{n.reason}"  # both the fired and the resolved message

    async def _deliver(self) -> None:
        async with aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id or None,
            username=self.username,
            password=self.password,
            tls_params=self.tls_params,
            timeout=self.timeout_s,
        ) as client:
            while self._queue:
                key, entry = next(iter(self._queue.items()))
                n = entry[0]
                # returns once the broker acknowledged it (PUBACK at QoS 1)
                await client.publish(
                    self.topic_for(n.alert),
                    json.dumps(mqtt_payload(n)),
                    qos=self.qos,
                    timeout=self.timeout_s,
                )
                if self._queue.get(key) is entry:
                    del self._queue[key]
                self.published += 1
                self.stats.confirmed += 1


class FanOut:
    """Several deliveries; one failing does not hold up the others."""

    def __init__(self, targets: list[Any]):
        self.targets = targets

    async def send(self, notifications: list[Notification], now: datetime) -> None:
        results = await asyncio.gather(
            *(t.send(notifications, now) for t in self.targets), return_exceptions=True
        )
        for t, r in zip(self.targets, results, strict=True):
            if isinstance(r, BaseException):
                log.warning("alert delivery to %s failed: %s", type(t).__name__, r)

    async def drain(self, timeout_s: float) -> bool:
        done = await asyncio.gather(*(t.drain(timeout_s) for t in self.targets))
        return all(done)

    async def close(self, timeout_s: float = 2.0) -> None:
        await asyncio.gather(*(t.close(timeout_s) for t in self.targets), return_exceptions=True)
