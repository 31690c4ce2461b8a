"""The collection runtime: sources -> one writer -> the store, on asyncio.

Shared by the headless daemon and the app when it collects for itself.

- Pull sources are gathered on a fixed-rate schedule (a slow gather skips
  ticks rather than piling them up); push sources run until stopped and are
  restarted with backoff if they fail.
- Every gather is timed and recorded in `collector_runs` (ok, rows, error or
  skipped-sample reasons), so each source reports on itself.
- One writer task drains a bounded queue and writes everything waiting in one
  transaction, off the event loop. A bounded queue makes fast producers wait
  instead of growing memory. When the store refuses a transaction for its
  data, each batch is retried alone and a refused batch is split in halves
  until the refused row(s) are found: those become `rejects` rows (source
  "store"), every other row is written.
- When the database itself fails (disk full, I/O error, DuckDB invalidated it:
  `StoreFailure`), nothing is dropped: the writer keeps the batches, says so in
  one line, and retries with backoff, reopening an invalidated database; the
  bounded queue fills, producers wait (the MQTT source stops reading, so the
  broker and agents buffer). After `store_failure_max_s` of failing it gives up:
  `run` returns and `failed` holds why (the daemon exits non-zero so its
  supervisor restarts it).
- An `Enrichment` (fleettui/enrich.py: topology, contracted tenancy, latency
  targets) is applied to every write, so every source benefits; what it knows
  before any source reports is written first.
- Tasks (alerts, retention) run on their own interval whatever the write queue
  does: they never wait for it to drain. On stop, a tick under way finishes
  (within `task_grace_s`) before `run` returns, so the caller never closes the
  store under it.
- `stats_dict()` is the back-pressure and health view (queue depth, write lag,
  store state) for /metrics and `fleettui status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from collectors.backoff import Backoff, stop_requested
from collectors.base import Gathered, PullSource, PushSource
from storage.batch import Batch, make_batch, storable_text
from storage.store import Store, StoreFailure

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


# A tick missed by less than this share of the interval is gathered late, not skipped.
LATE_GATHER_SHARE = 0.5


@dataclass
class RuntimeStats:
    batches_written: int = 0
    rows_written: int = 0
    batches_refused: int = 0  # batches with at least one row the store refused
    rows_refused: int = 0  # those rows, each kept as a `rejects` row
    gathers: int = 0
    gather_failures: int = 0
    store_failures: int = 0  # write attempts that failed for the database's sake
    store_reopens: int = 0
    batches_dropped: int = 0  # only when the runtime gives up or is stopped mid-failure
    rows_dropped: int = 0
    last_write_s: float = 0.0  # duration of the last transaction
    last_write_lag_s: float = 0.0  # age of the oldest batch in the last transaction
    rows_by_table: dict[str, int] = field(default_factory=dict)


class StoreGaveUp(RuntimeError):
    """The store kept failing for longer than the runtime's budget."""


_MAX_REASONS_CHARS = 500
_MAX_DROPPED_CHARS = 4000  # every reason of a real fleet's scrape fits (~30 of ~90 chars)


