"""A small prompt for moving the time cursor to a typed moment."""

from __future__ import annotations

from datetime import datetime

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from fleettui.tui.timeparse import TimeSpecError, parse_time


class TimeJump(ModalScreen[tuple[bool, datetime | None]]):
    """Dismisses with (True, moment or None for live), or (False, None) when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, now: datetime) -> None:
        super().__init__()
        self.now = now

    def compose(self) -> ComposeResult:
        with Vertical(id="time-jump"):
            yield Label("Go to (UTC): -15m, -2h, 12:03, 2026-11-26 12:03, live")
            yield Input(placeholder="-15m", id="time-input")
            yield Label("", id="time-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            at = parse_time(event.value, self.now)
        except TimeSpecError as exc:
            self.query_one("#time-error", Label).update(str(exc))
            return
        self.dismiss((True, at))

    def action_cancel(self) -> None:
        self.dismiss((False, None))
