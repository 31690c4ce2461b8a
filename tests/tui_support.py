"""Shared by the TUI tests: a store filled at a fixed seed and clock, and settling helpers."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from textual.pilot import Pilot
from textual.worker import WorkerCancelled

from fleettui.tui.app import FleetApp
from fleettui.tui.demo import fixed_store
from storage.store import Store


@cache
def fleet_store() -> tuple[Store, datetime]:
    """The simulated fleet (seed 7, scale 1) over its first 300 s, sampled every 5 s."""
    return fixed_store(300.0, 5.0)


def make_app(**kwargs) -> FleetApp:
    store, last = fleet_store()
    kwargs.setdefault("refresh_s", 3600.0)  # no refresh mid-test: the clock is fixed anyway
    return FleetApp(store.cursor, clock=lambda: last, **kwargs)


async def settle(pilot: Pilot, rounds: int = 6) -> None:
    """Let workers finish and their results reach the screen."""
    for _ in range(rounds):
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerCancelled:
            pass  # a refresh superseded by a newer one
        await pilot.pause()
