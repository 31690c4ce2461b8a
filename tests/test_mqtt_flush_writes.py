"""What one flush of the MQTT source writes, beyond the samples: host rows only when
the merge would change them, GPU ownership from a remembered claim, a flush's checked
v2 columns reused only for exactly the frames accepted."""

from __future__ import annotations

import dataclasses

import pytest

from collectors.mqtt_source import MqttOptions, MqttSource
from collectors.nvml.batches import HostRows
from collectors.nvml.collector import NvmlCollector, Poll
from collectors.nvml.fake import SimStates
from collectors.nvml.library import open_library
from collectors.nvml.report_v2 import encode_v2
from collectors.sim.model import SimModel
from storage.store import Store

NOW = 1_764_000_100.0  # a whole second: NOW + 1.x share one step of last_seen
HOST = "hgx-03-n1"


@pytest.fixture(scope="module")
def poll() -> tuple[Poll, str]:
    states = SimStates(SimModel(start=NOW - 100, faults=()))
    clock = [NOW - 2]
    lib = open_library("fake", host=HOST, states=states, clock=lambda: clock[0])
    c = NvmlCollector(lib, clock=lambda: clock[0], events=False, processes_every=10**9)
    c.poll()
    clock[0] += 1
    p = c.poll()
    driver = c.driver_version
    c.close()
    return p, driver


def frame(poll: tuple[Poll, str], seq: int, ts: float, **kw) -> bytes:
    p, driver = poll
    kw.setdefault("driver", driver)
    return encode_v2(
        dataclasses.replace(p, ts=ts), host=kw.pop("host", HOST), boot="b1", seq=seq, **kw
    )


def flush(src: MqttSource, store: Store, *bodies: bytes, host: str = HOST) -> list:
    for b in bodies:
        src.handle(f"fleettui/{host}/report", b)
    batches = src.take_batches()[0]
    store.write(batches)
    return [b for b in batches if b.table == "hosts"]


def host_row(store: Store) -> tuple:
    return store.con.execute(
        "SELECT driver_version, rack, epoch(first_seen), epoch(last_seen) FROM hosts"
    ).fetchone()


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_host_rows_are_written_when_the_merge_would_change_them(poll):
    clock = Clock(NOW + 1.1)
    src = MqttSource(MqttOptions(max_future_s=1e9), clock=clock)  # report_interval_s 1
    store = Store.open(":memory:")
    _, driver = poll
    # new host: its whole row
    (b,) = flush(src, store, frame(poll, 0, NOW + 1))
    assert "driver_version" in b.data.column_names
    assert host_row(store) == (driver, None, NOW + 1, NOW + 1)
    # same driver, the same second of the source's clock: nothing for hosts
    clock.t = NOW + 1.6
    assert flush(src, store, frame(poll, 1, NOW + 1.5)) == []
    assert flush(src, store) == []
    assert host_row(store) == (driver, None, NOW + 1, NOW + 1)  # last_seen lags, < 1 s
    # the next second: last_seen only (not a layout change for the live snapshot), the
    # newest one received, though this flush has no report of the host
    clock.t = NOW + 2.05
    (b,) = flush(src, store)
    assert b.data.column_names == ["host", "last_seen"]
    assert host_row(store) == (driver, None, NOW + 1, NOW + 1.5)
    # a new driver, then a placement: the whole row at once, in the same second
    (b,) = flush(src, store, frame(poll, 4, NOW + 2, driver="999.1"))
    assert host_row(store) == ("999.1", None, NOW + 1, NOW + 2)
    flush(src, store, frame(poll, 5, NOW + 2.1, driver="999.1", place={"rack": "r7"}))
    assert host_row(store) == ("999.1", "r7", NOW + 1, NOW + 2.1)
    # a report without a driver or placement changes neither (the merge keeps them)
    assert flush(src, store, frame(poll, 6, NOW + 2.2, driver=None)) == []
    # a replayed older report: first_seen goes back (whole row), the later last_seen
    # still waits for the next second
    flush(src, store, frame(poll, 7, NOW - 5, driver="999.1"))
    assert host_row(store) == ("999.1", "r7", NOW - 5, NOW + 2.1)
    clock.t = NOW + 3.0
    flush(src, store)
    assert host_row(store) == ("999.1", "r7", NOW - 5, NOW + 2.2)


def test_host_rows_are_written_whole_again_after_a_flush_is_lost(poll):
    import asyncio

    src = MqttSource(MqttOptions(max_future_s=1e9), clock=lambda: NOW)
    store = Store.open(":memory:")
    flush(src, store, frame(poll, 0, NOW + 1))
    src.handle(f"fleettui/{HOST}/report", frame(poll, 1, NOW + 2, driver="999.2"))

    async def refuse(batches):
        raise RuntimeError("store said no")

    asyncio.run(src.flush(refuse))
    assert src.stats.write_errors == 1
    # the lost flush held the new driver: the next report (same driver) writes it again
    flush(src, store, frame(poll, 2, NOW + 3, driver="999.2"))
    assert host_row(store)[0] == "999.2"


