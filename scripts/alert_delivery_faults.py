"""Alert delivery under receiver faults, as evidence (not a test): run from a checkout's root.

    python scripts/alert_delivery_faults.py

1. MQTT: an alert fires while the broker is down (8 s), then the broker returns and
   the engine keeps evaluating: is the fired message ever received, and when?
2. An Alertmanager that trickles one byte a second: how long does the engine's tick
   take, and what do the attempts say?
3. Alertmanager down (5 s) while an alert fires, then up, the engine ticking every
   15 s: when does Alertmanager hold the alert?

Works against older checkouts too (their delivery took `retries`), for before/after.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, ".")

import aiomqtt  # noqa: E402

from fleettui.alerts.delivery import AlertmanagerDelivery, MqttDelivery  # noqa: E402
from fleettui.alerts.engine import AlertEngine  # noqa: E402
from fleettui.alerts.rules import load_rules_text  # noqa: E402
from storage.batch import make_batch  # noqa: E402
from storage.store import Store  # noqa: E402
from tests.services.alertmanager import AlertmanagerServer  # noqa: E402
from tests.services.mosquitto import Broker  # noqa: E402

RULE = """
[[rules]]
name = "SlowTokens"
scope = "endpoint"
severity = "critical"
expr = { metric = "itl_p99_ms", agg = "last", over = "1m", op = ">", threshold = "itl_target_ms" }
"""
# delivery since issue 11 queues and retries until confirmed; before, `retries` bounded it
QUEUED = "retries" not in inspect.signature(AlertmanagerDelivery.__init__).parameters


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def options(**kw):
    if QUEUED:
        kw.pop("retries", None)
    return kw


def firing_store() -> Store:
    s = Store.open(":memory:")
    s.write(
        [
            make_batch(
                "endpoints",
                {"endpoint": ["ep-a"], "tenant": ["t1"], "model": ["m"], "itl_target_ms": [50.0]},
            )
        ]
    )
    slow(s)
    return s


def slow(s: Store) -> None:
    s.write(
        [
            make_batch(
                "latency_samples",
                {
                    "ts": [utcnow()],
                    "endpoint": ["ep-a"],
                    "tenant": ["t1"],
                    "model": ["m"],
                    "itl_p99_ms": [80.0],
                },
            )
        ]
    )


def engine(s: Store, delivery) -> AlertEngine:
    return AlertEngine(
        s, load_rules_text(RULE, "faults.toml"), interval_s=15, resend_s=60, delivery=delivery
    )


async def close(delivery) -> None:
    if hasattr(delivery, "close"):
        await delivery.close(0.5)


async def mqtt_outage() -> str:
    broker = Broker(Path(tempfile.mkdtemp()) / "b", persistence=True)
    broker.start()

    def subscriber() -> aiomqtt.Client:
        return aiomqtt.Client(broker.host, broker.port, identifier="sub", clean_session=False)

    async with subscriber() as sub:
        await sub.subscribe("fleettui/alerts/#", qos=1)
    broker.stop()
    d = MqttDelivery(broker.host, broker.port, **options(retries=3, backoff_s=1.0, timeout_s=2.0))
    s = firing_store()
    e = engine(s, d)
    t0 = time.monotonic()
    await e.tick(utcnow())
    tick_s = time.monotonic() - t0
    await asyncio.sleep(8)
    broker.start()
    back = time.monotonic()
    got: list[str] = []
    first: list[float] = []
    async with subscriber() as sub:

        async def collect() -> None:
            async for m in sub.messages:
                got.append(json.loads(m.payload)["event"])
                first.append(time.monotonic() - back)

        task = asyncio.create_task(collect())
        for _ in range(4):  # still firing; the engine evaluates on
            await asyncio.sleep(5)
            slow(s)
            await e.tick(utcnow())
        await asyncio.sleep(2)
        task.cancel()
    await close(d)
    broker.stop()
    when = f"{first[0]:.1f} s" if first else "never"
    return (
        f"MQTT: fired during an 8 s broker outage (first tick took {tick_s:.1f} s); after "
        f"the broker is back (26 s watched) received {got}, first after {when}"
    )


async def trickle() -> str:
    async def handle(reader, writer):
        try:
            await reader.read(100)
            for b in b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 1000:
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(1.0)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    d = AlertmanagerDelivery(url, **options(retries=3, backoff_s=1.0, timeout_s=5.0))
    e = engine(firing_store(), d)
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(e.tick(utcnow()), 60)
        took = f"{time.monotonic() - t0:.2f} s"
    except TimeoutError:
        took = "> 60 s (still stuck; cut by this script)"
    if QUEUED:
        await asyncio.sleep(12)
    stats = getattr(d, "stats", None)
    await close(d)
    server.close()
    detail = (
        f"failed attempts in the next 12 s: {stats.attempts_failed}, last error: {stats.last_error}"
        if stats
        else f"failed_batches={d.failed_batches}"
    )
    return f"trickling Alertmanager (1 byte/s): engine tick took {took}; {detail}"


async def alertmanager_outage() -> str:
    am = AlertmanagerServer(Path(tempfile.mkdtemp()) / "am")
    am.start()
    am.stop()
    d = AlertmanagerDelivery(am.url, **options(retries=3, backoff_s=1.0, timeout_s=5.0))
    s = firing_store()
    e = engine(s, d)
    await e.tick(utcnow())
    await asyncio.sleep(5)
    am.start()
    back = time.monotonic()
    seen = None
    next_tick = back + 15
    while time.monotonic() - back < 90:
        if time.monotonic() >= next_tick:
            next_tick += 15
            slow(s)
            await e.tick(utcnow())
        if [a for a in am.alerts() if a["labels"].get("alertname") == "SlowTokens"]:
            seen = time.monotonic() - back
            break
        await asyncio.sleep(0.5)
    await close(d)
    am.stop()
    when = f"{seen:.1f} s" if seen is not None else "never (90 s watched)"
    return (
        f"Alertmanager down for 5 s while the alert fired, then up: Alertmanager holds it "
        f"after {when} (engine ticking every 15 s)"
    )


async def main() -> None:
    print("delivery:", "queued until confirmed" if QUEUED else "bounded retries (before)")
    for measure in (mqtt_outage, trickle, alertmanager_outage):
        print("-", await measure())


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    asyncio.run(main())
