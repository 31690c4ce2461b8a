"""Collection beside the app: the shared runtime (`fleettui.runtime.Runtime`) on its own
thread and event loop, as the demo and `fleettui --config` run it while the app
shows the store (a 10,000-GPU sample takes ~100 ms of Python: never on the UI's loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from datetime import datetime

from storage.store import Store


class AfterEvent:
    """A runtime task that skips its ticks until `ready` is set: the live alert engine
    waits while the back-fill evaluates the past, so one engine never sees time go
    backwards."""

    def __init__(self, task, ready: threading.Event) -> None:
        self.task, self.ready = task, ready
        self.name, self.interval_s = task.name, task.interval_s

    async def tick(self, now: datetime) -> None:
        if self.ready.is_set():
            await self.task.tick(now)


class BackgroundRuntime:
    """The collection runtime on its own thread and event loop, beside the app.

    Collection (a 10,000-GPU sample takes ~100 ms of Python) never runs on the
    UI's event loop. `stop` is thread-safe: the runtime flushes what it gathered,
    the back-fill stops between two writes, and both threads are joined, so no
    thread is inside DuckDB when the interpreter exits (a thread killed there
    aborts the process: `terminate called without an active exception`).
    """

    def __init__(
        self,
        store: Store,
        sources: list,
        tasks: tuple = (),
        *,
        backfill: Callable[[threading.Event], object] | None = None,
        enrich=None,
    ) -> None:
        self.store, self.sources, self.tasks = store, sources, tasks
        self.enrich = enrich  # fleettui.enrich.Enrichment, from the config
        self._backfill = backfill
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fleettui-collect", daemon=True)
        self._backfill_thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread.start()
        if self._backfill is not None:  # history written beside live collection
            self._backfill_thread = threading.Thread(
                target=self._run_backfill, name="fleettui-backfill", daemon=True
            )
            self._backfill_thread.start()
        self._ready.wait(5.0)

    def _run_backfill(self) -> None:
        try:
            self._backfill(self._stopping)
        except BaseException as exc:  # reported by the app like a collection failure
            self.error = self.error or exc

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

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping.set()
        # the loop may not have started yet (quit within the first moments)
        self._ready.wait(timeout_s)
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        for thread in (self._thread, self._backfill_thread):
            if thread is not None and thread.is_alive():
                thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
