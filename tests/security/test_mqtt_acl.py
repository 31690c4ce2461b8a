"""MQTT access: a real Mosquitto with passwords and the documented pattern ACL
(fixtures/mosquitto-acl.example) refuses an agent publishing for another host; the
daemon's MQTT source also refuses a report naming GPUs another host already owns."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from collectors.mqtt_source import MqttOptions, MqttSource
from storage.store import Store
from tests.services.mosquitto import Broker
from tests.test_mqtt_source import NOW, reports, states  # noqa: F401 - a fixture

ACL = (Path(__file__).resolve().parents[2] / "fixtures" / "mosquitto-acl.example").read_text()
USERS = {"fleettui-daemon": "daemon-pw", "hgx-01-n1": "pw-1", "hgx-01-n2": "pw-2"}


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("acl-broker"), users=USERS, acl=ACL)
    broker.start()
    yield broker
    broker.stop()


async def _exchange(broker: Broker, user: str, topics: list[str]) -> set[str]:
    """`user` publishes one QoS 1 message on each topic; returns the topics the
    daemon's user received."""
    got: set[str] = set()
    async with aiomqtt.Client(
        broker.host, broker.port, username="fleettui-daemon", password=USERS["fleettui-daemon"]
    ) as sub:
        await sub.subscribe("fleettui/#", qos=1)
        async with aiomqtt.Client(
            broker.host, broker.port, username=user, password=USERS[user]
        ) as pub:
            for t in topics:
                await pub.publish(t, b"{}", qos=1)
            await pub.publish(f"fleettui/{user}/status", b"end", qos=1)

        async def drain() -> None:
            async for m in sub.messages:
                got.add(str(m.topic))
                if m.payload == b"end":
                    return

        await asyncio.wait_for(drain(), timeout=10)
    return got


async def test_broker_refuses_an_agent_publishing_for_another_host(acl_broker):
    got = await _exchange(
        acl_broker,
        "hgx-01-n1",
        [
            "fleettui/hgx-01-n1/report",  # its own: delivered
            "fleettui/hgx-01-n2/report",  # another host's: refused by the broker
            "fleettui/hgx-01-n2/status",
            "fleettui/other/report",
        ],
    )
    assert got == {"fleettui/hgx-01-n1/report", "fleettui/hgx-01-n1/status"}


async def test_broker_refuses_wrong_passwords_and_anonymous(acl_broker):
    for user, pw in (("hgx-01-n1", "wrong"), (None, None)):
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(acl_broker.host, acl_broker.port, username=user, password=pw):
                pass


def test_daemon_rejects_a_report_for_gpus_another_host_owns(states):  # noqa: F811
    src, store = MqttSource(MqttOptions(), clock=lambda: NOW), Store.open(":memory:")
    genuine = reports(states, "hgx-04-n2", 2)
    src.handle("fleettui/hgx-04-n2/report", genuine[0])
    forged = json.loads(genuine[1])
    forged["host"] = "evil-01"  # the topic's host, but hgx-04-n2's GPUs
    src.handle("fleettui/evil-01/report", json.dumps(forged).encode())
    src.handle("fleettui/hgx-04-n2/report", genuine[1])  # the owner goes on as before
    store.write(src.take_batches()[0])
    rows = store.con.execute("SELECT host, reason FROM rejects").fetchall()
    assert len(rows) == 1 and rows[0][0] == "evil-01"
    assert "belongs to host 'hgx-04-n2'" in rows[0][1]
    hosts = store.con.execute("SELECT DISTINCT host FROM gpu_samples").fetchall()
    assert hosts == [("hgx-04-n2",)]
    assert store.con.execute("SELECT count(DISTINCT ts) FROM gpu_samples").fetchone()[0] == 2
