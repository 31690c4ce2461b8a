"""The collection runtime: sources -> one writer -> the store, on asyncio.

Shared by the headless daemon and the app when it collects for itself.

- Pull sources are gathered on a fixed-rate schedule (a slow gather skips
  ticks rather than piling them up); push sources run until stopped and are
  restarted with backoff if they fail.
- Every gather is timed and recorded in `collector_runs` (ok, rows, error or
  skipped-sample reasons), so each source reports on itself.
- One writer task drains a bounded queue and writes everything waiting in one
  transaction, off the event loop. A bounded queue makes fast producers wait
  instead of growing memory. A batch the store refuses is reported and
  dropped alone; the rest of the transaction is retried without it.
- An `Enrichment` (fleettui/enrich.py: topology, contracted tenancy, latency
  targets) is applied to every write, so every source benefits; what it knows
  before any source reports is written first.
- Tasks (the alert engine) run on their own interval after the writes. On
  stop, a tick under way finishes (within `task_grace_s`) before `run`
  returns, so the caller never closes the store under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from collectors.backoff import Backoff
from collectors.base import Gathered, PullSource, PushSource
from storage.batch import Batch, make_batch
from storage.store import Store

if TYPE_CHECKING:
    from fleettui.enrich import Enrichment

log = logging.getLogger("fleettui.runtime")


def utcnow() -> datetime:
    """Naive UTC, the store's timestamp convention."""
    return datetime.now(UTC).replace(tzinfo=None)


class Task(Protocol):
    name: str
    interval_s: float

    async def tick(self, now: datetime) -> None: ...


@dataclass
class RuntimeStats:
    batches_written: int = 0
    rows_written: int = 0
    batches_refused: int = 0
    gathers: int = 0
    gather_failures: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)


_MAX_REASONS_CHARS = 500
_MAX_DROPPED_CHARS = 4000  # every reason of a real fleet's scrape fits (~30 of ~90 chars)


def run_record(ts: datetime, name: str, duration_s: float, interval_s: float | None,
               gathered: Gathered | None, error: str | None) -> Batch:
    """The collector_runs row for one gather."""
    skipped = gathered.skipped if gathered else []
    text = error
    if text is None and skipped:
        text = "skipped: " + "; ".join(skipped)
    if text and len(text) > _MAX_REASONS_CHARS:
        text = text[: _MAX_REASONS_CHARS - 1] + "…"
    dropped = gathered.dropped if gathered else {}
    reasons = "; ".join(f"{k} x{n}" for k, n in sorted(dropped.items())) or None
    if reasons and len(reasons) > _MAX_DROPPED_CHARS:
        reasons = reasons[: _MAX_DROPPED_CHARS - 1] + "…"
    return make_batch("collector_runs", {
        "ts": [ts], "collector": [name], "duration_ms": [duration_s * 1000.0],
        "ok": [error is None], "rows": [gathered.rows if gathered else 0], "error": [text],
        "skipped": [len(skipped)], "interval_s": [interval_s],
        "dropped": [sum(dropped.values())], "dropped_reasons": [reasons],
    })


