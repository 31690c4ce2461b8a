"""The daemon's MQTT source: batching, duplicates, rejects, presence, options (no broker)."""

from __future__ import annotations

import json

import pytest

from collectors.base import build_source
from collectors.mqtt_source import MqttOptions, MqttSource, parse_broker
from collectors.nvml.collector import NvmlCollector
from collectors.nvml.fake import SimStates
from collectors.nvml.library import open_library
from collectors.nvml.report import encode, encode_status
from collectors.options import OptionsError
from collectors.sim.faults import Fault
from collectors.sim.model import SimModel
from storage.store import Store

NOW = 1_764_000_100.0


@pytest.fixture(scope="module")
def states() -> SimStates:
    return SimStates(SimModel(start=NOW - 100, faults=(Fault("xid79", "hgx-03-n1:5", 99, 60),)))


def reports(
    states: SimStates,
    host: str,
    n: int,
    *,
    boot: str = "b1",
    t0: float = NOW - 2,
    processes_every: int = 1,
) -> list[bytes]:
    clock = [t0]
    lib = open_library("fake", host=host, states=states, clock=lambda: clock[0])
    c = NvmlCollector(lib, clock=lambda: clock[0], events=True, processes_every=processes_every)
    out = []
    for seq in range(n):
        if seq:
            clock[0] += 1.0
        if clock[0] >= NOW - 1:
            import time

            time.sleep(0.2)  # let the Xid thread see the fault start
        p = c.poll()
        out.append(
            encode(
                p,
                host=host,
                boot=boot,
                seq=seq,
                interval_s=1.0,
                driver=c.driver_version,
                inventory=c.inventory() if seq == 0 else None,
            )
        )
    c.close()
    return out


def source() -> MqttSource:
    return MqttSource(MqttOptions(), clock=lambda: NOW)


def q(store: Store, sql: str) -> list[tuple]:
    return store.con.execute(sql).fetchall()


def test_reports_become_one_batch_per_table(states):
    src, store = source(), Store.open(":memory:")
    for payload in reports(states, "hgx-03-n1", 3) + reports(states, "rtx-07-n1", 3):
        src.handle(f"fleettui/{json.loads(payload)['host']}/report", payload)
    batches, ts, n = src.take_batches()
    tables = [b.table for b in batches]
    assert len(tables) == len(set(tables)) and n == 6 and len(ts) == 6
    store.write(batches)
    # hgx-03-n1 loses GPU 5 (Xid 79) at NOW-1: 8 + 7 + 7 rows; rtx 8 x 3
    assert q(store, "SELECT host, count(*) FROM gpu_samples GROUP BY host ORDER BY host") == [
        ("hgx-03-n1", 22),
        ("rtx-07-n1", 24),
    ]
    assert q(
        store, "SELECT count(*), count(DISTINCT port), min(kind), min(source) FROM link_samples"
    ) == [(22 * 18, 18, "nvlink", "nvml")]
    assert q(store, "SELECT code, detail FROM events") == [
        (79, "Xid 79: GPU has fallen off the bus")
    ]
    assert q(store, "SELECT count(*) FROM gpus") == [(16,)]
    mig = q(store, "SELECT count(*) FROM slices WHERE kind = 'mig'")[0][0]
    assert mig == len({r[0] for r in q(store, "SELECT slice_id FROM slice_samples")}) > 8
    with_gpm = q(store, "SELECT count(*) FROM slice_samples WHERE util_pct IS NOT NULL")[0][0]
    assert with_gpm == mig * 2  # GPM activity from the second report on
    assert q(
        store, "SELECT count(*) FROM gpu_samples WHERE host = 'rtx-07-n1' AND util_pct IS NULL"
    ) == [(24,)]  # MIG GPUs: NotSupported -> NULL
    assert q(store, "SELECT DISTINCT tenant_guess FROM processes WHERE host = 'rtx-07-n1'") == [
        ("lumen-video",)
    ]
    first, last = q(store, "SELECT first_seen, last_seen FROM hosts WHERE host = 'hgx-03-n1'")[0]
    assert (last - first).total_seconds() == pytest.approx(2.0)


def test_nvlink_rows_per_gpu_sum_the_links(states):
    per_link, per_gpu = source(), MqttSource(MqttOptions(nvlink_rows="per_gpu"), clock=lambda: NOW)
    stores = Store.open(":memory:"), Store.open(":memory:")
    for src, store in zip((per_link, per_gpu), stores, strict=True):
        for payload in reports(states, "hgx-04-n1", 2, processes_every=9):
            src.handle("fleettui/hgx-04-n1/report", payload)
        store.write(src.take_batches()[0])
    sql = (
        "SELECT gpu_uuid, sum(tx_bytes_per_s), sum(rx_bytes_per_s), count(*), bool_and(link_up)"
        " FROM link_samples WHERE tx_bytes_per_s IS NOT NULL GROUP BY gpu_uuid ORDER BY 1"
    )
    a, b = (q(s, sql) for s in stores)
    assert [r[3] for r in a] == [18] * 8 and [r[3] for r in b] == [1] * 8
    for ra, rb in zip(a, b, strict=True):
        assert ra[0] == rb[0] and ra[4] is rb[4] is True
        assert rb[1] == pytest.approx(ra[1]) and rb[2] == pytest.approx(ra[2])
    assert q(stores[1], "SELECT DISTINCT port FROM link_samples") == [("nvlink",)]
    with pytest.raises(OptionsError, match="nvlink_rows"):
        build_source("mqtt", {"nvlink_rows": "some"}, "x")


