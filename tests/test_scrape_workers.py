"""The scrape source parses in worker processes (`workers = N`) with the same
result as in its own thread, and a source aligned to its interval gathers just
after wall-clock multiples of it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from collectors.base import Gathered
from collectors.scrape_source import ScrapeOptions, ScrapeSource, ScrapeTarget
from collectors.sim.exporters import SimExporters
from collectors.sim.model import SimModel
from fleettui.runtime import Runtime
from storage.store import Store

HOSTS = ["hgx-03-n4", "hgx-04-n1", "nvl72-01-t01"]


def rows(g: Gathered) -> dict[str, list]:
    out: dict[str, list] = {}
    for b in g.batches:
        out.setdefault(b.table, []).extend(sorted(map(repr, b.data.to_pylist())))
    return out


async def test_worker_processes_give_what_the_thread_gives():
    t = int(time.time())
    model = SimModel(start=float(t - 60))
    exp = SimExporters(model, HOSTS, clock=lambda: float(t)).start()
    try:
        targets = [ScrapeTarget(exp.base_url + tg.path, tg.labels) for tg in exp.targets()]
        now = datetime.now(UTC)
        got = []
        for workers in (0, 2):
            src = ScrapeSource(ScrapeOptions(name="w", workers=workers), targets)
            got.append(await src.gather(now))
            await src.close()
        assert got[0].rows > 100
        assert rows(got[0]) == rows(got[1])
        assert got[0].skipped == got[1].skipped
    finally:
        exp.stop()


class Stamp:
    name = "stamp"
    interval_s = 0.5
    align_to_interval = True

    def __init__(self):
        self.at: list[float] = []

    async def gather(self, now):
        self.at.append(time.time())
        return Gathered()

    async def close(self):
        pass


async def _at_phase(phase: float, interval: float) -> float:
    """Sleep until `phase` seconds past a wall-clock multiple of `interval`."""
    await asyncio.sleep((phase - time.time()) % interval)
    return time.time()


async def test_an_aligned_source_gathers_just_after_multiples_of_its_interval():
    src = Stamp()
    store = Store.open(":memory:")
    stop = asyncio.Event()
    started = await _at_phase(0.1, 0.5)
    run = asyncio.create_task(Runtime(store, [src]).run(stop))
    await asyncio.sleep(2.2)
    stop.set()
    await run
    assert len(src.at) >= 3
    phases = [t % 0.5 for t in src.at[1:]]  # the first gathers at once, off the grid
    assert all(0.04 <= p < 0.3 for p in phases), phases
    assert src.at[0] - started < 0.25  # at once: it did not wait 0.4 s for the grid
    store.close()


class SlowFirst(Stamp):
    """Its first gather runs past one interval (as a first scrape that learns every
    layout at 10,000 GPUs does); the others are quick."""

    interval_s = 1.0

    async def gather(self, now):
        self.at.append(time.time())
        if len(self.at) == 1:
            await asyncio.sleep(1.3)
        return Gathered()


async def test_a_tick_missed_by_a_long_first_gather_is_gathered_late_not_skipped():
    src = SlowFirst()
    store = Store.open(":memory:")
    stop = asyncio.Event()
    await _at_phase(0.1, 1.0)  # the first gather runs ~0.1-1.4 s into a window
    run = asyncio.create_task(Runtime(store, [src]).run(stop))
    while len(src.at) < 4:
        await asyncio.sleep(0.05)
    stop.set()
    await run
    windows = [int(t // 1.0) for t in src.at]
    # one gather in every window from the first on: the one the slow gather ran into
    # is gathered late (~0.4 s into it), not skipped; and never two in one window
    assert windows == list(range(windows[0], windows[0] + len(windows))), (windows, src.at)
    assert 0.2 <= src.at[1] % 1.0 < 0.8, src.at
    store.close()
