"""The broker goes away for 20 s mid-run and comes back on the same port: every agent's
buffered reports arrive at the daemon in order, none missing (counted by seq); an agent
whose buffer bound is hit says how many it dropped."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

from collectors.mqtt_source import MqttOptions, MqttSource
from collectors.nvml.fake import SimStates
from collectors.nvml.report import Report
from collectors.sim.model import SimModel
from storage.store import Store
from tests.services.mosquitto import Broker, mosquitto_persistent  # noqa: F401  (fixture)
from tests.test_mqtt_e2e import make_agents, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 20.0
INTERVAL_S = 0.5


async def test_broker_outage_replays_in_order_none_missing(mosquitto_persistent: Broker):  # noqa: F811
    broker = mosquitto_persistent
    states = SimStates(SimModel(start=time.time(), faults=()))
    arrivals: dict[str, list[int]] = defaultdict(list)

    def record(r: Report) -> None:
        arrivals[r.host].append(r.seq)

    store = Store.open(":memory:")
    src = MqttSource(
        MqttOptions(
            broker=broker.address,
            flush_interval_s=0.2,
            reconnect_max_s=1.0,
            client_id="outage-daemon",
        ),
        on_report=record,
    )

    async def sink(batches):
        await asyncio.to_thread(store.write, batches)

    src_task = asyncio.create_task(src.run(sink))
    await asyncio.wait_for(src.connected.wait(), 10)
    agents = make_agents(
        broker, states, ["hgx-03-n1", "rtx-07-n1", "nvl72-01-t01"], interval_s=INTERVAL_S
    )
    small = make_agents(broker, states, ["hgx-04-n2"], interval_s=INTERVAL_S, buffer_reports=10)[0]
    everyone = [*agents, small]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(a.run(stop)) for a in everyone]
    await wait_for(lambda: all(a.sent >= 4 for a in everyone), 20, "reports before the outage")

    before = {a.host: a.seq for a in everyone}
    await asyncio.to_thread(broker.stop)
    t_down = time.monotonic()
    await asyncio.sleep(OUTAGE_S)
    peak = {a.host: len(a.buffer) for a in everyone}
    await asyncio.to_thread(broker.start)  # same port, same persistence directory
    down_s = time.monotonic() - t_down
    await wait_for(
        lambda: all(a.connects >= 2 and not a.buffer for a in everyone),
        30,
        "agents reconnected and replayed",
    )
    await asyncio.sleep(2 * INTERVAL_S)
    stop.set()
    await asyncio.gather(*tasks)
    await wait_for(
        lambda: all(
            len(arrivals[a.host]) + (a.dropped if a is small else 0) >= a.seq for a in everyone
        ),
        20,
        "every report at the daemon",
    )
    src_task.cancel()
    await asyncio.gather(src_task, return_exceptions=True)

    print(f"\nOUTAGE: broker down {down_s:.1f} s, interval {INTERVAL_S} s")
    for a in everyone:
        seqs = arrivals[a.host]
        print(
            f"OUTAGE: {a.host}: produced={a.seq} before_outage={before[a.host]} "
            f"buffered_at_peak={peak[a.host]} (bound {a.o.buffer_reports}) "
            f"arrived={len(seqs)} in_order={seqs == sorted(seqs)} dropped={a.dropped} "
            f"missing={sorted(set(range(a.seq)) - set(seqs))[:5]}..."
        )
    print(f"OUTAGE: source stats {src.stats.as_dict()}")

    for a in agents:
        assert peak[a.host] >= int(OUTAGE_S / INTERVAL_S) - 4  # they really buffered
        assert arrivals[a.host] == list(range(a.seq)), a.host  # in order, none missing
        assert a.dropped == 0
    # the small buffer overflowed: the oldest were dropped, the rest came in order
    seqs = arrivals[small.host]
    assert small.dropped > 0 and seqs == sorted(seqs)
    assert len(seqs) + small.dropped == small.seq
    assert src.stats.agent_dropped == small.dropped
    assert src.stats.seq_gaps == small.dropped
    stored = dict(
        store.cursor()
        .execute("SELECT host, count(DISTINCT ts) FROM gpu_samples GROUP BY host")
        .fetchall()
    )
    assert stored == {a.host: len(arrivals[a.host]) for a in everyone}
