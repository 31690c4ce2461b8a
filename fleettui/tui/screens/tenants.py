"""Tenant view: holdings, utilisation, GPU-hours, idle allocations, latency."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from fleettui.tui.screens.base import DataScreen, Reader
from fleettui.tui.widgets.header import FleetHeader
from fleettui.tui.widgets.scale import fmt_bytes, fmt_num, pct_text
from fleettui.tui.widgets.table import Col, ViewTable
from storage.views import tenant_summary

WINDOWS = ((3600.0, "1 h"), (86400.0, "24 h"), (7 * 86400.0, "7 d"))


def _itl(v, r) -> Text:
    target = r.get("itl_target_ms")
    if v is None:  # no latency yet: the target alone, so a configured one is visible
        if target:
            return Text(f"– / {target:.0f}", style="dim", justify="right")
        return Text("–", style="dim")
    over = target is not None and v > target
    s = f"{v:.1f}" + (f" / {target:.0f}" if target else "")
    return Text(s, style="bold red" if over else "green", justify="right")


def _idle(v, r) -> Text:
    if not v:
        return Text("0", style="dim", justify="right")
    return Text(f"{v} ({r['idle_gpus']:.2f} GPU)", style="bold yellow", justify="right")


# Most telling first, so a narrow terminal shows them without scrolling.
COLS = [
    Col("tenant", "tenant"),
    Col("GPUs", "gpus", lambda v, _r: Text(f"{v:.2f}".rstrip("0").rstrip("."), justify="right")),
    Col("util mean", "util_mean_pct", lambda v, _r: pct_text(v, hot=101)),
    Col("util p95", "util_p95_pct", lambda v, _r: pct_text(v, hot=101)),
    Col("idle alloc", "idle_allocations", _idle),
    Col("ITL p99 / target ms", "itl_p99_ms", _itl),
    Col(
        "alerts",
        "alerts_firing",
        lambda v, _r: Text(str(v), style="bold red" if v else "dim", justify="right"),
    ),
    Col("slices", "slices", lambda v, _r: Text(str(v), justify="right")),
    Col("GPU-h", "gpu_hours", lambda v, _r: Text(fmt_num(v, 1), justify="right")),
    Col("memory", "mem_used_bytes", lambda v, _r: fmt_bytes(v)),
    Col("ITL p50", "itl_p50_ms", lambda v, _r: Text(fmt_num(v, 1), justify="right")),
    Col("tier", "tier"),
]


class TenantsScreen(DataScreen):
    view_title = "Tenants"

    BINDINGS = [
        Binding("s", "sort", "sort"),
        Binding("w", "window", "GPU-h window"),
        Binding("enter", "show_gpus", "its GPUs", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.window = 1

    def compose(self) -> ComposeResult:
        yield FleetHeader()
        yield Static(id="tenants-title", classes="section")
        yield ViewTable(COLS, key="tenant", id="tenants-table")
        yield Footer()

    def fetch(self, reader: Reader, at: datetime) -> pa.Table:
        return tenant_summary(reader, at, hours_window_s=WINDOWS[self.window][0])

    def show(self, data: pa.Table) -> None:
        self.query_one(ViewTable).load(data)
        self._title()

    def _title(self) -> None:
        t = self.query_one(ViewTable)
        sort = next((c.label for c in COLS if c.key == t.sort_key), "GPUs held")
        title = Text(" Tenants", style="bold")
        title.append(
            f"   GPU-hours over {WINDOWS[self.window][1]}   utilisation over 30 s"
            f"   sorted by {sort}   (fractional shares count as fractions)",
            style="dim",
        )
        self.query_one("#tenants-title", Static).update(title)

    def action_sort(self) -> None:
        t = self.query_one(ViewTable)
        t.sort_next()
        t.load(pa.Table.from_pylist(t.rows_data))
        self._title()

    def action_window(self) -> None:
        self.window = (self.window + 1) % len(WINDOWS)
        self.reload()

    async def on_data_table_row_selected(self, event) -> None:
        row = self.query_one(ViewTable).current()
        if row:
            await self.app.show_racks(f"tenant:{row['tenant']}")