def test_host_rows_split_unit():
    clock = Clock(100.2)
    rows = HostRows(1.0, clock)
    assert rows.split({"a": [5.0, 6.0, "d1", None]}) == (["a"], [])
    assert rows.split({"a": [7.0, 9.9, "d1", None]}) == ([], [])  # step 100 again
    clock.t = 101.0
    assert rows.split({"b": [10.0, 10.0, None, {}]}) == (["b"], [("a", 9.9)])
    assert rows.split({"a": [11.0, 12.0, "d1", {"rack": "r"}]}) == (["a"], [])
    assert rows.split({"a": [13.0, 13.0, "d1", {"rack": "r"}]}) == ([], [])
    clock.t = 102.5
    assert rows.split({}) == ([], [("a", 13.0)])
    rows.drop(["a"])
    assert rows.split({"a": [14.0, 14.0, "d1", {"rack": "r"}]}) == (["a"], [])
    rows.forget()
    assert rows.split({"b": [15.0, 15.0, None, None]}) == (["b"], [])


def test_host_rows_match_writing_every_row_every_flush(poll):
    """Against the old path (every host's row at every flush), over random reports:
    the same driver, placement and first_seen after every flush; last_seen behind by
    at most what one report interval (1 s) of the source's clock received."""
    import random

    rnd = random.Random(7)
    clock = Clock(NOW)
    new = MqttSource(MqttOptions(max_future_s=1e9), clock=clock)
    old = MqttSource(MqttOptions(max_future_s=1e9), clock=clock)
    old._batcher.host_rows = None  # noqa: SLF001
    s_new, s_old = Store.open(":memory:"), Store.open(":memory:")
    seq, writes = 0, 0
    for _ in range(80):
        bodies = []
        clock.t += rnd.choice([0.25, 0.25, 0.5, 1.0])
        for _ in range(rnd.randint(0, 3)):
            place = rnd.choice([None, None, {"rack": "r1"}, {"rack": "r2", "rack_slot": 3}])
            driver = rnd.choice([None, poll[1], poll[1], "999.3"])
            ts = clock.t - rnd.choice([0.1, 0.1, 0.1, 30])
            bodies.append(frame(poll, seq, ts, driver=driver, place=place))
            seq += 1
        writes += len(flush(new, s_new, *bodies))
        flush(old, s_old, *bodies)
        a, b = host_row(s_new), host_row(s_old)
        assert a[:3] == b[:3]
        assert a[3] <= b[3]
        got_by = s_old.con.execute(
            "SELECT epoch(max(ts)) FROM gpu_samples WHERE epoch(ts) <= ?", [a[3]]
        ).fetchone()
        assert got_by[0] == a[3]  # a last_seen that was received
        assert b[3] - a[3] <= 1.0 + 0.1 or a[3] == b[3]
    assert writes < 80  # fewer hosts writes than flushes


def test_gpu_ownership_is_checked_whenever_the_gpu_list_changes(poll):
    src = MqttSource(MqttOptions(max_future_s=1e9), clock=lambda: NOW)
    store = Store.open(":memory:")
    p, _ = poll
    flush(src, store, frame(poll, 0, NOW + 1))
    flush(src, store, frame(poll, 1, NOW + 2))  # the remembered claim
    assert src.stats.rejected == 0
    # another host naming this host's GPUs: refused, before and after its own claim
    flush(src, store, frame(poll, 0, NOW + 2, host="other-1"), host="other-1")
    assert src.stats.rejected == 1
    # the host reporting one more GPU, owned by another host: refused whole
    extra = dataclasses.replace(
        p, gpu={k: [*v, v[0]] for k, v in p.gpu.items()} | {"uuid": [*p.gpu["uuid"], "GPU-x"]}
    )
    other = dataclasses.replace(p, gpu={k: v[:1] for k, v in p.gpu.items()} | {"uuid": ["GPU-x"]})
    flush(
        src,
        store,
        encode_v2(dataclasses.replace(other, ts=NOW + 3), host="other-2", boot="b1", seq=0),
        host="other-2",
    )
    assert src.stats.rejected == 1
    flush(
        src, store, encode_v2(dataclasses.replace(extra, ts=NOW + 4), host=HOST, boot="b1", seq=2)
    )
    assert src.stats.rejected == 2
    reasons = [r for (r,) in store.con.execute("SELECT reason FROM rejects").fetchall()]
    assert sum("GPU-x belongs to host 'other-2'" in r for r in reasons) == 1
    # once the host is evicted, its GPUs are free to claim
    src.evict_idle_hosts(NOW + 10**6)
    flush(src, store, frame(poll, 1, NOW + 5, host="other-1"), host="other-1")
    assert src.stats.rejected == 2
    # and the evicted host, back with the same GPUs, is refused (its claim forgotten)
    flush(src, store, frame(poll, 3, NOW + 6))
    assert src.stats.rejected == 3


def test_a_flush_with_duplicates_stores_each_accepted_frame_once(poll):
    src = MqttSource(MqttOptions(max_future_s=1e9), clock=lambda: NOW)
    store = Store.open(":memory:")
    n = len(poll[0].gpu["uuid"])
    flush(src, store, frame(poll, 0, NOW + 1), frame(poll, 0, NOW + 1), frame(poll, 1, NOW + 2))
    assert src.stats.duplicates == 1
    got = store.con.execute("SELECT count(*), count(DISTINCT ts) FROM gpu_samples").fetchone()
    assert got == (2 * n, 2)
    flush(src, store, frame(poll, 2, NOW + 3))  # all accepted: the checked columns serve
    assert store.con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] == 3 * n
