"""The app keeps what start-up built out of the garbage collector's full passes
(`FleetApp.first_data_shown`: gc.freeze after the first data frame), and hands it
back when it exits (several apps in one process, as in the tests, free theirs)."""

from __future__ import annotations

import asyncio
import gc

from tests.tui_support import make_app


def test_start_up_frozen_after_the_first_data_frame_and_unfrozen_on_exit():
    async def scenario() -> int:
        app = make_app()
        async with app.run_test(size=(120, 40)) as pilot:
            while app.screen.loaded == 0:
                await pilot.pause(0.01)
            await pilot.pause()
            return gc.get_freeze_count()

    assert gc.get_freeze_count() == 0
    frozen = asyncio.run(scenario())
    assert frozen > 10_000  # the app's modules and widgets
    assert gc.get_freeze_count() == 0
