"""The app attached to a running daemon over Quack: the views run on the daemon."""

from __future__ import annotations

import time

import pytest
from textual.widgets import DataTable, TextArea

from collectors.sim.topology import build_fleet
from fleettui.sql_cli import open_reader
from fleettui.tui.app import FleetApp
from fleettui.tui.widgets.rack_grid import RackGrid
from fleettui.tui.widgets.table import ViewTable
from storage.reader import QuackReader
from tests.tui_support import settle

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_app_reads_a_running_daemon_over_quack(sim_daemon):
    reader = open_reader(str(sim_daemon.db), None, None)  # finds the daemon beside the file
    assert isinstance(reader, QuackReader)
    n_gpus = build_fleet().n_gpus
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # two ticks, so every GPU has a newest sample
        n = reader.arrow("SELECT count(*) AS n FROM gpu_samples").column("n")[0].as_py()
        if n >= 2 * n_gpus:
            break
        time.sleep(0.3)
    app = FleetApp(reader, refresh_s=3600.0)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            grid = app.screen.query_one(RackGrid)
            assert grid.table.num_rows == n_gpus
            assert app.totals["gpus"] == n_gpus and app.totals["data_age_s"] < 10
            await pilot.press("2")
            await settle(pilot)
            assert app.screen.query_one("#fabric-racks", ViewTable).rows_data
            await pilot.press("3")
            await settle(pilot)
            assert len(app.screen.query_one(ViewTable).rows_data) == 8
            await pilot.press("5")
            await settle(pilot)
            app.screen.query_one(TextArea).text = "SELECT count(*) AS gpus FROM gpus"
            await pilot.press("ctrl+r")
            await settle(pilot)
            result = app.screen.query_one("#sql-result", DataTable)
            assert [str(c) for c in result.get_row_at(0)] == [str(n_gpus)]
    finally:
        reader.close()
