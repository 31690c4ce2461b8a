"""Filling a store with the simulated fleet's history: tests, snapshots, benchmarks, and
the demo's back-fill so sparklines and time travel have data at once.

Live collection beside the app is `fleettui.background.BackgroundRuntime`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from collectors.sim.faults import Fault
from collectors.sim.source import SimSource
from storage.store import Store


def history_times(start: datetime, seconds: float, step_s: float) -> list[datetime]:
    """The sample times `fill_history` writes: every `step_s` over [start, start + seconds)."""
    return [start + timedelta(seconds=k * step_s) for k in range(int(seconds // step_s))]


def fill_history(
    store: Store,
    source: SimSource,
    start: datetime,
    seconds: float,
    step_s: float = 1.0,
    *,
    stop: threading.Event | None = None,
    evaluate: Callable[[datetime], object] | None = None,
    evaluate_every_s: float = 15.0,
) -> datetime:
    """Sample `source` every `step_s` over [start, start + seconds); returns the last time.

    `stop` ends it early (the app is closing: no write may be left in flight).
    `evaluate` (the alert engine's) runs every `evaluate_every_s` of simulated time
    over what is written so far, with a `collector_runs` row per sample as the
    runtime records: alerts then have the history the back-fill has, and the
    time cursor shows what was firing then."""
    from fleettui.runtime import run_record

    t = start
    next_eval = start
    for t in history_times(start, seconds, step_s):
        if stop is not None and stop.is_set():
            break
        gathered = source.sample(t)
        batches = list(gathered.batches)
        if evaluate is not None:
            batches.append(run_record(t, source.name, 0.0, step_s, gathered, None))
        store.write(batches)
        if evaluate is not None and t >= next_eval:
            evaluate(t)
            next_eval = t + timedelta(seconds=evaluate_every_s)
    store.publish_live()
    return t


# The fixed moment tests, snapshots and screenshots show: 2026-11-26 12:00 UTC
# plus `seconds` of simulated history.
FIXED_START = datetime(2026, 11, 26, 12, 0, 0)


def fixed_store(
    seconds: float = 300.0,
    step_s: float = 5.0,
    *,
    scale: int = 1,
    seed: int = 7,
    path: str = ":memory:",
    faults: tuple[Fault, ...] | None = None,
) -> tuple[Store, datetime]:
    """A store with the simulated fleet's first `seconds`; returns it and the last sample time."""
    store = Store.open(path)
    source = SimSource(
        seed=seed, scale=scale, start=FIXED_START, **({} if faults is None else {"faults": faults})
    )
    last = fill_history(store, source, FIXED_START, seconds, step_s)
    return store, last
