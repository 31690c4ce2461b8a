"""The launch opens the store and starts the rack view's first query before it imports
Textual (`fleettui.tui.launch.start_app`); the rack screen's first refresh takes that
query's result, unless the cursor moved since; its error reaches the refresh; its
thread has ended when the launch returns or raises."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from fleettui.tui import early_rack
from fleettui.tui.early_rack import EARLY_MAX_AGE_S, EarlyQuery
from fleettui.tui.launch import start_app
from fleettui.tui.screens.rack import RackScreen
from fleettui.tui.widgets.rack_grid import RackGrid
from storage.reader import LocalReader
from storage.views import rack_grid
from tests.tui_support import fleet_store, make_app

ROOT = Path(__file__).resolve().parents[1]
EARLY = "early-rack-query"


def counting_rack_data(monkeypatch, delay_s: float = 0.0) -> list[str]:
    """The threads `rack_data` runs in (the early query's and the screen's refreshes)."""
    ran_in: list[str] = []
    plain = early_rack.rack_data

    def counted(*args, **kwargs):
        ran_in.append(threading.current_thread().name)
        time.sleep(delay_s)
        return plain(*args, **kwargs)

    monkeypatch.setattr(early_rack, "rack_data", counted)
    monkeypatch.setattr("fleettui.tui.screens.rack.rack_data", counted)
    return ran_in


async def until(pilot, done, limit_s: float = 30.0) -> None:
    """Wait for `done()`; fail, not hang, when it never comes."""
    end = time.monotonic() + limit_s
    while not done():
        assert time.monotonic() < end, "waited too long"
        await pilot.pause(0.01)


def test_the_first_rack_refresh_takes_the_query_the_launch_started(monkeypatch):
    store, last = fleet_store()
    ran_in = counting_rack_data(monkeypatch)
    seen: dict = {}

    async def scenario(app):
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            assert isinstance(screen, RackScreen)
            await until(pilot, lambda: screen.loaded > 0)
            # one query of the whole fleet, in the launch's thread, none in the worker
            seen["first"] = list(ran_in)
            seen["shown"] = screen.query_one(RackGrid).table
            seen["totals"] = app.totals
            assert app.take_early_rack(last) is None  # taken once
            await pilot.press("left_square_bracket")  # later refreshes query in the worker
            await until(pilot, lambda: screen.loaded >= 2 and not screen._loading)
            seen["after"] = list(ran_in)

    start_app(
        LocalReader(store.con),
        clock=lambda: last,
        run=lambda app: asyncio.run(scenario(app)),
        refresh_s=3600.0,
    )
    assert seen["first"] == [EARLY]
    assert seen["shown"].equals(rack_grid(store.con, last))
    assert seen["totals"] is not None and seen["totals"]["gpus"] == seen["shown"].num_rows
    assert len(seen["after"]) == 2 and seen["after"][1] != EARLY


# A fresh interpreter: the launch's order (pytest's process has Textual loaded already).
ORDER = """
import asyncio, sys, threading
from fleettui.tui import early_rack
from fleettui.tui.demo import fixed_store
from fleettui.tui.launch import start_app
from storage.reader import LocalReader
store, last = fixed_store(60.0, 5.0)
assert "textual" not in sys.modules
plain = early_rack.rack_data
started = []
def rack_data(*a, **k):
    started.append((threading.current_thread().name, "textual" in sys.modules))
    return plain(*a, **k)
early_rack.rack_data = rack_data
async def first(app):
    async with app.run_test(size=(100, 30)) as pilot:
        while app.screen.loaded == 0:
            await pilot.pause(0.01)
start_app(LocalReader(store.con), clock=lambda: last, run=lambda app: asyncio.run(first(app)))
print(started, "textual" in sys.modules)
"""


def test_the_launch_starts_the_query_before_it_imports_textual():
    res = subprocess.run(
        [sys.executable, "-c", ORDER], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"[('{EARLY}', False)] True"


def test_the_early_query_stands_only_for_its_own_cursor_or_a_live_one_just_after():
    _, last = fleet_store()

    def early(at=last) -> EarlyQuery:
        return EarlyQuery(lambda when: ("rows at", when), at)

    first = early()
    assert first.stands_for(last, live=True) and first.result() == ("rows at", last)
    assert first.stands_for(last, live=False)  # time travelled to its own cursor
    just_after = last + timedelta(seconds=EARLY_MAX_AGE_S - 1)
    assert first.stands_for(just_after, live=True)
    assert not first.stands_for(just_after, live=False)
    assert not first.stands_for(last + timedelta(seconds=EARLY_MAX_AGE_S + 1), live=True)
    assert not first.stands_for(last - timedelta(seconds=1), live=True)  # the cursor went back


async def test_the_app_hands_the_early_query_to_one_refresh_and_only_where_it_stands():
    store, last = fleet_store()
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        while app.screen.loaded == 0:
            await pilot.pause(0.01)
        mine = app._early_rack = EarlyQuery(lambda when: when, last)
        assert app.take_early_rack(last) is mine
        assert app.take_early_rack(last) is None  # once
        app._early_rack = EarlyQuery(lambda when: when, last)
        assert app.take_early_rack(last + timedelta(seconds=EARLY_MAX_AGE_S + 1)) is None
        assert app.take_early_rack(last) is None  # not kept for a later refresh
        back = last - timedelta(minutes=1)
        app.at = back  # time travelled: only the early query's own cursor
        app._early_rack = EarlyQuery(lambda when: when, back)
        assert app.take_early_rack(back + timedelta(seconds=1)) is None
        mine = app._early_rack = EarlyQuery(lambda when: when, back)
        assert app.take_early_rack(back) is mine


def test_the_early_query_error_reaches_the_first_refresh():
    store, last = fleet_store()

    def failing(at):
        raise ValueError(f"no rack at {at}")

    with pytest.raises(ValueError, match="no rack"):
        EarlyQuery(failing, last).result()

    async def scenario():
        app = make_app(early_rack=EarlyQuery(failing, last))
        notes: list[str] = []
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            await until(pilot, lambda: screen.failed)
            assert screen.loaded == 0 and notes == [f"Racks: query failed: no rack at {last}"]
            screen.reload()  # the next refresh queries for itself
            await until(pilot, lambda: screen.loaded > 0)
            assert not screen.failed

    asyncio.run(scenario())


def test_no_query_thread_outlives_the_launch(monkeypatch):
    store, last = fleet_store()
    counting_rack_data(monkeypatch, delay_s=0.3)

    def broken(app):
        raise RuntimeError("the terminal went away")

    with pytest.raises(RuntimeError, match="terminal"):
        start_app(LocalReader(store.con), clock=lambda: last, run=broken)
    assert not [t for t in threading.enumerate() if t.name == EARLY]
    # the app never took the query (it quit before its first refresh): waited for too
    start_app(LocalReader(store.con), clock=lambda: last, run=lambda app: None)
    assert not [t for t in threading.enumerate() if t.name == EARLY]
