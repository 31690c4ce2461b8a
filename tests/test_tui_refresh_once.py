"""A data screen refreshes once when it opens and once per cursor move: Textual
runs the Mount handler of every class in the MRO, and the rack and drill-down
screens also call DataScreen's from their own (a second query of the whole fleet
right after the first, and two watchers of the cursor)."""

from __future__ import annotations

import asyncio

from fleettui.tui.screens.rack import RackScreen
from tests.tui_support import make_app


def test_the_rack_screen_loads_once_on_open_and_once_per_move():
    async def scenario():
        app = make_app()
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            assert isinstance(screen, RackScreen)
            while screen.loaded == 0:
                await pilot.pause(0.01)
            # the first refresh done and none queued behind it: the next is the timer's
            assert not screen._loading and not screen._again
            calls = []
            reload = screen.reload
            screen.reload = lambda: (calls.append(1), reload())[1]
            await pilot.press("left_square_bracket")  # the cursor moves a minute back
            while screen.loaded < 2 or screen._loading:
                await pilot.pause(0.01)
            assert len(calls) == 1 and screen.loaded == 2

    asyncio.run(scenario())
