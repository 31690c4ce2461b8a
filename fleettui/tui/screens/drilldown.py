"""Drill-down: a host's GPUs; the selected GPU's slices, processes and history; events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Static

from fleettui.tui.screens.base import DataScreen, Reader
from fleettui.tui.widgets.header import FleetHeader
from fleettui.tui.widgets.history import SERIES, HistoryPanel
from fleettui.tui.widgets.scale import fmt_bytes, fmt_num, pct_text
from fleettui.tui.widgets.table import Col, ViewTable, safe_cell
from storage.views import gpu_history, host_events, host_gpus, host_processes, host_slices
from storage.views.rack import UNPLACED

THROTTLE = {0x1: "idle", 0x4: "power", 0x20: "sw-thermal", 0x40: "hw-thermal", 0x80: "hw-brake"}


def _throttle(v, _r) -> Text:
    if not v:
        return Text("–", style="dim")
    names = [n for bit, n in THROTTLE.items() if v & bit and n != "idle"]
    return Text(",".join(names) or "idle", style="bold yellow" if names else "dim")


def _ecc(v, r) -> Text:
    dbe = r.get("ecc_dbe_total") or 0
    return Text(f"{v or 0}/{dbe}", style="bold red" if dbe else "dim", justify="right")


GPU_COLS = [
    Col("#", "gpu_index"),
    Col("GPU", "name", lambda v, r: (v or "?").replace("NVIDIA ", "")[:22]),
    Col(
        "util",
        "util_pct",
        lambda v, r: pct_text(v) if r["sample_ts"] else Text("MISSING", "bold red"),
    ),
    Col("mem %", "mem_pct", lambda v, _r: pct_text(v, hot=95)),
    Col("power W", "power_w", lambda v, _r: Text(fmt_num(v), justify="right")),
    Col("°C", "temp_c", lambda v, _r: pct_text(v, hot=85, cold=-1)),
    Col("SM MHz", "sm_clock_mhz", lambda v, _r: Text(fmt_num(v), justify="right")),
    Col("ECC s/d", "ecc_sbe_total", _ecc),
    Col("throttle", "throttle_reasons", _throttle),
    Col("tenant", "tenants", lambda v, r: v or ("MIG" if r["mig_mode"] else "–")),
]
SLICE_COLS = [
    Col("GPU", "gpu_index"),
    Col("slice", "slice_id", lambda v, _r: (v or "–").rsplit("/", 1)[-1]),
    Col("profile", "profile"),
    Col("share", "fraction", lambda v, _r: "–" if v is None else f"{v:.3g}"),
    Col("tenant", "tenant", lambda v, _r: v or "–"),
    Col("util", "util_pct", lambda v, _r: pct_text(v)),
    Col("memory", "mem_used_bytes", lambda v, _r: fmt_bytes(v)),
]
EVENT_COLS = [
    Col("time", "ts", lambda v, _r: f"{v:%m-%d %H:%M:%S}" if v else "–"),
    Col(
        "kind",
        "kind",
        lambda v, _r: Text(v or "–", style="bold red" if v and ("xid" in v or "ecc" in v) else ""),
    ),
    Col("code", "code", lambda v, _r: "–" if v is None else str(v)),
    Col("GPU", "gpu_index", lambda v, _r: "host" if v is None else str(v)),
    Col("detail", "detail", lambda v, _r: v or ""),
]


def _proc_cell(col: str, v) -> str:
    if v is None:
        return "–"
    if col == "slice_id":
        return v.rsplit("/", 1)[-1]
    if col == "used_mem_bytes":
        return fmt_bytes(v)
    if col == "container":
        return str(v)[:12]
    return str(v)


@dataclass(frozen=True, slots=True)
class HostData:
    gpus: pa.Table
    slices: pa.Table
    history: pa.Table
    events: pa.Table
    processes: pa.Table | None


class DrilldownScreen(DataScreen):
    """host → GPUs → slices → processes, with an hour of history and the host's events.

    `Enter` goes one level down (host: open the GPU under the cursor; GPU: the
    slice under the cursor and its processes), `Esc` one level up, then back to
    the view it came from. The title says where you are.
    """

    BINDINGS = [
        Binding("escape,backspace", "up", "back"),
        Binding("enter", "down", "open", show=True),
    ]

    def __init__(self, host: str, gpu_uuid: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.gpu_uuid = gpu_uuid
        self.view_title = f"Host {host}"
        self.data: HostData | None = None
        self.level = "host"  # host -> gpu -> slice
        self.slice_id: str | None = None  # the slice opened (level "slice")
        self._history_kept: tuple[datetime, pa.Table] | None = None  # (read at, table)
        # what the title, sparklines and processes show now: a refresh that would show
        # the same leaves them alone (Static/Label.update and a table's refill relayout
        # the screen, ~13 ms of a 100k-GPU frame)
        self._title_shown: object = None
        self._series_shown: tuple | None = None  # (history table, gpu_uuid, label)
        self._procs_shown: tuple | None = None

    def compose(self) -> ComposeResult:
        yield FleetHeader()
        with VerticalScroll(id="drill-body"):
            yield Static(id="drill-title", classes="section")
            yield ViewTable(GPU_COLS, key="gpu_uuid", id="drill-gpus")
            with Horizontal(id="drill-mid"):
                yield HistoryPanel(id="drill-history")
                with Vertical(id="drill-right"):
                    yield Static(" Slices", classes="section")
                    yield Static(
                        "whole GPU (no MIG instances or shares)",
                        id="drill-no-slices",
                        classes="empty",
                    )
                    yield ViewTable(SLICE_COLS, key="slice_id", id="drill-slices")
                    yield Static(" Processes", classes="section")
                    yield Static(id="drill-procs-empty", classes="empty")
                    yield DataTable(id="drill-procs", zebra_stripes=True, cursor_type="row")
            yield Static(" Events (24 h)", classes="section")
            yield ViewTable(EVENT_COLS, key="ts", id="drill-events")
        yield Footer()

    def on_mount(self) -> None:
        self.app.view_title = self.view_title
        self.query_one("#drill-gpus", ViewTable).focus()
        super().on_mount()

    def fetch(self, reader: Reader, at: datetime) -> HostData:
        return HostData(
            host_gpus(reader, self.host, at),
            host_slices(reader, self.host, at),
            self._history(reader, at),
            host_events(reader, self.host, at),
            host_processes(reader, self.host, at),
        )

    # 30 s buckets over an hour: a short history still draws a readable curve
    HISTORY_WINDOW_S = 3600.0
    HISTORY_BUCKETS = 120

    def _history(self, reader: Reader, at: datetime) -> pa.Table:
        """The sparklines' history, read again once the cursor moved by a bucket (or
        back): it scans the host's hour of samples, and within a bucket a refresh
        would redraw almost the same curve (issue 13: refresh cost at 100k GPUs)."""
        bucket_s = self.HISTORY_WINDOW_S / self.HISTORY_BUCKETS
        kept = self._history_kept
        if kept is not None and 0 <= (at - kept[0]).total_seconds() < bucket_s:
            return kept[1]
        table = gpu_history(
            reader, self.host, at, window_s=self.HISTORY_WINDOW_S, buckets=self.HISTORY_BUCKETS
        )
        self._history_kept = (at, table)
        return table

    def show(self, data: HostData) -> None:
        self.data = data
        gpus = self.query_one("#drill-gpus", ViewTable)
        first = not gpus.rows_data
        gpus.load(data.gpus)
        if first and self.gpu_uuid:
            uuids = data.gpus.column("gpu_uuid").to_pylist()
            if self.gpu_uuid in uuids:
                gpus.move_cursor(row=uuids.index(self.gpu_uuid), animate=False)
        self.query_one("#drill-events", ViewTable).load(data.events)
        self._selected()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "drill-gpus" and self.data is not None:
            self._selected()

    # -- levels ------------------------------------------------------------------
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_down(event.data_table.id)

    def action_down(self, table_id: str | None = None) -> None:
        """One level down from the table with focus (or the one named)."""
        table_id = table_id or getattr(self.focused, "id", None)
        slices = self.query_one("#drill-slices", ViewTable)
        procs = self.query_one("#drill-procs", DataTable)
        if table_id == "drill-gpus" and self.query_one("#drill-gpus", ViewTable).current():
            self.level, self.slice_id = "gpu", None
            (slices if slices.display else procs).focus()
        elif table_id == "drill-slices" and slices.current():
            self.level, self.slice_id = "slice", slices.current()["slice_id"]
            procs.focus()
        else:
            return
        self._selected()

    def action_up(self) -> None:
        if self.level == "slice":
            self.level, self.slice_id = "gpu", None
            self._selected()
            self.query_one("#drill-slices", ViewTable).focus()
        elif self.level == "gpu":
            self.level = "host"
            self._selected()
            self.query_one("#drill-gpus", ViewTable).focus()
        else:
            self.app.pop_screen()

    def _selected(self) -> None:
        """Show history, slices and processes of the GPU under the cursor."""
        data = self.data
        if data is None:
            return
        row = self.query_one("#drill-gpus", ViewTable).current()
        uuid = row["gpu_uuid"] if row else None
        idx = row["gpu_index"] if row else None
        title = Text(f" {self.host}", style="bold")
        if row and not row.get("rack"):
            title.append(f"   {UNPLACED}", style="dim")
        if row:
            opened = self.level in ("gpu", "slice")
            title.append(f" › GPU{'?' if idx is None else idx}", style="bold" if opened else "dim")
            if self.slice_id:
                title.append(f" › {self.slice_id.rsplit('/', 1)[-1]} › processes", style="bold")
            title.append(f"   {uuid}", style="dim")
            if not row["sample_ts"]:
                title.append("   not reporting", style="bold red")
            if self.level == "host":
                title.append("   Enter: open this GPU", style="dim italic")
            elif self.level == "gpu":
                title.append(
                    "   Enter: a slice's processes · Esc: back to the host", style="dim italic"
                )
        shown = safe_cell(title)
        if shown != self._title_shown:
            self.query_one("#drill-title", Static).update(shown)
            self._title_shown = shown
        hist = data.history
        label = f"GPU{'?' if idx is None else idx} last hour" if row else ""
        kept = self._series_shown
        if kept is None or kept[0] is not hist or kept[1:] != (uuid, label):
            mask = [u == uuid for u in hist.column("gpu_uuid").to_pylist()]
            sel = hist.filter(pa.array(mask, pa.bool_())) if hist.num_rows else hist
            series = {k: sel.column(k).to_pylist() for k, _ in SERIES} if sel.num_rows else {}
            self.query_one(HistoryPanel).update_series(series, label)
            self._series_shown = (hist, uuid, label)
        slices = data.slices
        if slices.num_rows and idx is not None:
            keep = [i == idx for i in slices.column("gpu_index").to_pylist()]
            slices = slices.filter(pa.array(keep, pa.bool_()))
        table = self.query_one("#drill-slices", ViewTable)
        table.load(slices)
        table.display = slices.num_rows > 0
        self.query_one("#drill-no-slices", Static).display = slices.num_rows == 0
        self._processes(uuid)

    def _processes(self, uuid: str | None) -> None:
        empty = self.query_one("#drill-procs-empty", Static)
        table = self.query_one("#drill-procs", DataTable)
        procs = self.data.processes if self.data else None
        if procs is None:
            if self._procs_shown != ():
                empty.update("no process data (the NVML agent records processes)")
                empty.display, table.display = True, False
                self._procs_shown = ()
            return
        rows = [
            r
            for r in procs.to_pylist()
            if r.get("gpu_uuid") == uuid
            and (self.slice_id is None or r.get("slice_id") == self.slice_id)
        ]
        note = (
            "no processes in this slice"
            if self.slice_id
            else "no processes on this GPU (or no agent reporting them)"
        )
        # the agent's columns, shown readably; any others as they come
        known = {
            "slice_id": "slice",
            "pid": "pid",
            "used_mem_bytes": "memory",
            "container": "container",
            "tenant_guess": "tenant",
        }
        skip = {"ts", "gpu_uuid", "host", "source", "cgroup"}
        if not any(r.get("slice_id") for r in rows):  # not a MIG GPU: no slice column
            skip.add("slice_id")
        cols = [c for c in known if c in procs.column_names and c not in skip] + [
            c for c in procs.column_names if c not in known and c not in skip
        ]
        cells = [[_proc_cell(c, r[c]) for c in cols] for r in rows]
        state = (note, tuple(cols), cells)
        if state == self._procs_shown:
            return
        self._procs_shown = state
        empty.display, table.display = not rows, bool(rows)
        empty.update(note)
        labels = [safe_cell(known.get(c, c)) for c in cols]
        if [str(c.label) for c in table.columns.values()] != [str(x) for x in labels]:
            table.clear(columns=True)
            table.add_columns(*labels)
        else:  # same columns: only the rows change (no flicker, no relayout)
            table.clear()
        table.add_rows([[safe_cell(v) for v in row] for row in cells])
        table.refresh(layout=True)
