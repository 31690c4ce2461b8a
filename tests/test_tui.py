"""The app driven by keys through Textual's Pilot, at a fixed seed and clock."""

from __future__ import annotations

from datetime import timedelta

from textual.widgets import DataTable, Sparkline, Static, TextArea

from fleettui.tui.screens.alerts import AlertsScreen
from fleettui.tui.screens.drilldown import DrilldownScreen
from fleettui.tui.screens.fabric import FabricScreen
from fleettui.tui.screens.rack import RackScreen
from fleettui.tui.screens.sql import SqlScreen
from fleettui.tui.screens.tenants import TenantsScreen
from fleettui.tui.widgets.header import FleetHeader
from fleettui.tui.widgets.history import HistoryPanel
from fleettui.tui.widgets.rack_grid import RackGrid
from fleettui.tui.widgets.table import ViewTable
from tests.tui_support import FAULTS, fleet_store, make_app, settle, stale_host_alert, write_alerts


def text_of(widget: Static) -> str:
    return str(widget.render())


async def test_rack_view_navigate_metric_filter_and_drill_down():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RackScreen)
        grid = screen.query_one(RackGrid)
        assert grid.table.num_rows == 304
        assert "304" in text_of(screen.query_one(FleetHeader))
        # navigate: right moves one GPU, down one host within the rack
        await pilot.press("right", "right", "down")
        row = grid.table.slice(grid.cursor, 1).to_pylist()[0]
        assert (row["host"], row["gpu_index"]) == ("hgx-03-n2", 2)
        assert "hgx-03-n2 GPU2" in text_of(screen.query_one("#rack-status"))
        # metric cycles and recolours
        before = [grid._cell(i) for i in range(304)]
        await pilot.press("m")
        assert grid.metric == "memory" and [grid._cell(i) for i in range(304)] != before
        await pilot.press("m", "m", "m", "m")
        assert grid.metric == "util"
        # filter by tenant
        await pilot.press("slash")
        await pilot.press(*"tenant:acme-llm", "enter")
        await settle(pilot)
        assert grid.table.num_rows == 72
        assert set(grid.table.column("tenants").to_pylist()) == {"acme-llm"}
        # drill down into the host under the cursor, then back
        await pilot.press("enter")
        await settle(pilot)
        drill = app.screen
        assert isinstance(drill, DrilldownScreen) and drill.host == "nvl72-01-t01"
        gpus = drill.query_one("#drill-gpus", ViewTable)
        assert [r["gpu_index"] for r in gpus.rows_data] == [0, 1, 2, 3]
        assert len(drill.query_one(HistoryPanel).query(Sparkline)) == 4
        assert drill.query_one(HistoryPanel).query_one("#spark-util_pct", Sparkline).data
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("escape")  # clears the filter
        await settle(pilot)
        assert grid.table.num_rows == 304


async def test_wide_cells_and_click_to_select():
    app = make_app()
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot)
        grid = app.screen.query_one(RackGrid)
        assert grid.effective_wide  # 304 GPUs fit a 200x60 terminal with wide cells
        await pilot.press("z")
        assert not grid.effective_wide and grid.cell_w == 1
        await pilot.press("z")
        assert grid.effective_wide and grid.cell_w == 4
        x, y = grid._row_pos[8]  # first GPU of the second host row
        await pilot.click(RackGrid, offset=(x + grid._label_w + 1 + 1 + 4, y))
        assert grid.cursor == 9


async def test_time_travel_moves_every_view_and_back_to_live():
    store, last = fleet_store()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        grid = app.screen.query_one(RackGrid)
        assert "hgx-04-n3" in {r["host"] for r in grid.table.to_pylist() if r["host_stale"]}
        # back 4 minutes: 55 s into the run, before the host went silent
        await pilot.press(*["left_square_bracket"] * 4)
        await settle(pilot)
        assert app.at == last - timedelta(seconds=240)
        assert not any(grid.table.column("host_stale").to_pylist())
        assert "◀" in text_of(app.screen.query_one(FleetHeader))
        await pilot.press("2")
        await settle(pilot)
        links = app.screen.query_one("#fabric-links", ViewTable).rows_data
        assert ("hgx-04-n1", "mlx5_3/1") not in [
            (r["host"], r["port"]) for r in links if not r["link_up"]
        ]
        await pilot.press("L")
        await settle(pilot)
        assert app.at is None
        links = app.screen.query_one("#fabric-links", ViewTable).rows_data
        assert not links[0]["link_up"]
        await pilot.press("1")
        await settle(pilot)
        assert "LIVE" in text_of(app.screen.query_one(FleetHeader))
        # type a moment: 200 s back, then an error, then live
        await pilot.press("t", *"-200s", "enter")
        await settle(pilot)
        assert app.at == last - timedelta(seconds=200)
        await pilot.press("t", *"soon", "enter")
        assert "expected an offset" in str(app.screen.query_one("#time-error").render())
        await pilot.press("escape")
        assert app.at == last - timedelta(seconds=200)
        await pilot.press("t", *"live", "enter")
        await settle(pilot)
        assert app.at is None
        # forward past now snaps back to live
        await pilot.press("left_square_bracket", "right_square_bracket", "right_square_bracket")
        assert app.at is None


