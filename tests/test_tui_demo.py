"""`fleettui demo` pieces: the runtime collects on its own thread while the app shows the store;
`fleettui` alone with nothing to show says so in one line."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from collectors.sim.source import SimSource
from fleettui.background import BackgroundRuntime
from fleettui.cli import main
from fleettui.tui.app import FleetApp, utc_now
from fleettui.tui.demo import fill_history
from fleettui.tui.widgets.rack_grid import RackGrid
from storage.store import Store
from tests.tui_support import settle


async def test_app_collecting_in_process_shows_live_data_then_stops_cleanly(tmp_path):
    store = Store.open(tmp_path / "demo.duckdb")
    now = utc_now().replace(microsecond=0)
    start = now - timedelta(seconds=60)
    fill_history(store, SimSource(start=start), start, 60, step_s=10.0)
    live = SimSource(start=start, interval_s=0.2)
    collector = BackgroundRuntime(store, [live])
    app = FleetApp(store.con, clock=utc_now, refresh_s=0.2, collector=collector)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        grid = app.screen.query_one(RackGrid)
        # live samples arrive while the UI keeps refreshing; 8 s is under MAX_PUBLISH_S,
        # so a snapshot held back to that floor fails here
        for _ in range(80):
            if (
                app.totals
                and app.totals["data_age_s"] is not None
                and app.totals["data_age_s"] < 1.0
                and grid.table is not None
            ):
                break
            await asyncio.sleep(0.1)
        assert app.totals["data_age_s"] < 1.0
        assert grid.table.num_rows == 304
        assert collector.running
    assert not collector.running  # stopped with the app
    runs = store.cursor().execute("SELECT count(*) FROM collector_runs WHERE ok").fetchone()[0]
    assert runs >= 2
    store.close()


def test_app_with_nothing_to_show_is_one_line(tmp_path, capsys):
    rc = main(["--db", str(tmp_path / "none.duckdb")])
    err = capsys.readouterr().err
    assert rc == 1 and "fleettui demo" in err and err.count("\n") == 1
