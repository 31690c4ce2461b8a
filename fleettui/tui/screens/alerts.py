"""Alerts view: pending, firing and resolved alerts; Enter jumps to what is alerted on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from fleettui.tui.screens.base import DataScreen, Reader
from fleettui.tui.widgets.header import FleetHeader
from fleettui.tui.widgets.scale import fmt_duration, fmt_num
from fleettui.tui.widgets.table import Col, ViewTable
from storage.views import alert_list, alerts_available

STATE_STYLE = {"firing": "bold white on red", "pending": "bold black on yellow",
               "resolved": "green"}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}
STATES = ("", "firing", "pending", "resolved")

def _target(key: str | None, r: dict) -> str:
    """What the alert is on, readably: a GPU or slice as host and index."""
    if r.get("gpu_index") is not None and r.get("host"):
        slice_ = key.split("/", 1)[1] if key and "/" in key else ""
        return f"{r['host']} GPU{r['gpu_index']}" + (f" {slice_}" if slice_ else "")
    return key or "–"


COLS = [
    Col("state", "state", lambda v, _r: Text(f" {v} ", style=STATE_STYLE.get(v, ""))),
    Col("severity", "severity", lambda v, _r: Text(v or "–", style=SEVERITY_STYLE.get(v, ""))),
    Col("rule", "rule"),
    Col("scope", "scope"),
    Col("on", "scope_key", lambda v, r: _target(v, r)),
    Col("value", "value", lambda v, _r: Text(fmt_num(v, 1), justify="right")),
    Col("peak", "peak_value", lambda v, _r: Text(fmt_num(v, 1), justify="right")),
    Col("for", "duration_s", lambda v, _r: fmt_duration(v)),
    Col("since", "started_at", lambda v, _r: f"{v:%m-%d %H:%M:%S}" if v else "–"),
    Col("summary", "summary", lambda v, _r: v or ""),
]


@dataclass(frozen=True, slots=True)
class AlertsData:
    available: bool
    table: pa.Table


class AlertsScreen(DataScreen):
    view_title = "Alerts"

    BINDINGS = [
        Binding("f", "cycle_state", "state filter"),
        Binding("enter", "jump", "go to", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.state = ""

    def compose(self) -> ComposeResult:
        yield FleetHeader()
        yield Static(id="alerts-title", classes="section")
        yield ViewTable(COLS, key="scope_key", id="alerts-table")
        yield Static(id="alerts-empty", classes="empty")
        yield Footer()

    def fetch(self, reader: Reader, at: datetime) -> AlertsData:
        if not alerts_available(reader):
            return AlertsData(False, pa.table({}))
        return AlertsData(True, alert_list(reader, at))

    def show(self, data: AlertsData) -> None:
        table = self.query_one(ViewTable)
        empty = self.query_one("#alerts-empty", Static)
        rows = data.table
        if data.available and self.state:
            rows = rows.filter(pc.equal(rows.column("state"), self.state))
        counts = {}
        if data.available:
            for s in data.table.column("state").to_pylist():
                counts[s] = counts.get(s, 0) + 1
        title = Text(" Alerts", style="bold")
        for s in STATES[1:]:
            title.append(f"   {s} ", style="dim")
            title.append(str(counts.get(s, 0)), style=STATE_STYLE[s] if counts.get(s) else "dim")
        title.append(f"   showing: {self.state or 'all'}", style="dim")
        self.query_one("#alerts-title", Static).update(title)
        if not data.available:
            table.display = False
            empty.display = True
            empty.update("No alert history in this store yet: the alert engine writes the "
                         "`alerts` table when it runs (daemon, or the demo with rules).")
            return
        table.display = True
        empty.display = rows.num_rows == 0
        empty.update("No alerts at this moment." if rows.num_rows == 0 else "")
        table.load(rows)

    def action_cycle_state(self) -> None:
        self.state = STATES[(STATES.index(self.state) + 1) % len(STATES)]
        self.reload()

    async def action_jump(self) -> None:
        row = self.query_one(ViewTable).current()
        if not row:
            return
        scope, key, host = row.get("scope"), row.get("scope_key") or "", row.get("host")
        if scope in ("tenant", "endpoint"):
            await self.app.switch_mode("tenants")
        elif scope == "link":
            await self.app.switch_mode("fabric")
        elif host:
            gpu = key if key.startswith("GPU-") else None
            self.app.drill_down(host, gpu.split("/")[0] if gpu else None)
        else:
            await self.app.show_racks(key)

    async def on_data_table_row_selected(self, _event) -> None:
        await self.action_jump()