async def test_fabric_view_kinds_and_drill_down():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, FabricScreen)
        links = screen.query_one("#fabric-links", ViewTable)
        assert not links.rows_data[0]["link_up"]
        await pilot.press("k")  # nvlink only
        await settle(pilot)
        assert {r["kind"] for r in links.rows_data} == {"nvlink"}
        links.focus()
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DrilldownScreen)
        assert app.screen.host == links.rows_data[0]["host"]


async def test_tenant_chart_follows_the_highlighted_tenant_and_routes_its_window():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TenantsScreen)
        table = screen.query_one(ViewTable)
        first = table.rows_data[0]["tenant"]
        title = text_of(screen.query_one("#tenant-chart-title"))
        # 30 days by default, read from the hourly tier (its live view adds the raw tail)
        assert f"of {first} over 30 d" in title and "1-hour rollups" in title
        assert max(screen.query_one("#tenant-chart", Sparkline).data) > 0
        await pilot.press("h")  # 1 h: raw samples
        await settle(pilot)
        title = text_of(screen.query_one("#tenant-chart-title"))
        assert "over 1 h" in title and "raw samples" in title
        await pilot.press("h")  # 24 h: the minute tier
        await settle(pilot)
        assert "1-minute rollups" in text_of(screen.query_one("#tenant-chart-title"))
        table.focus()
        await pilot.press("down")
        await settle(pilot)
        second = table.rows_data[1]["tenant"]
        assert f"of {second} over 24 h" in text_of(screen.query_one("#tenant-chart-title"))


async def test_tenant_view_sorts_and_jumps_to_racks():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TenantsScreen)
        table = screen.query_one(ViewTable)
        assert [r["gpus"] for r in table.rows_data] == sorted(
            (r["gpus"] for r in table.rows_data), reverse=True
        )
        await pilot.press("s", "s")  # sort by tenant name, then by GPUs held
        assert table.sort_key == "gpus"
        gpus = [r["gpus"] for r in table.rows_data]
        assert gpus == sorted(gpus, reverse=True)
        await pilot.press("s")
        assert table.sort_key == "util_mean_pct"
        utils = [r["util_mean_pct"] for r in table.rows_data]
        assert utils == sorted(utils, reverse=True)
        await pilot.press("w")
        await settle(pilot)
        assert "7 d" in text_of(screen.query_one("#tenants-title"))
        table.focus()
        await pilot.press("enter")
        await settle(pilot)
        rack = app.screen
        assert isinstance(rack, RackScreen)
        assert str(rack.flt) == f"tenant:{table.rows_data[0]['tenant']}"


async def test_alerts_view_empty_state():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, AlertsScreen)
        assert "No alerts at this moment" in text_of(screen.query_one("#alerts-empty"))
        assert "firing 0" in text_of(screen.query_one("#alerts-title"))


async def test_alerts_view_lists_acknowledges_and_jumps():
    from fleettui.tui.app import FleetApp
    from fleettui.tui.demo import fixed_store

    store, last = fixed_store(60.0, 10.0, faults=FAULTS)
    write_alerts(store, [stale_host_alert(last, "no samples for 40 s")])
    # attached read-only: acknowledging is refused with a notice
    app = FleetApp(store.con, clock=lambda: last, refresh_s=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        await settle(pilot)
        table = app.screen.query_one(ViewTable)
        table.focus()
        await pilot.press("a")
        assert any("read-only" in n.message for n in app._notifications)
    # holding the store: `a` acknowledges through the engine's API, then Enter jumps
    app = FleetApp(store.con, clock=lambda: last, refresh_s=3600, store=store)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        await settle(pilot)
        table = app.screen.query_one(ViewTable)
        assert [r["rule"] for r in table.rows_data] == ["host_stale"]
        assert "firing 1" in text_of(app.screen.query_one("#alerts-title"))
        table.focus()
        await pilot.press("a")
        await settle(pilot)
        assert table.rows_data[0]["muted_kind"] == "ack"
        assert table.rows_data[0]["muted_by"]
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DrilldownScreen) and app.screen.host == "hgx-04-n3"
    store.close()


