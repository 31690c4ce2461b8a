"""Sending alerts out: an MQTT topic (aiomqtt) and Prometheus Alertmanager's API v2.

Both are optional. MQTT gets one JSON message per transition (fired,
resolved); Alertmanager gets the list of firing alerts again every
`resend_s` (it forgets alerts whose `endsAt` passes) and each resolution once,
as Prometheus does. Failures are retried with exponential backoff and end in
one log line: delivery never stops the engine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any

import aiomqtt

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


async def _retrying(what: str, attempt_once, retries: int, backoff_s: float) -> bool:
    """Call `attempt_once()` until it succeeds or `retries` retries are spent."""
    for i in range(retries + 1):
        try:
            await attempt_once()
            return True
        except _Permanent as exc:
            log.warning("%s: %s (not retried)", what, exc)
            return False
        except Exception as exc:
            if i == retries:
                log.warning("%s failed after %d attempt(s): %s", what, i + 1, exc)
                return False
            await asyncio.sleep(backoff_s * (2**i))
    return False


class _Permanent(Exception):
    """A failure that retrying will not fix (a 4xx answer)."""


class AlertmanagerDelivery:
    def __init__(
        self,
        url: str,
        *,
        valid_s: float = 240.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 5.0,
        generator_url: str | None = None,
    ):
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.valid_s = valid_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.generator_url = generator_url
        self.sent_batches = 0
        self.failed_batches = 0

    def body(self, notifications: list[Notification], now: datetime) -> list[dict[str, Any]]:
        return [
            alertmanager_alert(n.alert, now, self.valid_s, self.generator_url)
            for n in notifications
        ]

    def _post(self, data: bytes) -> None:
        req = urllib.request.Request(
            self.url, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code != 429:
                raise _Permanent(f"HTTP {exc.code} from {self.url}") from exc
            raise RuntimeError(f"HTTP {exc.code} from {self.url}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RuntimeError(f"{self.url}: {reason}") from exc

    async def send(self, notifications: list[Notification], now: datetime) -> None:
        if not notifications:
            return
        data = json.dumps(self.body(notifications, now)).encode()

        async def once() -> None:
            await asyncio.to_thread(self._post, data)

        ok = await _retrying(f"alertmanager {self.url}", once, self.retries, self.backoff_s)
        if ok:
            self.sent_batches += 1
        else:
            self.failed_batches += 1


class MqttDelivery:
    """Publishes fired and resolved alerts as JSON, QoS 1 by default."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        topic: str = "fleettui/alerts/{severity}/{rule}",
        qos: int = 1,
        retries: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 5.0,
    ):
        self.host, self.port, self.topic, self.qos = host, port, topic, qos
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self.published = 0

    def topic_for(self, a: Instance) -> str:
        return self.topic.format(rule=a.rule, severity=a.severity, scope=a.scope, state=a.state)

    async def send(self, notifications: list[Notification], now: datetime) -> None:
        msgs = [
            (self.topic_for(n.alert), json.dumps(mqtt_payload(n)))
            for n in notifications
            if n.reason in ("fired", "resolved")
        ]
        if not msgs:
            return

        async def once() -> None:
            async with aiomqtt.Client(self.host, self.port, timeout=self.timeout_s) as client:
                for topic, payload in msgs:
                    await client.publish(topic, payload, qos=self.qos)
            self.published += len(msgs)

        await _retrying(f"mqtt {self.host}:{self.port}", once, self.retries, self.backoff_s)


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
