"""Every view, and every screen of the app, on a store whose dimension rows are NULL
wherever a column may be: hosts nobody placed (no cluster, rack, slot, model), GPUs
with no index or name, slices with no profile or share, tenants and endpoints with
nothing but their key, a GPU and a link whose host has no `hosts` row at all, a link
whose state is unknown. Such rows are what real fleets send (an agent that knows
nothing of racks); no view may fail on them or hide them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from fleettui.tui.app import FleetApp
from fleettui.tui.screens.drilldown import DrilldownScreen
from fleettui.tui.widgets.rack_grid import RackGrid
from fleettui.tui.widgets.table import ViewTable
from storage import views
from storage.batch import make_batch
from storage.store import Store
from storage.views import RackFilter
from storage.views.rack import UNPLACED
from tests.tui_support import settle

AT = datetime(2026, 1, 5, 12, 0, 0)
TS = pa.timestamp("us")


def _nulls(n: int) -> pa.Array:
    return pa.array([None] * n, pa.string())


def null_store() -> Store:
    """Two placed GPUs (rack r1) beside unplaced ones whose every optional field is NULL."""
    store = Store.open(":memory:")
    t0 = AT - timedelta(seconds=10)
    store.write(
        [
            make_batch(
                "hosts",
                {
                    "host": ["placed-1", "bare-1", "bare-2"],
                    "cluster": ["c1", None, None],
                    "rack": ["r1", None, None],
                    "rack_slot": pa.array([1, None, None], pa.int32()),
                    "nvlink_domain": _nulls(3),
                    "model": _nulls(3),
                    "driver_version": _nulls(3),
                    "first_seen": pa.array([None] * 3, TS),
                    "last_seen": pa.array([None] * 3, TS),
                },
            ),
            make_batch(
                "gpus",
                {
                    # ghost-1 has GPUs but no hosts row at all
                    "gpu_uuid": ["GPU-p0", "GPU-b0", "GPU-b1", "GPU-c0", "GPU-g0"],
                    "host": ["placed-1", "bare-1", "bare-1", "bare-2", "ghost-1"],
                    "gpu_index": pa.array([0, None, None, 0, None], pa.int32()),
                    "name": [None] * 5,
                    "pci_bus_id": [None] * 5,
                    "mig_mode": pa.array([None] * 5, pa.bool_()),
                    "mem_total_bytes": pa.array([None] * 5, pa.int64()),
                },
            ),
            make_batch(
                "slices",
                {
                    "slice_id": ["GPU-c0/gi1"],
                    "gpu_uuid": ["GPU-c0"],
                    "kind": ["mig"],
                    "profile": [None],
                    "fraction": pa.array([None], pa.float64()),
                    "mem_total_bytes": pa.array([None], pa.int64()),
                },
            ),
            make_batch("tenants", {"tenant": ["t-bare"], "display_name": [None], "tier": [None]}),
            make_batch(
                "assignments",
                {
                    "tenant": ["t-bare", "t-bare"],
                    "gpu_uuid": ["GPU-b0", "GPU-c0"],
                    "slice_id": [None, "GPU-c0/gi1"],
                    "fraction": [1.0, 0.5],
                    "valid_from": [t0, t0],
                    "valid_to": pa.array([None, None], TS),
                },
            ),
            make_batch(
                "endpoints",
                {
                    "endpoint": ["ep-bare"],
                    "tenant": [None],
                    "model": [None],
                    "itl_target_ms": pa.array([None], pa.float64()),
                    "ttft_target_ms": pa.array([None], pa.float64()),
                },
            ),
            make_batch(
                "gpu_samples",
                {
                    "ts": pa.array([AT - timedelta(seconds=2)] * 4, TS),
                    "host": ["placed-1", "bare-1", "bare-1", "ghost-1"],
                    "gpu_uuid": ["GPU-p0", "GPU-b0", "GPU-b1", "GPU-g0"],
                    "util_pct": pa.array([50.0, None, None, None], pa.float64()),
                },
            ),
            make_batch(
                "slice_samples",
                {
                    "ts": pa.array([AT - timedelta(seconds=2)], TS),
                    "slice_id": ["GPU-c0/gi1"],
                    "gpu_uuid": ["GPU-c0"],
                    "util_pct": pa.array([None], pa.float64()),
                },
            ),
            make_batch(
                "link_samples",
                {
                    "ts": pa.array([AT - timedelta(seconds=2)] * 2, TS),
                    "host": ["bare-1", "ghost-1"],
                    "kind": ["ib", "ib"],
                    "port": ["mlx5_0/1"] * 2,
                    "link_up": pa.array([None, True], pa.bool_()),
                    "errors": pa.array([None, None], pa.int64()),
                },
            ),
            make_batch(
                "latency_samples",
                {
                    "ts": pa.array([AT - timedelta(seconds=2)], TS),
                    "endpoint": ["ep-bare"],
                    "tenant": [None],
                    "itl_p99_ms": pa.array([None], pa.float64()),
                },
            ),
            make_batch(
                "events",
                {
                    "ts": pa.array([AT - timedelta(seconds=3)], TS),
                    "host": ["bare-1"],
                    "gpu_uuid": [None],
                    "kind": ["xid"],
                    "code": pa.array([None], pa.int64()),
                    "detail": [None],
                },
            ),
        ]
    )
    alert = {
        "alert_id": "a1",
        "rule": "host_stale",
        "scope": "host",
        "scope_key": "bare-1",
        "severity": "warning",
        "state": "firing",
        "started_at": AT - timedelta(seconds=60),
        "fired_at": AT - timedelta(seconds=30),
        "resolved_at": None,
        "last_active_at": AT,
        "evaluated_at": AT,
        "peak_value": None,
        "last_value": None,
        "threshold": None,
        "labels": json.dumps({}),
        "annotations": json.dumps({}),
    }
    store.write([make_batch("alerts", {k: [v] for k, v in alert.items()})])
    return store


@pytest.fixture(scope="module")
def con():
    store = null_store()
    yield store.cursor()
    store.close()


def test_rack_grid_keeps_unplaced_and_hostless_gpus_last(con):
    t = views.rack_grid(con, AT)
    rows = t.to_pylist()
    assert [r["gpu_uuid"] for r in rows] == ["GPU-p0", "GPU-b0", "GPU-b1", "GPU-c0", "GPU-g0"]
    assert [r["rack"] for r in rows] == ["r1", None, None, None, None]
    assert rows[-1]["host"] == "ghost-1"  # no hosts row: still shown, under its own name
    unplaced = views.rack_grid(con, AT, RackFilter.parse(f"rack:{UNPLACED}"))
    assert unplaced.num_rows == 4
    assert views.rack_grid(con, AT, RackFilter.parse("rack:r1")).num_rows == 1
    assert views.rack_grid(con, AT, RackFilter.parse("bare")).num_rows == 3


def test_totals_fabric_tenants_alerts_and_drilldown_on_null_rows(con):
    totals = views.fleet_totals(con, AT)
    assert totals["gpus"] == 5 and totals["alerts_firing"] == 1
    fab = views.fabric(con, AT, window_s=10.0)
    assert fab.links_total == 2  # the hostless link is not dropped
    assert sorted(fab.links.column("host").to_pylist()) == ["bare-1", "ghost-1"]
    assert fab.racks.column("rack").to_pylist() == [None]
    ten = views.tenant_summary(con, AT).to_pylist()
    assert [(r["tenant"], r["gpus"], r["slices"]) for r in ten] == [("t-bare", 1.5, 1)]
    assert ten[0]["display_name"] is None and ten[0]["itl_p99_ms"] is None
    alerts = views.alert_list(con, AT).to_pylist()
    assert [(a["host"], a["rack"]) for a in alerts] == [("bare-1", None)]
    gpus = views.host_gpus(con, "bare-1", AT).to_pylist()
    assert [g["gpu_uuid"] for g in gpus] == ["GPU-b0", "GPU-b1"]
    assert all(g["rack"] is None for g in gpus)
    assert views.host_slices(con, "bare-2", AT).column("fraction").to_pylist() == [None]
    assert views.host_events(con, "bare-1", AT).column("code").to_pylist() == [None]
    assert views.gpu_history(con, "ghost-1", AT).num_rows == 1
    assert views.host_gpus(con, "ghost-1", AT).column("gpu_uuid").to_pylist() == ["GPU-g0"]


async def test_every_screen_renders_null_rows_and_names_the_unplaced_group():
    store = null_store()
    app = FleetApp(store.con, clock=lambda: AT, refresh_s=3600.0, store=store, show_timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        grid = app.screen.query_one(RackGrid)
        assert [p.rack for p in grid.panels] == ["r1", UNPLACED]
        assert [h[0] for h in grid.panels[1].hosts] == ["bare-1", "bare-2", "ghost-1"]
        lines = [grid.render_line(y).text for y in range(grid.size.height)]
        assert any(UNPLACED in line for line in lines)
        await pilot.press("down")  # onto bare-1, an unplaced host with unnamed GPUs
        status = str(app.screen.query_one("#rack-status").render())
        assert "bare-1 GPU? unplaced" in status and "GPU model unknown" in status
        await pilot.press("enter")
        await settle(pilot)
        drill = app.screen
        assert isinstance(drill, DrilldownScreen) and drill.host == "bare-1"
        assert UNPLACED in str(drill.query_one("#drill-title").render())
        assert drill.query_one("#drill-events", ViewTable).row_count == 1
        await pilot.press("escape")
        for key, table_id, expect in (
            ("2", "#fabric-racks", UNPLACED),
            ("3", "#tenants-table", "t-bare"),
            ("4", "#alerts-table", f"bare-1 ({UNPLACED})"),
        ):
            await pilot.press(key)
            await settle(pilot)
            table = app.screen.query_one(table_id, ViewTable)
            cells = [str(c) for r in range(table.row_count) for c in table.get_row_at(r)]
            assert any(expect in c for c in cells), (key, cells)
        await pilot.press("2")
        await settle(pilot)
        links = app.screen.query_one("#fabric-links", ViewTable)
        states = [str(links.get_row_at(r)[0]) for r in range(links.row_count)]
        assert sorted(states) == ["?", "up"]  # unknown state is not shown as DOWN
    store.close()
