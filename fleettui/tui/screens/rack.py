"""Rack view (home): every rack side by side, a cell per GPU coloured by a metric."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Input, Static

from fleettui.tui.early_rack import RackData, rack_data
from fleettui.tui.screens.base import DataScreen, Reader
from fleettui.tui.widgets.filter_bar import FilterBar
from fleettui.tui.widgets.header import FleetHeader
from fleettui.tui.widgets.rack_grid import RackGrid
from fleettui.tui.widgets.scale import HEAT, METRICS, fmt_num
from fleettui.tui.widgets.table import safe_cell
from storage.views import RackFilter
from storage.views.rack import STATES, UNPLACED

__all__ = ["RackData", "RackScreen"]


class RackScreen(DataScreen):
    view_title = "Racks"

    BINDINGS = [
        Binding("m", "cycle_metric", "metric"),
        Binding("z", "toggle_wide", "zoom"),
        Binding("slash", "filter", "filter"),
        Binding("escape", "clear_filter", "clear filter", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.flt = RackFilter()

    def compose(self) -> ComposeResult:
        yield FleetHeader()
        yield FilterBar(
            f"filter: rack: host: tenant: model: state:{'|'.join(STATES)} or text",
            id="rack-filter",
        )
        yield RackGrid(id="rack-grid")
        yield Static(id="rack-status", classes="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(FilterBar).display = False
        self.query_one(RackGrid).focus()
        super().on_mount()

    @property
    def grid(self) -> RackGrid:
        return self.query_one(RackGrid)

    def fetch(self, reader: Reader, at: datetime) -> RackData:
        flt = self.flt
        # the first refresh: the query the launch started before Textual loaded
        # (fleettui/tui/early_rack.py; None once taken, or when it stands for another cursor)
        take = getattr(self.app, "take_early_rack", None)
        early = take(at) if take is not None and not str(flt) else None
        if early is not None:
            return early.result()
        return rack_data(reader, at, flt)

    def show(self, data: RackData) -> None:
        if data.totals is not None:
            self.app.totals = data.totals
        self.grid.update_data(data.table, data.alerts)
        self._status()

    def supplies_totals(self) -> bool:
        return not str(self.flt) and not self.failed

    # -- status line -------------------------------------------------------------
    def on_rack_grid_moved(self, _: RackGrid.Moved) -> None:
        self._status()

    def _status(self) -> None:
        grid = self.grid
        t = grid.table
        line = Text(no_wrap=True, overflow="ellipsis")
        label = dict(METRICS)[grid.metric]
        line.append(f" {label} ", style="bold")
        for c in HEAT:
            line.append(" ", style=f"on {c}")
        line.append(" ")
        if str(self.flt):
            line.append(f" filter: {self.flt} ", style="bold black on #d8b82c")
            line.append(" ")
        if t is None or t.num_rows == 0:
            line.append("no GPUs match" if str(self.flt) else "no GPUs yet", style="dim")
        else:
            r = t.slice(grid.cursor, 1).to_pylist()[0]
            idx = "?" if r["gpu_index"] is None else r["gpu_index"]
            line.append(f"{r['host']} GPU{idx} ", style="bold")
            if not r["rack"]:
                line.append(f"{UNPLACED} ", style="dim")
            if r["host_stale"]:
                line.append("host silent ", style="bold #8a8a8a")
            elif r["gpu_missing"]:
                line.append("GPU missing ", style="bold red")
            line.append(
                f"{r['name'] or 'GPU model unknown'}  util {fmt_num(r['util_pct'])}%  "
                f"mem {fmt_num(r['mem_pct'])}%  {fmt_num(r['power_w'])} W  "
                f"{fmt_num(r['temp_c'])} °C  "
            )
            if r["n_slices"]:
                line.append(f"{r['n_slices']} slices  ")
            if r["errors"]:
                line.append(f"errors {r['errors']}  ", style="bold red")
            line.append(r["tenants"] or "unallocated", style="italic")
            line.append(f"   [{t.num_rows:,} GPUs shown]", style="dim")
        self.query_one("#rack-status", Static).update(safe_cell(line))  # names from the fleet

    # -- actions -----------------------------------------------------------------
    def action_cycle_metric(self) -> None:
        keys = [m for m, _ in METRICS]
        grid = self.grid
        grid.metric = keys[(keys.index(grid.metric) + 1) % len(keys)]
        self._status()

    def action_toggle_wide(self) -> None:
        self.grid.wide = not self.grid.effective_wide

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def action_clear_filter(self) -> None:
        bar = self.query_one(FilterBar)
        bar.value = ""
        bar.display = False
        self.set_filter("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "rack-filter":
            event.input.display = False
            self.grid.focus()
            self.set_filter(event.value)

    def set_filter(self, spec: str) -> None:
        flt = RackFilter.parse(spec)
        if flt.state and flt.state not in STATES:
            self.notify(
                f"state:{flt.state}: expected one of {', '.join(STATES)}",
                markup=False,
                severity="warning",
            )
            return
        self.flt = flt
        bar = self.query_one(FilterBar)
        bar.applied = bar.value = spec
        self.grid.cursor = 0
        self.reload()

    def on_rack_grid_selected(self, event: RackGrid.Selected) -> None:
        self.app.drill_down(event.host, event.gpu_uuid)