class Runtime:
    def __init__(
        self,
        store: Store,
        sources: Sequence[PullSource | PushSource],
        tasks: Sequence[Task] = (),
        *,
        clock: Callable[[], datetime] = utcnow,
        queue_size: int = 256,
        on_write: Callable[[RuntimeStats], None] | None = None,
        enrich: Enrichment | None = None,
        observe: Callable[[list[Batch]], None] | None = None,
        task_grace_s: float = 30.0,
    ):
        self.store = store
        self.sources = list(sources)
        self.tasks = list(tasks)
        self.clock = clock
        self.stats = RuntimeStats()
        self._queue: asyncio.Queue[list[Batch]] = asyncio.Queue(maxsize=queue_size)
        self._on_write = on_write
        self.enrich = enrich
        self._observe = observe  # sees every hand-in (the daemon's SourceHealth)
        self.task_grace_s = task_grace_s  # how long a tick under way at stop may take

    async def sink(self, batches: list[Batch]) -> None:
        """Where push sources (and pull loops) hand their batches."""
        if batches:
            if self._observe is not None:
                try:
                    self._observe(batches)
                except Exception:  # watching must never stop ingestion
                    log.exception("observing a hand-in failed")
            await self._queue.put(batches)

    async def run(self, stop: asyncio.Event) -> None:
        writer = asyncio.create_task(self._writer(), name="writer")
        if self.enrich is not None:
            # the `source` values of what these sources guess (an agent's rows say "nvml")
            names = sorted({getattr(s, "row_source", s.name) for s in self.sources}
                           | {s.name for s in self.sources})
            try:
                first = await asyncio.to_thread(self.enrich.start, self.store, names,
                                                self.clock())
            except Exception as exc:  # collection goes on without the catch-up
                log.error("enrichment at start failed: %s", str(exc).splitlines()[0])
                first = []
            await self.sink(first)
        producers = []
        for src in self.sources:
            if isinstance(src, PullSource):
                producers.append(asyncio.create_task(self._pull_loop(src, stop), name=src.name))
            else:
                producers.append(asyncio.create_task(self._push_loop(src, stop), name=src.name))
        for task in self.tasks:
            producers.append(asyncio.create_task(self._task_loop(task, stop), name=task.name))
        try:
            await stop.wait()
        finally:
            # A task's tick under way (an alert cycle writing its state) is let finish,
            # within a grace period, before anything closes: a cancelled tick would
            # leave its worker thread writing to a store about to close.
            ticking = producers[len(producers) - len(self.tasks):] if self.tasks else []
            pulls = producers[: len(producers) - len(ticking)]
            for p in pulls:
                p.cancel()
            if ticking:
                _, late = await asyncio.wait(ticking, timeout=self.task_grace_s)
                for p in late:
                    log.warning("task %s still running %g s after stop; abandoned",
                                p.get_name(), self.task_grace_s)
                    p.cancel()
            await asyncio.gather(*producers, return_exceptions=True)
            await self._queue.join()  # flush what was gathered before stopping
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            for src in [*self.sources, *self.tasks]:  # tasks: alert delivery's last sends
                close = getattr(src, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        await close()

    # -- producers ---------------------------------------------------------
    async def _pull_loop(self, src: PullSource, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        interval = src.interval_s
        next_at = loop.time()
        if getattr(src, "align_to_interval", False):
            # Gather at wall-clock multiples of the interval (just past them), as
            # exporters that step their own clock expect: one gather per step.
            next_at += (-time.time()) % interval + 0.05
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        while not stop.is_set():
            now = self.clock()
            t0 = time.perf_counter()
            gathered, error = None, None
            try:
                gathered = await src.gather(now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a source's failure is data, never a crash
                error = f"{type(exc).__name__}: {exc}"
                log.warning("source %s: gather failed: %s", src.name, error)
            duration = time.perf_counter() - t0
            self.stats.gathers += 1
            self.stats.gather_failures += error is not None
            out = list(gathered.batches) if gathered else []
            out.append(run_record(now, src.name, duration, interval, gathered, error))
            await self.sink(out)
            next_at += interval
            late = loop.time() - next_at
            if late > 0:  # skip missed ticks rather than bursting to catch up
                next_at += (late // interval + 1) * interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _push_loop(self, src: PushSource, stop: asyncio.Event) -> None:
        backoff = Backoff(base_s=1.0, max_s=30.0, healthy_after_s=60.0)
        while not stop.is_set():
            started = time.perf_counter()
            backoff.started()
            try:
                await src.run(self.sink)
                error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            delay = backoff.next_delay()
            if error is not None:
                log.warning("source %s stopped: %s; restarting in %.1f s", src.name, error, delay)
            await self.sink([run_record(self.clock(), src.name, time.perf_counter() - started,
                                        None, None, error or "source returned")])
            await asyncio.sleep(delay)

    async def _task_loop(self, task: Task, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), task.interval_s)
            if stop.is_set():
                return  # between ticks: nothing under way
            # evaluate over what has been gathered so far (a stop ends the wait)
            joined = asyncio.ensure_future(self._queue.join())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait((joined, stopped), return_when=asyncio.FIRST_COMPLETED)
            joined.cancel()
            stopped.cancel()
            if stop.is_set():
                return
            try:
                await task.tick(self.clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("task %s failed: %s: %s", task.name, type(exc).__name__, exc)

    # -- the one writer ------------------------------------------------------
    async def _writer(self) -> None:
        while True:
            items = [await self._queue.get()]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                batches = [b for item in items for b in item]
                await asyncio.to_thread(self._write, batches)
            finally:
                for _ in items:
                    self._queue.task_done()

    def _write(self, batches: list[Batch]) -> None:
        if self.enrich is not None:
            try:
                batches = self.enrich.apply(batches)
            except Exception as exc:  # never lose the batches over the enrichment
                log.error("enrichment failed, batches written as they came: %s", exc)
        try:
            self._count(batches, self.store.write(batches))
            return
        except Exception as exc:
            log.warning("write of %d batches failed (%s); retrying one by one", len(batches), exc)
        for b in batches:
            try:
                self._count([b], self.store.write([b]))
            except Exception as exc:
                self.stats.batches_refused += 1
                log.error("store refused a %s batch of %d rows: %s", b.table, b.rows,
                          str(exc).splitlines()[0])

    def _count(self, batches: list[Batch], rows: int) -> None:
        self.stats.batches_written += len(batches)
        self.stats.rows_written += rows
        for b in batches:
            self.stats.rows_by_table[b.table] = self.stats.rows_by_table.get(b.table, 0) + b.rows
        if self._on_write:
            self._on_write(self.stats)
