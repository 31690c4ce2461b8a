"""End to end: agents on the fake NVML for the whole simulated fleet -> real Mosquitto ->
MQTT source -> DuckDB store, checked by SQL against the simulated fleet's own numbers."""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import UTC

import aiomqtt
import pytest

from collectors.mqtt_source import MqttOptions, MqttSource
from collectors.nvml.collector import NvmlCollector
from collectors.nvml.fake import SimStates
from collectors.nvml.library import open_library
from collectors.nvml.report import Report
from collectors.sim.faults import Fault
from collectors.sim.model import SimModel
from collectors.sim.topology import TENANTS
from fleettui.agent import Agent, AgentOptions
from fleettui.runtime import Runtime
from storage.store import Store
from tests.services.mosquitto import Broker, mosquitto  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAULTS = (Fault("xid79", "nvl72-02-t03:1", 60, 1200), Fault("ecc_dbe", "hgx-03-n4:6", 61, 600))
GARBAGE = 20
DUPLICATES = 10


def make_agents(broker: Broker, states: SimStates, hosts: list[str], **options) -> list[Agent]:
    o = AgentOptions(
        broker=broker.address,
        interval_s=options.pop("interval_s", 0.5),
        max_backoff_s=1.0,
        processes_every=2,
        **options,
    )
    agents = []
    for h in hosts:
        lib = open_library("fake", host=h, states=states)
        agents.append(Agent(o, NvmlCollector(lib, processes_every=o.processes_every), host=h))
    return agents