async def test_sql_console_runs_queries_and_refuses_writes():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, SqlScreen)
        editor = screen.query_one(TextArea)
        editor.text = "SELECT host, count(*) AS n FROM gpus GROUP BY host ORDER BY host LIMIT 3"
        await pilot.press("ctrl+r")
        await settle(pilot)
        result = screen.query_one("#sql-result", DataTable)
        assert result.row_count == 3
        assert [str(c.label) for c in result.columns.values()] == ["host", "n"]
        assert "3 rows" in text_of(screen.query_one("#sql-status"))
        editor.text = "DELETE FROM gpus"
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert "only SELECT" in text_of(screen.query_one("#sql-status"))
        store, _ = fleet_store()
        assert store.cursor().execute("SELECT count(*) FROM gpus").fetchone()[0] == 304
        tree = screen.query_one("#sql-schema")
        assert "gpu_samples" in [str(n.label) for n in tree.root.children]
        await pilot.press("escape", "1")
        assert isinstance(app.screen, RackScreen)


async def test_theme_toggle_and_command_palette():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t")
        assert app.theme == "textual-light"
        await pilot.press("ctrl+p")
        await pilot.press(*"show tenants")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TenantsScreen)


async def test_refreshes_never_overlap_and_rearm():
    app = make_app(refresh_s=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        first = screen.loaded
        await pilot.pause(0.5)
        assert screen.loaded > first  # re-armed after each refresh
        running = [w for w in app.workers if w.group == "view-refresh" and w.is_running]
        assert len(running) <= 1


async def test_drilldown_lists_the_agents_processes_of_the_selected_gpu():
    from fleettui.tui.app import FleetApp
    from fleettui.tui.demo import fixed_store
    from storage.batch import make_batch

    store, last = fixed_store(60.0, 10.0, faults=FAULTS)
    store.cursor().execute("DELETE FROM process_listings")  # only the listings written below
    uuids = [
        r[0]
        for r in store.cursor()
        .execute("SELECT gpu_uuid FROM gpus WHERE host = 'hgx-03-n1' ORDER BY gpu_index")
        .fetchall()
    ]
    store.write(
        [
            make_batch(
                "processes",
                {
                    "ts": [last] * 2,
                    "host": ["hgx-03-n1"] * 2,
                    "gpu_uuid": [uuids[0], uuids[1]],
                    "pid": [4242, 77],
                    "used_mem_bytes": [2_000_000_000, 1],
                    "container": ["c0ffee" * 4, None],
                    "tenant_guess": ["nimbus-search", None],
                },
            )
        ]
    )
    app = FleetApp(store.con, clock=lambda: last, refresh_s=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        app.drill_down("hgx-03-n1", uuids[0])
        await settle(pilot)
        procs = app.screen.query_one("#drill-procs", DataTable)
        assert procs.row_count == 1
        # cells are Text (data is never parsed as markup)
        assert [str(c) for c in procs.get_row_at(0)] == [
            "4242",
            "2.0 GB",
            "c0ffeec0ffee",
            "nimbus-search",
        ]
        app.screen.query_one("#drill-gpus", ViewTable).focus()
        await pilot.press("down")
        await settle(pilot)
        assert str(procs.get_row_at(0)[0]) == "77"
        # a refresh redraws only what changed, and each change is drawn: the GPU's
        # sparklines, the title, a new process list
        panel = app.screen.query_one(HistoryPanel)
        title = app.screen.query_one("#drill-title", Static)
        assert panel.border_title == "GPU1 last hour" and " GPU1" in text_of(title)
        await pilot.press("up")
        await settle(pilot)
        assert panel.border_title == "GPU0 last hour" and " GPU0" in text_of(title)
        assert [str(procs.get_row_at(i)[0]) for i in range(procs.row_count)] == ["4242"]
        store.write(
            [
                make_batch(
                    "processes",
                    {"ts": [last], "host": ["hgx-03-n1"], "gpu_uuid": [uuids[0]], "pid": [5151]},
                )
            ]
        )
        app.screen.reload()
        await settle(pilot)
        assert sorted(str(procs.get_row_at(i)[0]) for i in range(procs.row_count)) == [
            "4242",
            "5151",
        ]
    store.close()
