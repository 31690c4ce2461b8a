"""While the unfiltered rack view is shown, the header's fleet totals come from the
rack's own refresh (its table at the same cursor) and the app runs no totals query of
its own; with a filter, or on another view, the app queries them as before. Either way
they are the fleet's totals at the cursor (a fleet with a silent host)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleettui.tui.app import FleetApp
from fleettui.tui.screens.rack import RackScreen
from fleettui.tui.widgets.header import FleetHeader
from storage.views import fleet_totals
from tests.tui_support import fleet_store, make_app


def _fleet(at) -> dict:
    store, _ = fleet_store()
    cur = store.cursor()
    try:
        return fleet_totals(cur, at)
    finally:
        cur.close()


def _same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, v in got.items():
        assert v == (pytest.approx(want[k], rel=1e-12) if k == "util_mean_pct" else want[k]), k


async def _until(pilot, done) -> None:
    for _ in range(400):
        if done():
            return
        await pilot.pause(0.01)
    raise AssertionError("timed out")


async def test_header_totals_from_the_rack_table_unless_filtered():
    _, last = fleet_store()
    app = make_app()
    queried: list = []
    plain = FleetApp._load_totals

    def counted(self, at):
        queried.append(at)
        return plain(self, at)

    app._load_totals = counted.__get__(app)  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, RackScreen)
        await _until(pilot, lambda: screen.loaded >= 1 and app.totals is not None)
        want = _fleet(last)
        assert want["silent"] > 0 and want["busy"] and want["idle"]
        _same(app.totals, want)
        assert queried == []  # from the rack's table, no query of the app's
        header = str(screen.query_one(FleetHeader).render())
        assert f"GPUs {want['gpus']:,}" in header and f"silent {want['silent']:,}" in header

        # filtered: the rack's table is not the fleet; the app queries the totals
        screen.set_filter("rack:nvl")
        await _until(pilot, lambda: screen.loaded >= 2 and not screen._loading)
        assert screen.grid.table.num_rows < want["gpus"]
        _same(app.totals, want)  # still the whole fleet's
        await pilot.press("left_square_bracket")  # a minute back
        back = last - timedelta(seconds=60)
        await _until(pilot, lambda: app.totals["at"] == back and not screen._loading)
        assert queried == [back]
        _same(app.totals, _fleet(back))
        assert app.totals["gpus"] == want["gpus"]

        # unfiltered again: the rack's refresh sets them, the app queries no more
        screen.set_filter("")
        await pilot.press("left_square_bracket")
        back2 = back - timedelta(seconds=60)
        await _until(pilot, lambda: app.totals["at"] == back2 and not screen._loading)
        _same(app.totals, _fleet(back2))
        assert queried == [back]

        # another view: the app queries them again
        await pilot.press("2")
        await pilot.press("right_square_bracket")
        await _until(pilot, lambda: app.totals["at"] == back)
        assert queried == [back, back]
        _same(app.totals, _fleet(back))