def run_record(
    ts: datetime,
    name: str,
    duration_s: float,
    interval_s: float | None,
    gathered: Gathered | None,
    error: str | None,
) -> Batch:
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
    # reasons quote what the fleet sent (a Prometheus error, a label): a lone surrogate
    # in one made this row fail, and the source's loop with it
    text = storable_text(text) if text else text
    reasons = storable_text(reasons) if reasons else reasons
    return make_batch(
        "collector_runs",
        {
            "ts": [ts],
            "collector": [name],
            "duration_ms": [duration_s * 1000.0],
            "ok": [error is None],
            "rows": [gathered.rows if gathered else 0],
            "error": [text],
            "skipped": [len(skipped)],
            "interval_s": [interval_s],
            "dropped": [sum(dropped.values())],
            "dropped_reasons": [reasons],
        },
    )


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
        store_failure_max_s: float = 300.0,
        store_retry_max_s: float = 10.0,
        enrich: Enrichment | None = None,
        observe: Callable[[list[Batch]], None] | None = None,
        task_grace_s: float = 30.0,
    ):
        self.store = store
        self.sources = list(sources)
        self.tasks = list(tasks)
        self.clock = clock
        self.stats = RuntimeStats()
        # (handed in at, batches, resolved True once committed / False if dropped, or None)
        self._queue: asyncio.Queue[tuple[float, list[Batch], asyncio.Future[bool] | None]] = (
            asyncio.Queue(maxsize=queue_size)
        )
        self._on_write = on_write
        self.enrich = enrich
        self._observe = observe  # sees every hand-in (the daemon's SourceHealth)
        self.task_grace_s = task_grace_s  # how long a tick under way at stop may take
        self.store_failure_max_s = store_failure_max_s
        self.store_retry_max_s = store_retry_max_s
        self.failed: str | None = None  # why the runtime gave up, if it did
        self._failing_since: float | None = None
        self._writer_alive = False
        self._stop: asyncio.Event | None = None

    async def sink(self, batches: list[Batch]) -> None:
        """Where push sources (and pull loops) hand their batches."""
        await self._hand_in(batches, None)

    async def sink_committed(self, batches: list[Batch]) -> asyncio.Future[bool]:
        """Hand in like `sink`; the future says True once the batches are committed,
        False if they were dropped (the store gave up). A source that acknowledges its
        upstream only after that (MQTT) loses nothing the daemon did not store."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not batches:
            done.set_result(True)
            return done
        await self._hand_in(batches, done)
        return done

    async def _hand_in(self, batches: list[Batch], done: asyncio.Future[bool] | None) -> None:
        if not batches:
            return
        if self._observe is not None:
            try:
                self._observe(batches)
            except Exception:  # watching must never stop ingestion
                log.exception("observing a hand-in failed")
        if not self._writer_alive and self._stop is not None:  # gave up: nobody will write
            self._drop(batches, done)
            return
        await self._queue.put((time.monotonic(), batches, done))

    def _drop(self, batches: list[Batch], done: asyncio.Future[bool] | None = None) -> None:
        self.stats.batches_dropped += len(batches)
        self.stats.rows_dropped += sum(b.rows for b in batches)
        _resolve(done, False)

    def stats_dict(self) -> dict[str, object]:
        """Back-pressure and health, plain values (names documented in ARCHITECTURE.md)."""
        s = self.stats
        q = self._queue
        oldest = q._queue[0][0] if q.qsize() else None  # type: ignore[attr-defined]
        out: dict[str, object] = {
            "queue_depth": q.qsize(),
            "queue_max": q.maxsize,
            "queue_rows": sum(
                b.rows
                for _, item, _ in list(q._queue)  # type: ignore[attr-defined]
                for b in item
            ),
            "queue_oldest_s": time.monotonic() - oldest if oldest is not None else 0.0,
            "last_write_s": s.last_write_s,
            "last_write_lag_s": s.last_write_lag_s,
            "batches_written": s.batches_written,
            "rows_written": s.rows_written,
            "batches_refused": s.batches_refused,
            "rows_refused": s.rows_refused,
            "batches_dropped": s.batches_dropped,
            "rows_dropped": s.rows_dropped,
            "gathers": s.gathers,
            "gather_failures": s.gather_failures,
            "store_ok": self.store.failure is None,
            "store_failure": self.store.failure,
            "store_failures": s.store_failures,
            "store_reopens": s.store_reopens,
            "store_failing_s": (
                time.monotonic() - self._failing_since if self._failing_since is not None else 0.0
            ),
            "rows_by_table": dict(s.rows_by_table),
        }
        for src in self.sources:
            ingest = getattr(getattr(src, "stats", None), "as_dict", None)
            if ingest is not None:
                out[f"source.{src.name}"] = ingest()
        return out

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._writer_alive = True
        writer = asyncio.create_task(self._writer(), name="writer")
        if self.enrich is not None:
            # the `source` values of what these sources guess (an agent's rows say "nvml")
            names = sorted(
                {getattr(s, "row_source", s.name) for s in self.sources}
                | {s.name for s in self.sources}
            )
            try:
                first = await asyncio.to_thread(self.enrich.start, self.store, names, self.clock())
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
            ticking = producers[len(producers) - len(self.tasks) :] if self.tasks else []
            pulls = producers[: len(producers) - len(ticking)]
            for p in pulls:
                p.cancel()
            stop.set()  # also when cancelled: a writer retrying a failing store gives up
            if ticking:
                _, late = await asyncio.wait(ticking, timeout=self.task_grace_s)
                for p in late:
                    log.warning(
                        "task %s still running %g s after stop; abandoned",
                        p.get_name(),
                        self.task_grace_s,
                    )
                    p.cancel()
            await asyncio.gather(*producers, return_exceptions=True)
            if self._writer_alive and not writer.done():
                # flush what was gathered before stopping (unless the writer dies meanwhile)
                joined = asyncio.ensure_future(self._queue.join())
                await asyncio.wait([joined, writer], return_when=asyncio.FIRST_COMPLETED)
                joined.cancel()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            self._writer_alive = False
            while not self._queue.empty():  # only left when the writer gave up
                self._drop(*self._queue.get_nowait()[1:])
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
            # exporters that step their own clock expect: one gather per step. The
            # first gather runs at once, off the grid: it learns every layout and plan
            # (27 s at 10,032 GPUs on a loaded machine), so the grid starts warm.
            next_at += (-time.time()) % interval + 0.05 - interval
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
            if late > 0:
                # Ticks wholly past are skipped, never burst through. The tick under
                # way is still gathered, late, while less than half of it has gone:
                # its data is still there (an aligned exporter serves its step until
                # the next one). A first gather that learns every layout can run past
                # one interval; the window after it is not lost for that.
                next_at += (late // interval) * interval
                if loop.time() - next_at > interval * LATE_GATHER_SHARE:
                    next_at += interval
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
                if stop_requested():  # the source failed while stopping: still stop
                    raise asyncio.CancelledError from exc
                error = f"{type(exc).__name__}: {exc}"
            delay = backoff.next_delay()
            if error is not None:
                log.warning("source %s stopped: %s; restarting in %.1f s", src.name, error, delay)
            await self.sink(
                [
                    run_record(
                        self.clock(),
                        src.name,
                        time.perf_counter() - started,
                        None,
                        None,
                        error or "source returned",
                    )
                ]
            )
            await asyncio.sleep(delay)

    async def _task_loop(self, task: Task, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # on its own schedule: a write queue that never drains (overload) must not
            # stop alerts or retention, so no waiting for it here
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), task.interval_s)
            if stop.is_set():
                return  # between ticks: nothing under way
            try:
                await task.tick(self.clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("task %s failed: %s: %s", task.name, type(exc).__name__, exc)

    # -- the one writer ------------------------------------------------------
    async def _writer(self) -> None:
        try:
            while True:
                items = [await self._queue.get()]
                while not self._queue.empty():
                    items.append(self._queue.get_nowait())
                try:
                    await self._write_items(items)
                    for *_, done in items:
                        _resolve(done, True)
                finally:
                    for *_, done in items:
                        _resolve(done, False)  # dropped (a no-op for those written)
                        self._queue.task_done()
        except StoreGaveUp as exc:
            self.failed = str(exc)
            log.error("%s", exc)
            self._writer_alive = False
            while not self._queue.empty():
                self._drop(*self._queue.get_nowait()[1:])
                self._queue.task_done()
            if self._stop is not None:
                self._stop.set()

    async def _write_items(
        self, items: list[tuple[float, list[Batch], asyncio.Future[bool] | None]]
    ) -> None:
        """Write the items, holding them through store failures (retry, reopen) until
        written or the failure budget is spent (StoreGaveUp; they count as dropped)."""
        pending = [b for _, item, _ in items for b in item]
        if self.enrich is not None:
            pending = await asyncio.to_thread(self._enriched, pending)
        self.stats.last_write_lag_s = time.monotonic() - items[0][0]
        backoff = 0.5
        while pending:
            t0 = time.perf_counter()
            pending, failure = await asyncio.to_thread(self._write, pending)
            self.stats.last_write_s = time.perf_counter() - t0
            if failure is None:
                if self._failing_since is not None:
                    log.warning(
                        "store: writing again after %.0f s of failures",
                        time.monotonic() - self._failing_since,
                    )
                    self._failing_since = None
                return
            self.stats.store_failures += 1
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
                log.error(
                    "%s; holding %d batches and retrying (giving up after %.0f s)",
                    failure,
                    len(pending),
                    self.store_failure_max_s,
                )
            stopping = self._stop is not None and self._stop.is_set()
            if stopping or now - self._failing_since > self.store_failure_max_s:
                self._drop(pending)
                raise StoreGaveUp(
                    f"{failure}; still failing after "
                    f"{now - self._failing_since:.0f} s, giving up"
                    + (" (stopping)" if stopping else "")
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.store_retry_max_s)
            if failure.invalidated:
                try:
                    await asyncio.to_thread(self.store.reopen)
                    self.stats.store_reopens += 1
                    log.warning("store: reopened %s after it was invalidated", self.store.path)
                except Exception as exc:  # still no space, or the file is gone: retry later
                    log.debug("store: reopen failed: %s", exc)

    def _enriched(self, batches: list[Batch]) -> list[Batch]:
        try:
            return self.enrich.apply(batches)  # type: ignore[union-attr]
        except Exception as exc:  # never lose the batches over the enrichment
            log.error("enrichment failed, batches written as they came: %s", exc)
            return batches

    def _write(self, batches: list[Batch]) -> tuple[list[Batch], StoreFailure | None]:
        """Write `batches`; returns (batches not written, the store failure) — ([], None)
        when done. Data errors never come back: refused rows become rejects."""
        try:
            self._count(batches, self.store.write(batches))
            return [], None
        except StoreFailure as exc:
            return batches, exc
        except Exception as exc:
            log.warning(
                "write of %d batches failed (%s); retrying one by one",
                len(batches),
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
        for i, b in enumerate(batches):
            try:
                self._write_isolating(b)
            except StoreFailure as exc:
                return batches[i:], exc
        return [], None

    def _write_isolating(self, b: Batch) -> None:
        """Write one batch; if the store refuses its data, halve it until the refused
        rows are found, store them as rejects and write the rest."""
        try:
            self._count([b], self.store.write([b]))
            return
        except StoreFailure:
            raise
        except Exception as exc:
            if b.rows <= 1:
                self._refuse_row(b, exc)
                return
        mid = b.rows // 2
        self._write_isolating(Batch(b.table, b.data.slice(0, mid)))
        self._write_isolating(Batch(b.table, b.data.slice(mid)))

    def _refuse_row(self, b: Batch, exc: BaseException) -> None:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.stats.batches_refused += 1
        self.stats.rows_refused += b.rows
        log.error("store refused a %s row: %s", b.table, reason)
        row = b.data.to_pylist()[0] if b.rows else {}
        host = row.get("host")
        excerpt = json.dumps(row, default=str, ensure_ascii=True)[:200]
        self.store.write(
            [
                make_batch(
                    "rejects",
                    {
                        "ts": [self.clock()],
                        "source": ["store"],
                        "topic": [b.table],
                        "host": [host if isinstance(host, str) else None],
                        "reason": [f"store refused the row: {reason}"[:500]],
                        "payload_excerpt": [excerpt],
                    },
                )
            ]
        )

    def _count(self, batches: list[Batch], rows: int) -> None:
        self.stats.batches_written += len(batches)
        self.stats.rows_written += rows
        for b in batches:
            self.stats.rows_by_table[b.table] = self.stats.rows_by_table.get(b.table, 0) + b.rows
        if self._on_write:
            self._on_write(self.stats)


def _resolve(done: asyncio.Future[bool] | None, committed: bool) -> None:
    if done is not None and not done.done():
        done.set_result(committed)
