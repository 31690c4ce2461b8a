"""Alerts view: pending, firing and resolved alerts; Enter jumps to what is alerted on.

`a` acknowledges the alert under the cursor and `x` silences its rule on its
scope key, for an hour, through the alert engine's API (stored with who and
until when), when the app holds the store (demo, or collecting with --config),
or attached to a daemon with its operator token (the daemon's own user); with
only the viewer token the app reads.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from fleettui.safe_text import pictured
from fleettui.tui.screens.base import DataScreen, Reader
from fleettui.tui.widgets.header import FleetHeader
from fleettui.tui.widgets.scale import fmt_duration, fmt_num
from fleettui.tui.widgets.table import Col, ViewTable
from storage.views import alert_list, alerts_available
from storage.views.rack import UNPLACED

STATE_STYLE = {
    "firing": "bold white on red",
    "pending": "bold black on yellow",
    "resolved": "green",
}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}
STATES = ("", "firing", "pending", "resolved")
MUTE_FOR = timedelta(hours=1)


def _muted(v, r) -> Text:
    if not v:
        return Text("")
    until = r.get("muted_until")
    return Text(
        f"{'ack' if v == 'ack' else 'silenced'} {r.get('muted_by') or ''}"
        + (f" → {until:%H:%M}" if until else ""),
        style="italic",
    )


def _target(key: str | None, r: dict) -> str:
    """What the alert is on, readably: a GPU or slice as host and index; a host that no
    topology places says so."""
    where = f" ({UNPLACED})" if r.get("host") and not r.get("rack") else ""
    if r.get("gpu_index") is not None and r.get("host"):
        slice_ = key.split("/", 1)[1] if key and "/" in key else ""
        return f"{r['host']} GPU{r['gpu_index']}" + (f" {slice_}" if slice_ else "") + where
    return (key or "–") + where


COLS = [
    Col("state", "state", lambda v, _r: Text(f" {v} ", style=STATE_STYLE.get(v, ""))),
    Col("severity", "severity", lambda v, _r: Text(v or "–", style=SEVERITY_STYLE.get(v, ""))),
    Col("rule", "rule"),
    Col("scope", "scope"),
    Col("on", "scope_key", lambda v, r: _target(v, r)),
    Col("value", "value", lambda v, _r: Text(fmt_num(v, 1), justify="right")),
    # the most extreme value in the rule's direction (lowest for `<` rules): "peak" misread
    Col("worst", "peak_value", lambda v, _r: Text(fmt_num(v, 1), justify="right")),
    Col("for", "duration_s", lambda v, _r: fmt_duration(v)),
    Col("since", "started_at", lambda v, _r: f"{v:%m-%d %H:%M:%S}" if v else "–"),
    Col("muted", "muted_kind", _muted),
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
        Binding("a", "mute('ack')", "ack 1h"),
        Binding("x", "mute('silence')", "silence 1h"),
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
            empty.update(
                "No alert table in this store: the alert engine (migration 0004) writes it."
            )
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

    def action_mute(self, kind: str) -> None:
        row = self.query_one(ViewTable).current()
        if row is None:
            return
        if self._target() is None:
            self.notify(
                "read-only here: acknowledging and silencing needs the daemon's operator "
                "token (its own user) or the store itself (--config)",
                severity="warning",
            )
            return
        if row.get("state") == "resolved":
            self.notify("that alert is resolved", severity="warning")
            return
        self._mute(kind, row)

    def _target(self):
        """Where an acknowledgement goes: the store the app writes, or the daemon
        reached with the operator token; None when the app only reads."""
        if self.app.store is not None:
            return self.app.store
        return self.app.reader if getattr(self.app.reader, "can_operate", False) else None

    @work(thread=True, group="alert-mute", exit_on_error=False)
    def _mute(self, kind: str, row: dict) -> str:
        from fleettui.alerts.silences import acknowledge, silence

        now = self.app.clock()
        by = getpass.getuser()
        target = self._target()
        if kind == "ack":
            acknowledge(target, row["alert_id"], by=by, until=now + MUTE_FOR, now=now)
            return f"acknowledged {row['rule']} on {row['scope_key']} for an hour"
        silence(
            target,
            by=by,
            until=now + MUTE_FOR,
            rule=row["rule"],
            scope_key=row["scope_key"],
            now=now,
            comment="from the app",
        )
        return f"silenced {row['rule']} on {row['scope_key']} for an hour"

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "alert-mute":
            super().on_worker_state_changed(event)
            return
        if event.state == WorkerState.SUCCESS:
            self.notify(pictured(event.worker.result), markup=False)
            self.reload()
        elif event.state == WorkerState.ERROR:
            self.notify(
                pictured(str(event.worker.error).splitlines()[0]), severity="error", markup=False
            )

    async def on_data_table_row_selected(self, _event) -> None:
        await self.action_jump()