async def wait_for(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("report_version", [1, 2])
async def test_whole_fleet_end_to_end(mosquitto: Broker, report_version: int):  # noqa: F811
    # the model started 57 s ago: a GPU falls off the bus (Xid 79) and another has a double
    # bit ECC error (Xid 48) during the run
    model = SimModel(start=time.time() - 57, faults=FAULTS)
    states = SimStates(model)
    fleet = model.fleet
    store = Store.open(":memory:")
    accepted: list[Report] = []
    src = MqttSource(
        MqttOptions(broker=mosquitto.address, flush_interval_s=0.2, reconnect_max_s=1.0),
        on_report=accepted.append,
    )
    daemon_stop = asyncio.Event()
    runtime = Runtime(store, [src])
    src_task = asyncio.create_task(runtime.run(daemon_stop))
    await asyncio.wait_for(src.connected.wait(), 10)
    agents = make_agents(mosquitto, states, list(fleet.host), report_version=report_version)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(a.run(stop)) for a in agents]
    await wait_for(lambda: all(a.sent >= 2 for a in agents), 20, "first reports")

    # presence while running: every host online (once the next flush is written; a fixed
    # sleep here failed on a loaded machine)
    def online() -> int:
        sql = "SELECT count(*) FROM host_status WHERE state = 'online'"
        return store.cursor().execute(sql).fetchone()[0]

    await wait_for(lambda: online() == fleet.n_hosts, 20, "every host online")
    assert online() == fleet.n_hosts

    # a misbehaving publisher: garbage and replays of real reports
    captured: list[tuple[str, bytes]] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="e2e-tamper") as raw:
        await raw.subscribe("fleettui/+/report", qos=1)
        async for msg in raw.messages:
            captured.append((msg.topic.value, msg.payload))
            if len(captured) == DUPLICATES:
                break
        for topic, payload in captured:
            await raw.publish(topic, payload, qos=1)
        for i in range(GARBAGE):
            await raw.publish(
                f"fleettui/evil-{i % 3}/report", b'{"v": 1, "seq": "x' * (i + 1), qos=1
            )

    await asyncio.sleep(4)
    stop.set()
    await asyncio.gather(*tasks)
    produced = sum(a.seq for a in agents)
    await wait_for(
        lambda: src.stats.received >= produced + GARBAGE + DUPLICATES,
        15,
        "every report at the source",
    )
    await asyncio.sleep(0.5)
    daemon_stop.set()
    await src_task

    s = src.stats
    print(
        f"\nE2E: hosts={fleet.n_hosts} gpus={fleet.n_gpus} reports sent={produced} "
        f"(+{GARBAGE} garbage, +{DUPLICATES} replayed) received={s.received} "
        f"stored={s.stored} rejected={s.rejected} duplicates_dropped={s.duplicates}"
    )
    assert s.stored == produced == len(accepted)
    assert s.rejected == GARBAGE and s.duplicates == DUPLICATES
    assert s.seq_gaps == 0 and s.agent_dropped == 0 and s.write_errors == 0

    con = store.cursor()

    def one(sql: str):
        return con.execute(sql).fetchone()

    # every report's rows, per host: reports x GPUs answering
    lost_gpu = fleet.gpu_uuid[
        [
            g
            for g in range(fleet.n_gpus)
            if fleet.host[fleet.gpu_host_idx[g]] == "nvl72-02-t03" and fleet.gpu_index[g] == 1
        ][0]
    ]
    ecc_gpu = fleet.gpu_uuid[
        [
            g
            for g in range(fleet.n_gpus)
            if fleet.host[fleet.gpu_host_idx[g]] == "hgx-03-n4" and fleet.gpu_index[g] == 6
        ][0]
    ]
    assert one(f"SELECT max(ecc_dbe_total) FROM gpu_samples WHERE gpu_uuid = '{ecc_gpu}'")[0] == 1
    expected_rows = sum(r.n_gpus for r in accepted)
    assert one("SELECT count(*) FROM gpu_samples")[0] == expected_rows
    per_host = dict(
        con.execute("SELECT host, count(DISTINCT ts) FROM gpu_samples GROUP BY host").fetchall()
    )
    assert per_host == {a.host: a.seq for a in agents}
    assert one("SELECT count(*) FROM gpus")[0] == fleet.n_gpus
    # the inventory carries each GPU's memory size (from the same report's samples)
    sizes = dict(con.execute("SELECT gpu_uuid, mem_total_bytes FROM gpus").fetchall())
    truth = states.model.state(math.floor(time.time())).gpu_mem_total_bytes
    assert sizes == {u: int(truth[i]) for i, u in enumerate(fleet.gpu_uuid)}
    assert one("SELECT count(*) FROM hosts")[0] == fleet.n_hosts
    assert one("SELECT count(*) FROM slices")[0] == sum(k == "mig" for k in fleet.slice_kind)
    assert one("SELECT count(*) FROM host_status WHERE state = 'offline'")[0] == fleet.n_hosts
    assert (
        one("SELECT count(*) FROM rejects WHERE reason LIKE 'payload is not JSON%'")[0] == GARBAGE
    )
    # Xid 79 on the GPU that falls off the bus, and no samples from it afterwards; Xid 48
    xid = con.execute(
        "SELECT host, gpu_uuid, code, ts FROM events WHERE kind = 'xid' ORDER BY ts"
    ).fetchall()
    assert [(h, g, c) for h, g, c, _ in xid] == [
        ("nvl72-02-t03", lost_gpu, 79),
        ("hgx-03-n4", ecc_gpu, 48),
    ]
    xid_ts = xid[0][3]
    assert (
        one(
            f"SELECT count(*) FROM gpu_samples WHERE gpu_uuid = '{lost_gpu}'"
            f" AND ts > TIMESTAMP '{xid_ts}' + INTERVAL 1 SECOND"
        )[0]
        == 0
    )
    # NVLink per link: 18 links on every GB200 / H100 GPU sample after the first
    assert one("SELECT count(DISTINCT port) FROM link_samples")[0] == 18
    # the numbers are the simulated fleet's: power and memory at the report's second
    rows = con.execute(
        "SELECT ts, gpu_uuid, power_w, mem_used_bytes FROM gpu_samples USING SAMPLE 40 ROWS"
    ).fetchall()
    idx = {u: i for i, u in enumerate(fleet.gpu_uuid)}
    for ts, uuid, power, mem in rows:
        # the report is stamped when its poll starts and each GPU is read a moment
        # later, so a poll that straddles a second boundary reads the next second
        sec = math.floor(ts.replace(tzinfo=UTC).timestamp())
        g = idx[uuid]
        truth = [
            (st.gpu_power_w[g], int(st.gpu_mem_used_bytes[g]))
            for st in (states.model.state(sec), states.model.state(sec + 1))
        ]
        assert any(power == pytest.approx(p, abs=0.0015) and mem == m for p, m in truth), (
            ts,
            uuid,
            power,
            mem,
            truth,
        )
    # tenants attributed from the processes' cgroups match the fleet's assignments
    pairs = con.execute(
        "SELECT DISTINCT gpu_uuid, tenant_guess FROM processes"
        " WHERE slice_id IS NULL AND tenant_guess IS NOT NULL"
    ).fetchall()
    whole = {u: t for u, t in pairs if fleet.gpu_tenant[idx[u]] >= 0}
    assert whole and all(TENANTS[fleet.gpu_tenant[idx[u]]][0] == t for u, t in whole.items())
    mig_tenants = {
        t
        for (t,) in con.execute(
            "SELECT DISTINCT tenant_guess FROM processes WHERE slice_id IS NOT NULL"
        ).fetchall()
    }
    assert mig_tenants == {"lumen-video"}
    assert runtime.stats.batches_refused == 0
    print("E2E stats:", json.dumps(s.as_dict()))
