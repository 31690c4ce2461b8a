"""Intake batching under load (issue 13): the MQTT source lets a flush grow while the
writer still holds the previous one, and the live snapshot publishes less often while
publishing would cost more than its share of the writer's CPU."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from collectors.mqtt_source import HOLD_FLUSHES, MqttOptions, MqttSource
from storage import live as live_mod
from storage.batch import make_batch
from storage.store import Store
from tests.test_mqtt_source import NOW, reports, states  # noqa: F401 (fixture)


class SlowWriter:
    """A runtime-like sink whose commits resolve only when the test says."""

    def __init__(self) -> None:
        self.handed: list[int] = []  # gpu_samples rows per hand-in
        self.pending: list[asyncio.Future[bool]] = []

    async def sink(self, batches) -> None:  # the plain sink (unused by the source here)
        raise AssertionError("the committing variant is expected")

    async def sink_committed(self, batches) -> asyncio.Future[bool]:
        self.handed.append(sum(b.rows for b in batches if b.table == "gpu_samples"))
        done = asyncio.get_running_loop().create_future()
        self.pending.append(done)
        return done


async def test_a_flush_grows_while_the_writer_holds_the_last_one(states):  # noqa: F811
    payloads = reports(states, "hgx-03-n2", 6)
    src = MqttSource(MqttOptions(), clock=lambda: NOW)
    w = SlowWriter()
    src.handle("fleettui/hgx-03-n2/report", payloads[0])
    await src._flush_tick(w.sink)
    assert w.handed == [8]
    # not committed yet: reports keep arriving and wait HOLD_FLUSHES ticks
    for p in payloads[1:4]:
        src.handle("fleettui/hgx-03-n2/report", p)
    for _ in range(HOLD_FLUSHES):
        await src._flush_tick(w.sink)
        assert w.handed == [8]
    await src._flush_tick(w.sink)  # then they go, in one hand-in
    assert w.handed == [8, 3 * 8]
    # once the writer has committed, the next tick hands in at once
    for f in w.pending:
        f.set_result(True)
    await asyncio.sleep(0)  # the done callbacks
    src.handle("fleettui/hgx-03-n2/report", payloads[4])
    await src._flush_tick(w.sink)
    assert w.handed == [8, 24, 8]
    # a plain sink (no commit futures) is never held
    for f in w.pending[2:]:
        f.set_result(True)
    await asyncio.sleep(0)
    plain: list[int] = []

    async def sink(batches) -> None:
        plain.append(sum(b.rows for b in batches if b.table == "gpu_samples"))

    src.handle("fleettui/hgx-03-n2/report", payloads[5])
    await src._flush_tick(sink)
    assert plain == [8]


def _samples(uuids: list[str], at: datetime):
    n = len(uuids)
    return make_batch(
        "gpu_samples",
        {"ts": [at] * n, "host": ["h1"] * n, "gpu_uuid": uuids, "util_pct": [50.0] * n},
    )


def _through(store: Store):
    return store.con.execute(
        "SELECT through FROM fleettui_live.snapshot WHERE sample_table = 'gpu_samples'"
    ).fetchone()[0]


def test_live_snapshot_publishes_within_its_cpu_share(monkeypatch):
    monkeypatch.setattr(live_mod, "PUBLISH_S", 0.0)
    store = Store.open(":memory:")
    live = store.live
    assert live is not None
    live.publish_s = 0.0
    t0 = datetime(2026, 1, 1)
    store.write([_samples(["GPU-a", "GPU-b"], t0)])
    assert _through(store) == t0  # within budget: published at once
    # the publishes so far cost more than LIVE_CPU_SHARE of the writes: held back
    live.publish_thread_s = 10 * live_mod.LIVE_CPU_SHARE * live.write_thread_s + 1.0
    store.write([_samples(["GPU-a"], t0 + timedelta(seconds=1))])
    assert _through(store) == t0
    # ... unless publishing stays within CORE_SHARE of one core over the snapshot's life
    born = live._born
    live._born -= (live.publish_thread_s + 1.0) / live_mod.CORE_SHARE
    store.write([_samples(["GPU-a"], t0 + timedelta(seconds=1.5))])
    assert _through(store) == t0 + timedelta(seconds=1.5)
    live._born = born
    live.publish_thread_s = 10 * live_mod.LIVE_CPU_SHARE * live.write_thread_s + 1.0
    store.write([_samples(["GPU-a"], t0 + timedelta(seconds=1))])
    assert _through(store) == t0 + timedelta(seconds=1.5)
    # ... but never longer than MAX_PUBLISH_S
    monkeypatch.setattr(live_mod, "MAX_PUBLISH_S", 0.0)
    store.write([_samples(["GPU-b"], t0 + timedelta(seconds=2))])
    assert _through(store) == t0 + timedelta(seconds=2)
    rows = store.con.execute(
        "SELECT gpu_uuid, ts FROM fleettui_live.gpu_latest ORDER BY gpu_uuid"
    ).fetchall()
    assert rows == [("GPU-a", t0 + timedelta(seconds=1.5)), ("GPU-b", t0 + timedelta(seconds=2))]
    store.close()
