"""TLS and username/password: agent and daemon through a Mosquitto that requires both."""

from __future__ import annotations

import asyncio
import time

import pytest

from collectors.mqtt_source import MqttOptions, MqttSource
from collectors.nvml.collector import NvmlCollector
from collectors.nvml.fake import SimStates
from collectors.nvml.library import open_library
from collectors.sim.model import SimModel
from fleettui.agent import Agent, AgentOptions
from tests.services import require_binary
from tests.services.mosquitto import Broker
from tests.test_mqtt_e2e import wait_for

pytestmark = [pytest.mark.integration]


@pytest.fixture
def secure_broker(tmp_path):
    require_binary("openssl", "openssl")
    require_binary("mosquitto_passwd", "mosquitto")
    broker = Broker(
        tmp_path / "tls", tls=True, users={"agent-1": "s3cret-agent", "daemon": "s3cret-daemon"}
    )
    broker.start()
    yield broker
    broker.stop()


def make_agent(broker: Broker, host: str, states: SimStates, **auth) -> Agent:
    o = AgentOptions(
        broker=broker.address,
        interval_s=0.2,
        max_backoff_s=0.3,
        tls=True,
        tls_ca=str(broker.ca_path),
        **auth,
    )
    lib = open_library("fake", host=host, states=states)
    return Agent(o, NvmlCollector(lib, events=False), host=host)


async def test_tls_and_passwords(secure_broker: Broker, monkeypatch):
    monkeypatch.setenv("FT_TEST_MQTT_PASSWORD", "s3cret-daemon")
    states = SimStates(SimModel(start=time.time()))
    src = MqttSource(
        MqttOptions(
            broker=secure_broker.address,
            tls=True,
            tls_ca=str(secure_broker.ca_path),
            username="daemon",
            password_env="FT_TEST_MQTT_PASSWORD",
            flush_interval_s=0.1,
            reconnect_max_s=0.5,
        )
    )

    async def sink(batches):
        return None

    src_task = asyncio.create_task(src.run(sink))
    good = make_agent(
        secure_broker, "hgx-03-n1", states, username="agent-1", password="s3cret-agent"
    )
    wrong = make_agent(secure_broker, "hgx-03-n2", states, username="agent-1", password="guess")
    stop = asyncio.Event()
    tasks = [asyncio.create_task(a.run(stop, drain_s=0.1)) for a in (good, wrong)]
    await asyncio.wait_for(src.connected.wait(), 10)
    await wait_for(lambda: src.stats.received >= 3, 15, "reports over TLS")
    stop.set()
    await asyncio.gather(*tasks)
    src_task.cancel()
    await asyncio.gather(src_task, return_exceptions=True)
    assert good.connects >= 1 and good.sent >= 3
    assert wrong.connects == 0 and wrong.sent == 0 and wrong.buffer  # refused, kept buffering
    assert src.stats.rejected == 0


async def test_plain_client_cannot_talk_to_the_tls_listener(secure_broker: Broker):
    states = SimStates(SimModel(start=time.time()))
    o = AgentOptions(
        broker=secure_broker.address,
        interval_s=0.2,
        max_backoff_s=0.3,
        username="agent-1",
        password="s3cret-agent",
    )  # no --tls
    a = Agent(
        o,
        NvmlCollector(open_library("fake", host="hgx-03-n1", states=states), events=False),
        host="hgx-03-n1",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop, drain_s=0.1))
    await asyncio.sleep(1.5)
    stop.set()
    await task
    assert a.connects == 0 and a.sent == 0
