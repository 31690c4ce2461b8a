"""Two daemons in one MQTT 5 shared-subscription group split the reports between them;
both still see every host's presence (status topics are not shared)."""

from __future__ import annotations

import asyncio
import time

import aiomqtt
import pytest

from collectors.mqtt_source import MqttOptions, MqttSource
from collectors.nvml.report import encode_status
from tests.services.mosquitto import Broker, mosquitto  # noqa: F401  (fixture)
from tests.test_mqtt_e2e import wait_for
from tests.test_mqtt_source import reports, states  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration]


async def test_shared_group_splits_reports(mosquitto: Broker, states):  # noqa: F811
    seen: dict[str, list[int]] = {"a": [], "b": []}
    sources = []
    for name in ("a", "b"):
        src = MqttSource(
            MqttOptions(
                name=name,
                broker=mosquitto.address,
                shared_group="daemons",
                client_id=f"daemon-{name}",
                flush_interval_s=0.1,
                max_age_s=1e9,
            ),
            on_report=lambda r, name=name: seen[name].append(r.seq),
        )
        sources.append(src)

    async def sink(batches):
        return None

    tasks = [asyncio.create_task(s.run(sink)) for s in sources]
    await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in sources)), 10)
    payloads = reports(states, "hgx-04-n4", 1, processes_every=10**6)
    base = payloads[0].decode()
    n = 60
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="pub") as pub:
        await pub.publish(
            "fleettui/hgx-04-n4/status",
            encode_status("online", ts=time.time(), boot="b1"),
            qos=1,
            retain=True,
        )
        for seq in range(n):
            await pub.publish(
                "fleettui/hgx-04-n4/report", base.replace('"seq":0', f'"seq":{seq}'), qos=1
            )
    await wait_for(lambda: len(seen["a"]) + len(seen["b"]) >= n, 10, "all reports")
    await wait_for(lambda: all(s.stats.status_messages for s in sources), 5, "status at both")
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert seen["a"] and seen["b"]  # the broker shared the work
    assert sorted(seen["a"] + seen["b"]) == list(range(n))  # each report to one daemon
    assert all(s.stats.rejected == 0 for s in sources)
