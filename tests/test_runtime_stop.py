"""Stopping the runtime: a task's tick under way finishes before run() returns;
one that overruns the grace period is abandoned with one log line."""

import asyncio
import logging
import time

from fleettui.runtime import Runtime
from storage.store import Store


class SlowTick:
    """A task whose tick works in a thread for `work_s` (as the alert engine does)."""

    name = "slow"

    def __init__(self, work_s: float, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.work_s = work_s
        self.started = asyncio.Event()
        self.finished = 0

    async def tick(self, now):
        self.started.set()
        await asyncio.to_thread(time.sleep, self.work_s)
        self.finished += 1


async def test_stop_waits_for_the_tick_under_way():
    store = Store.open(":memory:")
    task = SlowTick(0.5)
    stop = asyncio.Event()
    run = asyncio.create_task(Runtime(store, [], [task]).run(stop))
    await task.started.wait()
    stop.set()
    await run
    assert task.finished == 1  # not cancelled halfway
    store.close()


async def test_stop_abandons_a_tick_past_the_grace_period(caplog):
    store = Store.open(":memory:")
    task = SlowTick(1.0)
    stop = asyncio.Event()
    run = asyncio.create_task(Runtime(store, [], [task], task_grace_s=0.1).run(stop))
    await task.started.wait()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, "fleettui.runtime"):
        stop.set()
        await run
    assert time.monotonic() - t0 < 0.8
    assert task.finished == 0
    assert [r.getMessage() for r in caplog.records] == [
        "task slow still running 0.1 s after stop; abandoned"
    ]
    await asyncio.sleep(1.0)  # let the abandoned thread end before the store closes
    store.close()


async def test_stop_between_ticks_is_immediate():
    store = Store.open(":memory:")
    task = SlowTick(0.0, interval_s=60.0)
    stop = asyncio.Event()
    run = asyncio.create_task(Runtime(store, [], [task]).run(stop))
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    stop.set()
    await run
    assert time.monotonic() - t0 < 0.5 and task.finished == 0
    store.close()
