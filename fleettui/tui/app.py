"""The FleetTUI terminal app.

The app reads the store through a reader (`storage.reader.LocalReader` on the
store in-process or a file, `QuackReader` on a running daemon) and a clock,
both injected, so tests and the daemon-attached mode give their own. Each view is a
mode (`MODES`); the drill-down is pushed on top. The time cursor `at` moves
every view back in time; None is live.
"""

from __future__ import annotations

import gc
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from textual import work
from textual.app import App, ScreenStackError
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from fleettui.background import BackgroundRuntime
from fleettui.tui.clock import Clock, utc_now
from fleettui.tui.commands import FleetCommands
from fleettui.tui.early_rack import EarlyQuery
from fleettui.tui.screens.alerts import AlertsScreen
from fleettui.tui.screens.base import DataScreen
from fleettui.tui.screens.drilldown import DrilldownScreen
from fleettui.tui.screens.fabric import FabricScreen
from fleettui.tui.screens.rack import RackScreen
from fleettui.tui.screens.tenants import TenantsScreen
from fleettui.tui.screens.time_jump import TimeJump
from storage.reader import LocalReader, Reader
from storage.store import Store
from storage.views import fleet_totals
from storage.views.live import warm_rack
from storage.views.when import STALE_AFTER_S

__all__ = ["Clock", "FleetApp", "utc_now"]


def _sql_screen() -> Screen:
    # imported when first opened: its TextArea is a tenth of the app's import time
    from fleettui.tui.screens.sql import SqlScreen

    return SqlScreen()


VIEWS = Binding.Group("views 1-5", compact=True)
TIME = Binding.Group("time", compact=True)


