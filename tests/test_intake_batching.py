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
    budget = live.budget

    def dear_last_publish() -> None:  # the last publish cost 1 s: no credit covers the next
        budget.last, budget.wall, budget.writes = 1.0, -1.0, -1.0

    dear_last_publish()
    store.write([_samples(["GPU-a"], t0 + timedelta(seconds=1))])
    assert _through(store) == t0
    # ... unless publishing stays within CORE_SHARE of one core over wall time
    budget.at -= 2.0 / live_mod.CORE_SHARE
    store.write([_samples(["GPU-a"], t0 + timedelta(seconds=1.5))])
    assert _through(store) == t0 + timedelta(seconds=1.5)
    dear_last_publish()
    store.write([_samples(["GPU-a"], t0 + timedelta(seconds=1))])
    assert _through(store) == t0 + timedelta(seconds=1.5)
    # ... or within LIVE_CPU_SHARE of the writer's CPU in writes
    budget.writes = 1.0
    store.write([_samples(["GPU-a"], t0 + timedelta(seconds=1.7))])
    assert _through(store) == t0 + timedelta(seconds=1.7)
    dear_last_publish()
    # ... but never longer than MAX_PUBLISH_S
    monkeypatch.setattr(live_mod, "MAX_PUBLISH_S", 0.0)
    store.write([_samples(["GPU-b"], t0 + timedelta(seconds=2))])
    assert _through(store) == t0 + timedelta(seconds=2)
    rows = store.con.execute(
        "SELECT gpu_uuid, ts FROM fleettui_live.gpu_latest ORDER BY gpu_uuid"
    ).fetchall()
    assert rows == [("GPU-a", t0 + timedelta(seconds=1.7)), ("GPU-b", t0 + timedelta(seconds=2))]
    store.close()


def test_live_publish_budget_banks_one_publish_at_most():
    """A quiet spell's unspent credit pays for one publish, not for a burst's worth."""
    b = live_mod.PublishBudget(0.0)
    assert b.allows(0.0)
    b.spend(0.5)
    assert b.allows(1000.0)  # after a quiet spell: one publish at once
    b.spend(0.5)
    assert not b.allows(1001.0)  # then the share of wall time: 0.5 s of CPU per 3.3 s
    assert not b.allows(1003.0)
    assert b.allows(1003.5)
    b.spend(0.5)
    # credit from the writes (LIVE_CPU_SHARE of 100 s of writes) banks one publish too
    b.note_write(100.0)
    assert b.allows(1003.6)
    b.spend(0.5)
    assert not b.allows(1004.6)


def test_live_publish_budget_keeps_a_steady_share():
    """Publishes within CORE_SHARE of wall time go out every time, the first after a
    quiet spell included: the cap on credit never holds back a steady publish; dearer
    ones space out to the share."""
    b = live_mod.PublishBudget(0.0)
    cheap = live_mod.CORE_SHARE * 0.9
    assert b.allows(0.0)
    b.spend(cheap)
    for t in range(100, 120):
        assert b.allows(float(t))
        b.spend(cheap)
    dear = live_mod.CORE_SHARE * 2  # two seconds' share each
    assert b.allows(130.0)
    b.spend(dear)  # paid on the credit of one as dear as the last (cheap): a debt
    assert not b.allows(133.0)
    t = 140.0
    assert b.allows(t)
    b.spend(dear)
    for _ in range(5):
        assert not b.allows(t + 1.9)
        t += 2.1
        assert b.allows(t)
        b.spend(dear)
