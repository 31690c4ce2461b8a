"""The header: fleet totals at the time cursor, and whether that is live."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual.widgets import Static

from fleettui.safe_text import pictured
from fleettui.tui.widgets.scale import fmt_duration

# Following the clock, but the newest sample is older than this: the data stopped
# (a stopped daemon's file, a collector that died), which "LIVE" would hide.
STOPPED_AFTER_S = 30.0


class FleetHeader(Static):
    """GPUs, busy, idle, silent, alerts firing, data age; LIVE, STOPPED or the time cursor."""

    DEFAULT_CLASSES = "fleet-header"

    def on_mount(self) -> None:
        self.watch(self.app, "totals", self._show, init=True)
        self.watch(self.app, "at", lambda _: self._show(self.app.totals), init=False)
        self.watch(self.app, "view_title", lambda _: self._show(self.app.totals), init=False)

    def _show(self, totals: dict[str, Any] | None) -> None:
        app = self.app
        line = Text(no_wrap=True, overflow="ellipsis")
        if self.size.width >= 110:
            line.append(" FleetTUI ", style="bold reverse")
        line.append(f" {pictured(app.view_title)} ", style="bold reverse")  # may name a host
        at: datetime | None = app.at
        age = totals.get("data_age_s") if totals else None
        if at is None and age is not None and age > STOPPED_AFTER_S:
            newest = totals.get("newest_ts")
            when = f"{newest:%m-%d %H:%M:%S}" if newest else "?"
            line.append(
                f" ■ STOPPED {when} ({fmt_duration(age)} ago) ", style="bold white on dark_red"
            )
        elif at is None and totals and age is None:  # nothing in the last day
            line.append(" ■ NO RECENT DATA ", style="bold white on dark_red")
        elif at is None:
            line.append(" ● LIVE", style="bold green")
        else:
            back = (app.clock() - at).total_seconds()
            line.append(
                f" ◀ {at:%m-%d %H:%M:%S} -{fmt_duration(back)} ", style="bold black on yellow"
            )
        if totals:
            line.append("  GPUs ", style="dim")
            line.append(f"{totals['gpus']:,}", style="bold")
            line.append("  busy ", style="dim")
            line.append(f"{totals['busy']:,}", style="bold")
            line.append("  idle ", style="dim")
            line.append(f"{totals['idle']:,}", style="bold")
            if totals.get("silent"):
                line.append("  silent ", style="dim")
                line.append(f"{totals['silent']:,}", style="bold #8a8a8a")
            firing = totals.get("alerts_firing")
            line.append("  alerts ", style="dim")
            if firing is None:
                line.append("n/a", style="dim")
            else:
                line.append(f"{firing}", style="bold red" if firing else "bold")
            line.append("  age ", style="dim")
            line.append(
                fmt_duration(age) if age is not None else "no data",
                style="bold red" if age is None or age > 30 else "bold",
            )
        else:
            line.append("  loading…", style="dim")
        self.update(line)