class FleetApp(App):
    """Racks, fabric, tenants, alerts, drill-down and SQL over one store."""

    CSS_PATH = Path(__file__).parent / "app.tcss"
    TITLE = "FleetTUI"
    COMMANDS = App.COMMANDS | {FleetCommands}
    MODES = {
        "rack": RackScreen,
        "fabric": FabricScreen,
        "tenants": TenantsScreen,
        "alerts": AlertsScreen,
        "sql": _sql_screen,
    }
    DEFAULT_MODE = "rack"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        Binding("1", "switch_mode('rack')", "racks", group=VIEWS),
        Binding("2", "switch_mode('fabric')", "fabric", group=VIEWS),
        Binding("3", "switch_mode('tenants')", "tenants", group=VIEWS),
        Binding("4", "switch_mode('alerts')", "alerts", group=VIEWS),
        Binding("5", "switch_mode('sql')", "SQL", group=VIEWS),
        Binding("f1", "switch_mode('rack')", "racks", show=False, priority=True),
        Binding("f2", "switch_mode('fabric')", "fabric", show=False, priority=True),
        Binding("f3", "switch_mode('tenants')", "tenants", show=False, priority=True),
        Binding("f4", "switch_mode('alerts')", "alerts", show=False, priority=True),
        Binding("f5", "switch_mode('sql')", "SQL", show=False, priority=True),
        Binding("left_square_bracket", "travel(-60)", "-1m", group=TIME),
        Binding("right_square_bracket", "travel(60)", "+1m", group=TIME),
        Binding("left_curly_bracket", "travel(-600)", "-10m", show=False),
        Binding("right_curly_bracket", "travel(600)", "+10m", show=False),
        Binding("L", "live", "live", group=TIME),
        Binding("t", "jump_time", "go to time", group=TIME),
        Binding("ctrl+t", "toggle_dark", "theme", show=False),
        Binding("q", "quit", "quit"),
    ]

    at: reactive[datetime | None] = reactive(None)
    """The time cursor (naive UTC); None follows the clock (live)."""
    totals: reactive[dict[str, Any] | None] = reactive(None)
    """Fleet totals at the cursor, for the header."""
    view_title: reactive[str] = reactive("Racks")
    """Title of the view shown."""

    def __init__(
        self,
        reader: Reader | duckdb.DuckDBPyConnection,
        *,
        clock: Clock = utc_now,
        refresh_s: float = 1.0,
        collector: BackgroundRuntime | None = None,
        store: Store | None = None,
        theme: str = "textual-dark",
        show_timings: bool = True,
        early_rack: EarlyQuery | None = None,
    ) -> None:
        super().__init__()
        # a bare connection gets a cursor per query, so worker threads never share one
        self.reader: Reader = (
            LocalReader(reader) if isinstance(reader, duckdb.DuckDBPyConnection) else reader
        )
        self.clock = clock
        self.refresh_s = refresh_s
        self.collector = collector
        # the writable store, when the app holds it (acknowledging alerts writes)
        self.store = store
        self._initial_theme = theme
        self.show_timings = show_timings  # off in snapshot tests: timings vary
        self._totals_timer: Timer | None = None
        self._totals_loading = False
        self._totals_again = False
        self._frozen = False  # gc.freeze() after the first data frame
        # the rack view's first query, started by the launch (fleettui/tui/early_rack.py)
        self._early_rack = early_rack

    def effective_at(self) -> datetime:
        return self.at if self.at is not None else self.clock()

    def take_early_rack(self, at: datetime) -> EarlyQuery | None:
        """The rack query the launch started, when it stands for the rack view's refresh
        at `at`; None once taken: only the first refresh may take it (worker thread)."""
        early, self._early_rack = self._early_rack, None
        return early if early is not None and early.stands_for(at, live=self.at is None) else None

    def on_mount(self) -> None:
        self.theme = self._initial_theme
        if self.collector is not None:
            self.collector.start()
            self.set_interval(5.0, self._check_collector)

    def first_data_shown(self) -> None:
        """A view painted its first data: the store's live snapshot may fill now (it
        waited, so as not to slow that first frame: storage/live.py FILL_START_S)."""
        live = self.store.live if self.store is not None else None
        if live is not None:
            live.after_fill(self._warm_live)
            live.go()
        if not self._frozen:
            # what start-up built (modules, widgets, screens: ~150k objects) is kept
            # out of the collector's full passes, which every refresh's allocations
            # trigger: each pass scanned it all (~10 ms per refresh at 100k GPUs).
            # Objects frozen are still freed by reference count; unfrozen on exit.
            self._frozen = True
            gc.freeze()

    def _warm_live(self) -> None:
        # the fill's thread, once it published: the rack layout the first live refresh
        # would build (storage/views/live.py warm_rack)
        warm_rack(self.reader, self.effective_at(), STALE_AFTER_S)

    def _check_collector(self) -> None:
        c = self.collector
        if c is not None and not c.running and c.error is not None:
            self.notify(
                f"collection stopped: {c.error}", severity="error", timeout=30, markup=False
            )
            self.collector = None

    def on_unmount(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        if self._frozen:
            self._frozen = False
            gc.unfreeze()

    # -- header totals -----------------------------------------------------------
    @work(thread=True, exclusive=True, group="totals", exit_on_error=False)
    def _load_totals(self, at: datetime) -> dict[str, Any]:
        return fleet_totals(self.reader, at)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "totals" or event.state not in (
            WorkerState.SUCCESS,
            WorkerState.ERROR,
        ):
            return
        self._totals_loading = False
        if event.state == WorkerState.SUCCESS:
            self.totals = event.worker.result
        if self._totals_again:
            self._totals_again = False
            self._reload_totals()
        else:
            self._totals_timer = self.set_timer(self.refresh_s, self._reload_totals)

    def _reload_totals(self) -> None:
        """Refresh the totals now, or right after the refresh in flight (never two at once);
        not while the screen shown sets them from its own refresh (the unfiltered racks)."""
        if self._totals_loading:
            self._totals_again = True
            return
        if self._totals_timer is not None:
            self._totals_timer.stop()
            self._totals_timer = None
        try:
            screen = self.screen
        except ScreenStackError:  # the app is closing: its screens are gone, no totals
            return
        if isinstance(screen, DataScreen) and screen.supplies_totals():
            self._totals_timer = self.set_timer(self.refresh_s, self._reload_totals)
            return
        self._totals_loading = True
        self._load_totals(self.effective_at())

    def watch_at(self) -> None:
        self._reload_totals()

    # -- time travel -------------------------------------------------------------
    def action_travel(self, seconds: float) -> None:
        now = self.clock()
        at = (self.at or now) + timedelta(seconds=seconds)
        self.at = None if at >= now else at.replace(microsecond=0)

    def action_live(self) -> None:
        self.at = None

    def action_jump_time(self) -> None:
        def chosen(result: tuple[bool, datetime | None] | None) -> None:
            if result and result[0]:
                at = result[1]
                self.at = None if at is None or at >= self.clock() else at

        self.push_screen(TimeJump(self.clock()), chosen)

    def travel_to(self, at: datetime | None) -> None:
        self.at = at

    # -- navigation --------------------------------------------------------------
    def drill_down(self, host: str, gpu_uuid: str | None = None) -> None:
        self.push_screen(DrilldownScreen(host, gpu_uuid))

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    async def show_racks(self, spec: str) -> None:
        """Jump to the rack view filtered by `spec` (e.g. `tenant:acme-llm`)."""
        await self.switch_mode("rack")
        screen = self.screen
        if isinstance(screen, RackScreen):
            screen.set_filter(spec)
