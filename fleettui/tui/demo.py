"""Filling a store with the simulated fleet: history for tests, live collection for the demo.

`fill_history` writes a fixed range of simulated seconds (tests, snapshots,
benchmarks, the demo's back-fill so sparklines and time travel have data at
once). `BackgroundRuntime` runs the shared collection runtime
(`fleettui.runtime.Runtime`) on its own thread while the app shows the store.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from collectors.sim.faults import Fault
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


class BackgroundRuntime:
    """The collection runtime on its own thread and event loop, beside the app.

    Collection (a 10,000-GPU sample takes ~100 ms of Python) never runs on the
    UI's event loop. `stop` is thread-safe: the runtime flushes what it gathered
    and the thread ends.
    """

    def __init__(
        self, store: Store, sources: list, tasks: tuple = (),
        *, backfill: Callable[[], object] | None = None, enrich=None,
    ) -> None:
        self.store, self.sources, self.tasks = store, sources, tasks
        self.enrich = enrich  # fleettui.enrich.Enrichment, from the config
        self._backfill = backfill
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fleettui-collect", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if self._backfill is not None:  # history written beside live collection
            threading.Thread(target=self._backfill, name="fleettui-backfill", daemon=True).start()
        self._ready.wait(5.0)

    def _main(self) -> None:
        from fleettui.runtime import Runtime

        async def body() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await Runtime(self.store, self.sources, self.tasks, enrich=self.enrich).run(self._stop)

        try:
            asyncio.run(body())
        except BaseException as exc:  # reported by the app, never raised into it
            self.error = exc
        finally:
            self._ready.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


# The fixed moment tests, snapshots and screenshots show: 2026-11-26 12:00 UTC
# plus `seconds` of simulated history.
FIXED_START = datetime(2026, 11, 26, 12, 0, 0)


def fixed_store(
    seconds: float = 300.0, step_s: float = 5.0, *, scale: int = 1, seed: int = 7,
    path: str = ":memory:", faults: tuple[Fault, ...] | None = None,
) -> tuple[Store, datetime]:
    """A store with the simulated fleet's first `seconds`; returns it and the last sample time."""
    store = Store.open(path)
    source = SimSource(seed=seed, scale=scale, start=FIXED_START,
                       **({} if faults is None else {"faults": faults}))
    last = fill_history(store, source, FIXED_START, seconds, step_s)
    return store, last
