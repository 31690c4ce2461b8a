"""The app end to end on fleets with no simulator in the store (tests/real_fleets.py):
an agent-only fleet through real Mosquitto, and an exporter-only fleet of real
captures through real Prometheus. Every view renders and shows the hosts, racks
(placed by topology file, agent option, target label or host-name pattern, and the
rest unplaced), tenants and endpoints the fleet has."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, TextArea

from fleettui.tui.app import FleetApp
from fleettui.tui.screens.drilldown import DrilldownScreen
from fleettui.tui.widgets.rack_grid import RackGrid
from fleettui.tui.widgets.table import ViewTable
from storage.views.rack import UNPLACED
from tests.real_fleets import (
    AGENT_HOSTS,
    CAPTURES,
    EXPORTER_HOSTS,
    CaptureServer,
    agent_only_fleet,
    exporter_only_fleet,
    wait_for_captures,
)
from tests.services.mosquitto import Broker, mosquitto  # noqa: F401  (fixture)
from tests.services.prometheus import ScrapeTarget, prometheus_server  # noqa: F401
from tests.tui_support import settle

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(r)] for r in range(table.row_count)]


async def visit_every_view(app: FleetApp, pilot) -> dict:
    """Racks, fabric, tenants, alerts, SQL and a drill-down; what each showed."""
    seen: dict = {}
    await settle(pilot)
    grid = app.screen.query_one(RackGrid)
    seen["panels"] = {p.rack: [h[0] for h in p.hosts] for p in grid.panels}
    seen["rack_rows"] = grid.table.to_pylist()
    seen["grid_text"] = "\n".join(grid.render_line(y).text for y in range(grid.size.height))
    await pilot.press("enter")  # drill down into the first GPU's host
    await settle(pilot)
    assert isinstance(app.screen, DrilldownScreen)
    seen["drill_host"] = app.screen.host
    seen["drill_gpus"] = app.screen.query_one("#drill-gpus", ViewTable).row_count
    await pilot.press("escape")
    # the unplaced group through the rack filter, and its first host's drill-down
    await pilot.press("slash", *f"rack:{UNPLACED}", "enter")
    await settle(pilot)
    seen["unplaced_hosts"] = sorted(set(grid.table.column("host").to_pylist()))
    await pilot.press("enter")
    await settle(pilot)
    seen["unplaced_drill_title"] = str(app.screen.query_one("#drill-title").render())
    await pilot.press("escape")
    for key, name, table_id in (
        ("2", "fabric_racks", "#fabric-racks"),
        ("3", "tenants", "#tenants-table"),
    ):
        await pilot.press(key)
        await settle(pilot)
        seen[name] = cells(app.screen.query_one(table_id, ViewTable))
    await pilot.press("2")
    await settle(pilot)
    seen["fabric_links"] = cells(app.screen.query_one("#fabric-links", ViewTable))
    await pilot.press("4")
    await settle(pilot)
    seen["alerts_title"] = str(app.screen.query_one("#alerts-title").render())
    table = app.screen.query_one("#alerts-table", ViewTable)
    seen["alerts"] = cells(table) if table.display else None
    seen["alerts_empty"] = str(app.screen.query_one("#alerts-empty").render())
    await pilot.press("5")
    await settle(pilot)
    editor = app.screen.query_one(TextArea)
    editor.text = (
        "SELECT coalesce(rack, 'unplaced') AS rack, count(*) AS hosts FROM hosts "
        "GROUP BY ALL ORDER BY rack"
    )
    await pilot.press("ctrl+r")
    await settle(pilot)
    seen["sql"] = cells(app.screen.query_one("#sql-result", DataTable))
    return seen


async def test_agent_only_fleet_every_view(mosquitto: Broker, tmp_path):  # noqa: F811
    fleet = await agent_only_fleet(tmp_path, mosquitto.address)
    con = fleet.store.cursor()
    # no simulator in the store: every row came from the agents through the broker
    assert con.execute("SELECT DISTINCT source FROM gpu_samples").fetchall() == [("nvml",)]
    hosts = dict(con.execute("SELECT host, rack FROM hosts").fetchall())
    assert set(hosts) == set(AGENT_HOSTS)
    assert hosts["nvl72-01-t01"] == "nvl72-01"  # topology file
    assert hosts["hgx-03-n1"] == "hgx-03"  # the agent's --rack
    assert hosts["hgx-04-n2"] == "hgx-04"  # host-name pattern
    assert hosts["rtx-07-n1"] is None  # nobody said: unplaced
    tenants = {t for (t,) in con.execute("SELECT tenant FROM tenants").fetchall()}
    guessed = {
        t
        for (t,) in con.execute(
            "SELECT DISTINCT tenant_guess FROM processes WHERE tenant_guess IS NOT NULL"
        ).fetchall()
    }
    assert guessed and guessed <= tenants  # the agents' cgroup guesses became tenants
    assert "contract-co" in tenants
    contract = con.execute(
        "SELECT g.host, g.gpu_index FROM assignments a JOIN gpus g "
        "USING (gpu_uuid) WHERE a.tenant = 'contract-co'"
    ).fetchall()
    assert contract == [("rtx-07-n1", 0)]  # host + index resolved to the agent's GPU
    assert con.execute("SELECT endpoint, tenant, itl_target_ms FROM endpoints").fetchall() == [
        ("contract-chat", "contract-co", 25.0)
    ]

    app = FleetApp(fleet.store.con, clock=lambda: fleet.at, refresh_s=3600.0, show_timings=False)
    async with app.run_test(size=(160, 48)) as pilot:
        seen = await visit_every_view(app, pilot)
    # clusters in order (east, west, none), racks within them, then the unplaced hosts
    assert list(seen["panels"]) == ["nvl72-01", "hgx-03", "hgx-04", UNPLACED]
    assert seen["panels"][UNPLACED] == ["rtx-07-n1"]
    assert {r["host"] for r in seen["rack_rows"]} == set(AGENT_HOSTS)
    assert not any(r["host_stale"] for r in seen["rack_rows"])
    assert UNPLACED in seen["grid_text"] and "nvl72-01" in seen["grid_text"]
    assert seen["drill_host"] == "nvl72-01-t01" and seen["drill_gpus"] == 4
    fabric_racks = {r[0] for r in seen["fabric_racks"]}
    assert {"nvl72-01", "hgx-03"} <= fabric_racks  # NVLink rows from the agents
    assert seen["fabric_links"]
    tenant_names = {r[0] for r in seen["tenants"]}
    assert tenant_names == tenants
    contract_row = next(r for r in seen["tenants"] if r[0] == "contract-co")
    assert contract_row[1] == "1"  # one GPU held by contract
    assert contract_row[5] == "– / 25"  # its endpoint's target from the config, no latency yet
    # the alert engine ran beside the source; nothing fired in these few seconds
    assert seen["alerts"] == [] and "No alerts at this moment" in seen["alerts_empty"]
    assert seen["unplaced_hosts"] == ["rtx-07-n1"]
    assert "rtx-07-n1" in seen["unplaced_drill_title"]
    assert UNPLACED in seen["unplaced_drill_title"]
    assert [UNPLACED, "1"] in seen["sql"]
    fleet.store.close()


async def test_exporter_only_fleet_every_view(prometheus_server, tmp_path):  # noqa: F811
    server = CaptureServer()
    try:
        prom = prometheus_server(
            [
                ScrapeTarget(f"127.0.0.1:{server.port}", path, labels)
                for path, _parts, labels in CAPTURES
            ]
        )
        wait_for_captures(prom.url)
        fleet = await exporter_only_fleet(tmp_path, prom.url)
    finally:
        server.close()
    con = fleet.store.cursor()
    assert {s for (s,) in con.execute("SELECT DISTINCT source FROM gpu_samples").fetchall()} == {
        "prometheus"
    }
    hosts = dict(con.execute("SELECT host, rack FROM hosts").fetchall())
    assert EXPORTER_HOSTS <= set(hosts)
    assert hosts["gpu-node-1"] == "h100-rack-1"  # topology file (CSV)
    assert hosts["i-030791dc5a37cd257"] == "l4-rack-1"
    assert hosts["nvidia-dcgm-exporter-s228n"] == "k8s-rack-7"  # the target's `rack` label
    assert hosts["nvidia-dcgm-exporter-tl46n"] is None  # unplaced
    tenants = {t for (t,) in con.execute("SELECT tenant FROM tenants").fetchall()}
    assert {"dynamo-workload", "runai-reservation"} <= tenants  # pod namespaces
    gpus = con.execute("SELECT count(*) FROM gpus").fetchone()[0]
    # the vLLM server became an endpoint of its namespace, with the config's default targets
    assert con.execute(
        "SELECT endpoint, tenant, model, itl_target_ms, ttft_target_ms FROM endpoints"
    ).fetchall() == [("qwen-chat", "inference", "Qwen/Qwen2.5-0.5B-Instruct", 50.0, 2000.0)]
    assert hosts["ib-node-1"] == "h100-rack-1"  # a node_exporter-only host, placed by the file

    app = FleetApp(fleet.store.con, clock=lambda: fleet.at, refresh_s=3600.0, show_timings=False)
    async with app.run_test(size=(160, 48)) as pilot:
        seen = await visit_every_view(app, pilot)
    # ib-node-1 has no GPU: no cell in the rack view, its links in the fabric view
    assert list(seen["panels"]) == ["h100-rack-1", "l4-rack-1", "k8s-rack-7", UNPLACED]
    assert "nvidia-dcgm-exporter-tl46n" in seen["panels"][UNPLACED]
    assert len(seen["rack_rows"]) == gpus
    assert {r["host"] for r in seen["rack_rows"]} == EXPORTER_HOSTS - {"ib-node-1"}
    assert seen["drill_host"] == "gpu-node-1" and seen["drill_gpus"] == 8
    assert seen["unplaced_hosts"] == ["nvidia-dcgm-exporter-tl46n"]
    assert UNPLACED in seen["unplaced_drill_title"]
    tenant_names = {r[0] for r in seen["tenants"]}
    assert tenant_names == {"dynamo-workload", "runai-reservation", "inference"}
    inference = next(r for r in seen["tenants"] if r[0] == "inference")
    assert inference[5] == "– / 50"  # the default target (one scrape: no interval latency)
    # node_exporter's InfiniBand ports, under the rack the topology file gives their host
    assert [r[0] for r in seen["fabric_racks"]] == ["h100-rack-1"]
    assert {r[1] for r in seen["fabric_links"]} == {"ib-node-1"}
    assert [UNPLACED, "1"] in seen["sql"]
    fleet.store.close()
