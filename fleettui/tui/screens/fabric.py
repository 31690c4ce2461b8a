"""Fabric view: per-rack fabric health, then every link worst first."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from fleettui.tui.screens.base import DataScreen, Reader
from fleettui.tui.widgets.header import FleetHeader
from fleettui.tui.widgets.scale import fmt_num, fmt_rate, pct_text
from fleettui.tui.widgets.section import set_line
from fleettui.tui.widgets.table import Col, ViewTable
from storage.views import Fabric, fabric
from storage.views.rack import UNPLACED

KINDS = ("", "nvlink", "ib", "efa", "roce", "iwarp")
LINK_ROWS, RACK_ROWS = 60, 40


def _state(v, r) -> Text:
    if r["link_up"] is None:  # the source cannot say (not "down")
        return Text("?", style="dim")
    if not r["link_up"]:
        return Text("DOWN", style="bold white on red")
    if r["errors_per_s"]:
        return Text("ERR", style="bold red")
    return Text("up", style="green")


def _err(v, _r) -> Text:
    return Text(fmt_num(v, 1), style="bold red" if v else "dim", justify="right")


RACK_COLS = [
    Col("rack", "rack", lambda v, _r: v or UNPLACED),
    Col("links", "links", lambda v, _r: f"{v:,}"),
    Col("down", "links_down", lambda v, _r: Text(str(v), style="bold red" if v else "dim")),
    Col("err/s", "errors_per_s", _err),
    Col("NVLink %", "nvlink_util_pct", lambda v, _r: pct_text(v)),
    Col("net %", "net_util_pct", lambda v, _r: pct_text(v)),
    Col("max %", "max_util_pct", lambda v, _r: pct_text(v)),
    Col("traffic", "bytes_per_s", lambda v, _r: fmt_rate(v)),
]
LINK_COLS = [
    Col("state", "link_up", _state),
    Col("host", "host"),
    Col("port", "port"),
    Col("util %", "util_pct", lambda v, _r: pct_text(v)),
    Col("err/s", "errors_per_s", _err),
    Col("tenants behind", "tenants", lambda v, _r: v or "–"),
    Col("kind", "kind"),
    Col("tx", "tx_bytes_per_s", lambda v, _r: fmt_rate(v)),
    Col("rx", "rx_bytes_per_s", lambda v, _r: fmt_rate(v)),
]


class FabricScreen(DataScreen):
    view_title = "Fabric"

    BINDINGS = [
        Binding("k", "cycle_kind", "link kind"),
        Binding("enter", "drill", "drill down", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kind = ""

    def compose(self) -> ComposeResult:
        yield FleetHeader()
        yield Static(id="fabric-title", classes="section")
        yield ViewTable(RACK_COLS, key="rack", id="fabric-racks")
        yield Static(f" The {LINK_ROWS} worst links (down, erroring, hottest)", classes="section")
        yield ViewTable(LINK_COLS, key="port", id="fabric-links")
        yield Footer()

    def fetch(self, reader: Reader, at: datetime) -> Fabric:
        # a 10 s window: link rates and per-sample error counts need no longer one;
        # the worst links and racks only (a DataTable row costs ~0.5 ms to refresh):
        # the rest are the healthy ones, and `fleettui sql` has them all
        return fabric(
            reader, at, kind=self.kind, window_s=10.0, limit=LINK_ROWS, rack_limit=RACK_ROWS
        )

    def show(self, data: Fabric) -> None:
        self.query_one("#fabric-racks", ViewTable).load(data.racks)
        self.query_one("#fabric-links", ViewTable).load(data.links)
        title = Text(" Fabric per rack, worst first", style="bold")
        title.append(
            f"   {data.links_total:,} links   showing: {self.kind or 'all kinds'}", style="dim"
        )
        if data.links_down:
            title.append(f"   {data.links_down} down", style="bold red")
        set_line(self.query_one("#fabric-title", Static), title)

    def action_cycle_kind(self) -> None:
        self.kind = KINDS[(KINDS.index(self.kind) + 1) % len(KINDS)]
        self.reload()

    def action_drill(self) -> None:
        row = self.query_one("#fabric-links", ViewTable).current()
        if row:
            self.app.drill_down(row["host"], row.get("gpu_uuid"))

    async def on_data_table_row_selected(self, event) -> None:
        if event.data_table.id == "fabric-links":
            self.action_drill()
        elif event.data_table.id == "fabric-racks":
            row = event.data_table.current()
            if row:
                await self.app.show_racks(f"rack:{row['rack'] or UNPLACED}")
