"""The runtime: failures are recorded, never fatal; a refused batch goes alone."""

import asyncio
from datetime import datetime

from collectors.base import Gathered
from fleettui.runtime import Runtime
from storage.batch import make_batch
from storage.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0)


class Flaky:
    name = "flaky"
    interval_s = 0.02

    def __init__(self):
        self.calls = 0

    async def gather(self, now):
        self.calls += 1
        if self.calls % 2:
            raise ConnectionError("exporter unreachable")
        good = make_batch("events", {"ts": [now], "kind": ["xid"], "code": [79]})
        bad = make_batch("events", {"ts": [now], "kind": [None]})  # violates NOT NULL
        return Gathered([good, bad], skipped=["gpu 3: NaN power"])

    async def close(self):
        pass


class Pushy:
    name = "pushy"

    async def run(self, sink):
        await sink([make_batch("events", {"ts": [T0], "kind": ["push"]})])
        raise RuntimeError("broker went away")


async def _run_for(store, sources, seconds, until=None):
    """Run for `seconds`, or (with `until`) until it holds, within 30 s on a busy machine."""
    stop = asyncio.Event()
    rt = Runtime(store, sources)
    task = asyncio.create_task(rt.run(stop))
    await asyncio.sleep(seconds)
    for _ in range(300):
        if until is None or until():
            break
        await asyncio.sleep(0.1)
    stop.set()
    await task
    return rt


async def test_failing_gathers_are_recorded_and_collection_goes_on():
    store = Store.open(":memory:")
    src = Flaky()
    rt = await _run_for(store, [src], 0.3, until=lambda: src.calls >= 4)
    runs = store.con.execute(
        "SELECT ok, count(*), any_value(error) FILTER (WHERE NOT ok),"
        " sum(skipped) FROM collector_runs GROUP BY ok ORDER BY ok"
    ).fetchall()
    failed, succeeded = runs
    assert failed[0] is False and "ConnectionError: exporter unreachable" in failed[2]
    assert succeeded[0] is True and succeeded[3] == succeeded[1]  # one skipped per good run
    # the good event of each successful gather is stored; the bad one is refused alone
    xids = store.con.execute("SELECT count(*) FROM events WHERE kind = 'xid'").fetchone()[0]
    assert xids == succeeded[1]
    assert rt.stats.batches_refused >= 1


async def test_push_source_is_restarted_after_a_failure():
    store = Store.open(":memory:")
    # first run, then restarts after full-jitter delays (the first at most 1 s)
    await _run_for(store, [Pushy()], 1.3)
    pushed = store.con.execute("SELECT count(*) FROM events WHERE kind = 'push'").fetchone()[0]
    errors = store.con.execute(
        "SELECT count(*) FROM collector_runs WHERE collector = 'pushy' AND NOT ok"
        " AND error LIKE '%broker went away%'"
    ).fetchone()[0]
    assert pushed >= 2 and errors == pushed  # restarted, and every run's failure recorded