def test_duplicates_are_stored_once_and_gaps_counted(states):
    src, store = source(), Store.open(":memory:")
    rs = reports(states, "hgx-04-n1", 5, processes_every=5)
    for i in (0, 1, 1, 0, 3, 4, 4):  # QoS 1 redelivery, and seq 2 never arrives
        src.handle("fleettui/hgx-04-n1/report", rs[i])
    store.write(src.take_batches()[0])
    assert src.stats.duplicates == 3 and src.stats.seq_gaps == 1
    assert q(store, "SELECT skipped, rows > 0 FROM collector_runs") == [(3, True)]
    assert q(store, "SELECT count(DISTINCT ts), count(*) FROM gpu_samples") == [(4, 32)]
    # a new boot starts again at seq 0 and is not a duplicate
    again = reports(states, "hgx-04-n1", 1, boot="b2")[0]
    src.handle("fleettui/hgx-04-n1/report", again)
    assert src.stats.duplicates == 3 and src._batcher.reports == 1


def test_rejects_keep_reason_host_and_excerpt(states):
    src, store = source(), Store.open(":memory:")
    good = reports(states, "hgx-04-n2", 1)[0]
    src.handle("fleettui/hgx-04-n2/report", b"\x00garbage")
    src.handle("fleettui/hgx-04-n3/report", good)  # host does not match the topic
    src.handle("fleettui/x/y/report", good)
    src.handle("fleettui/hgx-04-n2/status", b'{"v": 1, "state": "maybe"}')
    future = json.loads(good)
    future["ts"] = NOW + 3600
    src.handle("fleettui/hgx-04-n2/report", json.dumps(future).encode())
    store.write(src.take_batches()[0])
    rows = q(store, "SELECT host, reason, payload_excerpt, source FROM rejects ORDER BY rowid")
    assert [r[0] for r in rows] == ["hgx-04-n2", "hgx-04-n3", None, "hgx-04-n2", "hgx-04-n2"]
    assert "not JSON" in rows[0][1] and rows[0][2] == "\x00garbage"
    assert "does not match the topic's host" in rows[1][1]
    assert "topic is not" in rows[2][1]
    assert rows[3][1].startswith("status: state")
    assert "3600 s in the future" in rows[4][1]
    assert len(rows[1][2]) == 200 and rows[1][3] == "mqtt"
    assert src.stats.rejected == 5 and q(store, "SELECT count(*) FROM gpu_samples") == [(0,)]
    # the source reports on itself in collector_runs, as pull sources do per gather
    run = q(store, "SELECT collector, ok, skipped, error, interval_s FROM collector_runs")
    # the interval declared is the agents' report interval (CollectorSilent's horizon),
    # not the 0.25 s flush interval
    assert run == [("mqtt", True, 5, "rejected 5 message(s), first: " + rows[0][1], 1.0)]


def test_presence_from_birth_and_will(states):
    src, store = source(), Store.open(":memory:")
    src.handle("fleettui/h1/status", encode_status("online", ts=NOW - 5, boot="b1"))
    src.handle("fleettui/h2/status", encode_status("online", ts=NOW - 5, boot="b7"))
    store.write(src.take_batches()[0])
    src.handle("fleettui/h1/status", encode_status("offline", ts=NOW - 5, boot="b1"))
    src.handle("fleettui/h2/status", b"")  # retained message cleared: no change
    store.write(src.take_batches()[0])
    assert q(store, "SELECT host, state, boot FROM host_status ORDER BY host") == [
        ("h1", "offline", "b1"),
        ("h2", "online", "b7"),
    ]


def test_inventory_is_written_when_it_changes_only(states):
    src = source()
    rs = reports(states, "rtx-07-n2", 2)
    src.handle("fleettui/rtx-07-n2/report", rs[0])
    assert len(src._batcher.inv_gpus["gpu_uuid"]) == 8
    src.take_batches()
    src.handle("fleettui/rtx-07-n2/report", rs[0].replace(b'"seq":0', b'"seq":9'))
    assert src._batcher.inv_gpus["gpu_uuid"] == []  # same inventory as before


def test_options_are_validated_with_place_and_key():
    where = "fleet.toml [[sources]] #3 (mqtt)"
    for raw, msg in [
        ({"qos": 3}, "qos must be 0, 1 or 2"),
        ({"shared_group": "a/b"}, "shared_group"),
        ({"broker": "host:99999"}, "port must be 1-65535"),
        ({"brokr": "x"}, "unknown key 'brokr'"),
        ({"flush_interval_s": "1"}, "key 'flush_interval_s' must be float"),
        ({"tls": True, "tls_ca": "/nonexistent/ca.crt"}, "tls_ca: no such file"),
    ]:
        with pytest.raises(OptionsError, match=msg) as exc:
            build_source("mqtt", raw, where)
        assert str(exc.value).startswith(where)
    src = build_source("mqtt", {"shared_group": "daemons", "topic_prefix": "dc1/fleet"}, where)
    assert src.report_filter == "$share/daemons/dc1/fleet/+/report"
    assert src.status_filter == "dc1/fleet/+/status"


def test_nested_topic_prefix_finds_the_host(states):
    src = MqttSource(MqttOptions(topic_prefix="dc1/fleet"), clock=lambda: NOW)
    src.handle("dc1/fleet/hgx-04-n2/report", reports(states, "hgx-04-n2", 1)[0])
    assert src.stats.rejected == 0 and src._batcher.reports == 1


@pytest.mark.parametrize(
    ("text", "tls", "out"),
    [
        ("broker.local", False, ("broker.local", 1883)),
        ("broker.local", True, ("broker.local", 8883)),
        ("10.0.0.5:1884", False, ("10.0.0.5", 1884)),
        ("[::1]:1885", False, ("::1", 1885)),
    ],
)
def test_parse_broker(text, tls, out):
    assert parse_broker(text, tls) == out
