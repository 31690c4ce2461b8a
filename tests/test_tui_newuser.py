"""The app as a new user meets it: drill-down levels, the filter bar, the SQL editor's
focus, a stopped data source, alerts in the past."""

from __future__ import annotations

from datetime import timedelta

from textual.widgets import DataTable, Static, TextArea

from fleettui.tui.screens.drilldown import DrilldownScreen
from fleettui.tui.screens.rack import RackScreen
from fleettui.tui.screens.sql import SqlScreen
from fleettui.tui.widgets.filter_bar import FilterBar
from fleettui.tui.widgets.header import FleetHeader
from fleettui.tui.widgets.table import ViewTable
from tests.tui_support import fleet_store, make_app, settle


def text_of(widget: Static) -> str:
    return str(widget.render())


def _screen_text(app) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", app.export_screenshot())).replace("\xa0", " ")


async def test_enter_goes_host_then_gpu_then_slice_processes_and_esc_comes_back():
    app = make_app()
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        app.drill_down("rtx-07-n1")
        await settle(pilot)
        drill = app.screen
        assert isinstance(drill, DrilldownScreen) and drill.level == "host"
        assert "Enter: open this GPU" in text_of(drill.query_one("#drill-title"))
        await pilot.press("enter")  # the GPU under the cursor (GPU0: four MIG slices)
        await pilot.pause()
        slices = drill.query_one("#drill-slices", ViewTable)
        assert drill.level == "gpu" and app.focused is slices
        assert "› GPU0" in text_of(drill.query_one("#drill-title"))
        await pilot.press("down", "enter")  # the second slice: its processes
        await pilot.pause()
        procs = drill.query_one("#drill-procs", DataTable)
        want = slices.rows_data[1]["slice_id"]
        assert drill.level == "slice" and drill.slice_id == want and app.focused is procs
        assert f"› {want.rsplit('/', 1)[-1]} › processes" in text_of(
            drill.query_one("#drill-title")
        )
        assert procs.display and procs.row_count == 1  # the simulated agent's one process
        row = procs.get_row_at(0)
        assert want.rsplit("/", 1)[-1] in [str(c) for c in row]
        await pilot.press("escape")
        assert drill.level == "gpu" and app.focused is slices and drill.slice_id is None
        await pilot.press("escape")
        assert drill.level == "host" and app.focused is drill.query_one("#drill-gpus")
        await pilot.press("escape")
        assert isinstance(app.screen, RackScreen)


async def test_a_busy_whole_gpu_shows_its_process_in_the_demo_fleet():
    app = make_app()
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        app.drill_down("hgx-03-n1")
        await settle(pilot)
        drill = app.screen
        await pilot.press("enter")
        await pilot.pause()
        procs = drill.query_one("#drill-procs", DataTable)
        assert drill.level == "gpu" and app.focused is procs  # no slices: straight to processes
        assert procs.row_count == 1
        labels = [str(c.label) for c in procs.columns.values()]
        assert labels[:4] == ["pid", "memory", "container", "tenant"]


async def test_filter_bar_has_its_label_and_reopens_with_the_active_filter():
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        bar = screen.query_one(FilterBar)
        await pilot.press("slash")
        await pilot.pause()
        assert bar.display and bar.border_title.startswith("filter")  # labelled the first time
        assert "filter · Enter applies · Esc cancels" in _screen_text(app)
        await pilot.press(*"tenant:acme-llm", "enter")
        await settle(pilot)
        assert str(screen.flt) == "tenant:acme-llm"
        await pilot.press("slash")
        await pilot.press("ctrl+u", *"rack:hgx-01")  # typed, then cancelled
        await pilot.press("escape")
        await pilot.pause()
        assert not bar.display and str(screen.flt) == "tenant:acme-llm"
        await pilot.press("slash")
        await pilot.pause()
        assert screen.query_one(FilterBar).value == "tenant:acme-llm"  # the filter in use


async def test_sql_editor_says_how_to_leave_and_f_keys_switch_views_while_editing():
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        sql = app.screen
        assert isinstance(sql, SqlScreen) and isinstance(app.focused, TextArea)
        hint = text_of(sql.query_one("#sql-status"))
        assert "Esc" in hint and "F1" in hint
        await pilot.press("1")  # types a digit while editing...
        assert isinstance(app.screen, SqlScreen) and "1" in sql.query_one(TextArea).text
        await pilot.press("f2")  # ...but F-keys switch views even then
        assert app.current_mode == "fabric"
        await pilot.press("5")
        await pilot.pause()
        assert isinstance(app.focused, TextArea)
        await pilot.press("escape", "1")  # Esc leaves the editor: digits switch views again
        assert app.current_mode == "rack"


async def test_header_says_data_stopped_instead_of_live():
    store, last = fleet_store()
    later = last + timedelta(minutes=7)
    from fleettui.tui.app import FleetApp

    app = FleetApp(store.con, clock=lambda: later, refresh_s=3600.0)
    async with app.run_test(size=(160, 30)) as pilot:
        await settle(pilot)
        head = text_of(app.screen.query_one(FleetHeader))
        assert "LIVE" not in head
        assert f"STOPPED {last:%m-%d %H:%M:%S} (7m00s ago)" in head
    live = make_app()
    async with live.run_test(size=(160, 30)) as pilot:
        await settle(pilot)
        assert "● LIVE" in text_of(live.screen.query_one(FleetHeader))


async def test_alert_count_in_the_past_counts_the_alerts_firing_then():
    from tests.tui_support import write_alerts

    store, last = fleet_store()
    # a fresh in-memory copy so the shared store keeps no alerts
    from fleettui.tui.demo import fixed_store
    from tests.tui_support import FAULTS

    store, last = fixed_store(60.0, 5.0, faults=FAULTS)
    t0 = last - timedelta(seconds=50)
    write_alerts(
        store,
        [
            {
                "rule": "GpuHot",
                "scope": "gpu",
                "scope_key": "hgx-01-n1",
                "severity": "warning",
                "started_at": t0,
                "fired_at": t0 + timedelta(seconds=10),
                "resolved_at": t0 + timedelta(seconds=30),
            },
        ],
    )
    from fleettui.tui.app import FleetApp

    app = FleetApp(store.con, clock=lambda: last, refresh_s=3600.0)
    async with app.run_test(size=(160, 30)) as pilot:
        await settle(pilot)
        assert app.totals["alerts_firing"] == 0  # resolved by now
        app.at = t0 + timedelta(seconds=20)
        await settle(pilot)
        assert app.totals["alerts_firing"] == 1
        assert "alerts 1" in text_of(app.screen.query_one(FleetHeader))
    store.close()


def test_sql_example_counts_gpus_not_samples():
    from fleettui.tui.screens.sql import EXAMPLE, run_query
    from storage.reader import LocalReader

    store, _ = fleet_store()
    res = run_query(LocalReader(store.con), EXAMPLE)
    got = dict(
        zip(res.table.column("rack").to_pylist(), res.table.column("gpus").to_pylist(), strict=True)
    )
    want = dict(
        store.cursor()
        .execute("SELECT h.rack, count(*) FROM gpus g JOIN hosts h USING (host) GROUP BY ALL")
        .fetchall()
    )
    assert got and all(got[r] <= want[r] for r in got)
    assert got["nvl72-01"] == 72  # a whole NVL72 rack reporting: 72 GPUs, not 72 x samples
