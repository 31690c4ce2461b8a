"""`fleettui agent`: bounded buffer, birth and Will, CLI, no-NVML message."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time

import aiomqtt
import pytest

from collectors.nvml.collector import NvmlCollector
from collectors.nvml.fake import SimStates
from collectors.nvml.library import open_library
from collectors.nvml.report import decode
from collectors.sim.model import SimModel
from fleettui.agent import Agent, AgentOptions, add_agent_parser, options_from_args
from tests.services.mosquitto import Broker, free_port, mosquitto  # noqa: F401  (fixture)
from tests.test_mqtt_e2e import wait_for


def agent(broker: str, host: str = "hgx-03-n1", **options) -> Agent:
    states = SimStates(SimModel(start=time.time()))
    o = AgentOptions(broker=broker, **options)
    lib = open_library("fake", host=host, states=states)
    return Agent(o, NvmlCollector(lib, events=False), host=host)


def test_buffer_is_bounded_drops_oldest_and_counts_in_later_reports():
    a = agent("127.0.0.1:1", buffer_reports=3)
    for _ in range(5):
        a.enqueue(a.poll_once())
    assert [seq for seq, _ in a.buffer] == [2, 3, 4]
    assert a.dropped == 2
    last = decode(a.buffer[-1][1])
    assert (last.seq, last.dropped) == (4, 1)  # dropped as counted when seq 4 was made
    a.enqueue(a.poll_once())  # made while 2 were dropped; queuing it drops a third
    assert decode(a.buffer[-1][1]).dropped == 2 and a.dropped == 3
    a.collector.close()


def test_inventory_rides_with_the_first_report_and_every_n():
    a = agent("127.0.0.1:1", inventory_every=3)
    invs = []
    for _ in range(7):
        payload = a.poll_once()
        invs.append(decode(payload).inv is not None)
        a.enqueue(payload)
    assert invs == [True, False, False, True, False, False, True]
    a.collector.close()


async def test_unreachable_broker_buffers_without_crashing():
    a = agent(f"127.0.0.1:{free_port()}", interval_s=0.1, max_backoff_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop, drain_s=0.1))
    await asyncio.sleep(1.0)
    stop.set()
    await task
    assert a.connects == 0 and a.sent == 0 and len(a.buffer) >= 5


@pytest.mark.integration
async def test_birth_online_then_will_offline_on_abrupt_loss(mosquitto: Broker):  # noqa: F811
    a = agent(mosquitto.address, interval_s=0.2, max_backoff_s=0.3)
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))
    await asyncio.wait_for(a.connected.wait(), 10)
    states: list[str] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="will-watch") as w:
        await w.subscribe(a.status_topic, qos=1)

        async def watch():
            async for msg in w.messages:
                states.append((json.loads(msg.payload)["state"], msg.retain))
                if len(states) == 3:
                    return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        # the agent's TCP connection dies without DISCONNECT: the broker publishes the Will
        a.client._client.socket().shutdown(socket.SHUT_RDWR)
        await asyncio.wait_for(watcher, 15)
    # retained "online" on subscribe, the Will "offline", then the new birth after reconnect
    assert [s for s, _ in states] == ["online", "offline", "online"]
    assert states[0][1] is True  # the first came from the retained store
    # `connects` counts a connection once its birth is acknowledged, and the broker may
    # deliver the birth to the watcher before its PUBACK reaches the agent
    await wait_for(lambda: a.connects == 2, 10, "the second connection's acknowledged birth")
    assert a.connects == 2
    stop.set()
    await task
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="after") as c:
        await c.subscribe(a.status_topic, qos=1)
        msg = await asyncio.wait_for(anext(aiter(c.messages)), 5)
        assert json.loads(msg.payload)["state"] == "offline" and msg.retain  # clean stop


def test_cli_parser_registers_agent_and_builds_options():
    parser = argparse.ArgumentParser(prog="fleettui")
    sub = parser.add_subparsers(dest="command")
    add_agent_parser(sub)
    args = parser.parse_args(
        [
            "agent",
            "--broker",
            "mqtt.example:1884",
            "--interval",
            "2",
            "--tls",
            "--username",
            "u",
            "--password-env",
            "MQTT_PW",
            "--nvml",
            "fake",
            "--fake-hosts",
            "hgx-03-n1,hgx-03-n2",
        ]
    )
    o = options_from_args(args)
    assert callable(args.func)
    assert (o.broker, o.interval_s, o.tls, o.username, o.password_env) == (
        "mqtt.example:1884",
        2.0,
        True,
        "u",
        "MQTT_PW",
    )
    assert o.fake_hosts == ["hgx-03-n1", "hgx-03-n2"]
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        AgentOptions(interval_s=0)
    with pytest.raises(ValueError, match="cannot be used in a topic"):
        AgentOptions(host="a/b")


def test_agent_without_nvml_exits_with_one_clear_line():
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVML")
    except pynvml.NVMLError:
        pass
    out = subprocess.run(
        [sys.executable, "-m", "fleettui.agent", "--broker", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("fleettui agent: NVML cannot start on this machine")
    assert "Traceback" not in out.stderr
