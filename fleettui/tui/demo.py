"""Filling a store with the simulated fleet: history for tests, live collection for the demo.

`fill_history` writes a fixed range of simulated seconds (tests, snapshots,
benchmarks, the demo's back-fill so sparklines and time travel have data at
once). `sim_collector` is the demo's in-process collection until the shared
runtime (`fleettui.runtime.Runtime`) is available; with it, the runtime is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from collectors.sim.source import SimSource
from storage.store import Store


def fill_history(
    store: Store, source: SimSource, start: datetime, seconds: float, step_s: float = 1.0
) -> datetime:
    """Sample `source` every `step_s` over [start, start + seconds); returns the last time."""
    t = start
    n = int(seconds // step_s)
    for k in range(n):
        t = start + timedelta(seconds=k * step_s)
        store.write(source.sample(t).batches)
    return t


def sim_collector(
    store: Store, source: SimSource, clock: Callable[[], datetime]
) -> Callable[[], Awaitable[None]]:
    """A coroutine factory collecting `source` into `store` every interval, off the UI thread."""

    async def collect() -> None:
        try:
            from fleettui.runtime import Runtime  # the shared runtime, when present
        except ImportError:
            Runtime = None  # noqa: N806
        if Runtime is not None:
            stop = asyncio.Event()
            try:
                await Runtime(store, [source]).run(stop)
            finally:
                stop.set()
            return
        while True:
            now = clock()
            gathered = await asyncio.to_thread(source.sample, now)
            await asyncio.to_thread(store.write, gathered.batches)
            await asyncio.sleep(max(0.0, source.interval_s - (clock() - now).total_seconds()))

    return collect


# The fixed moment tests, snapshots and screenshots show: 2026-11-26 12:00 UTC
# plus `seconds` of simulated history (every fault of the demo schedule has
# started by 300 s).
FIXED_START = datetime(2026, 11, 26, 12, 0, 0)


def fixed_store(
    seconds: float = 300.0, step_s: float = 5.0, *, scale: int = 1, seed: int = 7,
    path: str = ":memory:",
) -> tuple[Store, datetime]:
    """A store with the simulated fleet's first `seconds`; returns it and the last sample time."""
    store = Store.open(path)
    source = SimSource(seed=seed, scale=scale, start=FIXED_START)
    last = fill_history(store, source, FIXED_START, seconds, step_s)
    return store, last
