"""Sparklines of a GPU's main metrics over the last hour."""

from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline

SERIES = (
    ("util_pct", "util %"),
    ("mem_pct", "mem %"),
    ("power_w", "power W"),
    ("temp_c", "temp °C"),
)


class HistoryPanel(Vertical):
    """One labelled sparkline per metric; `update_series` sets all of them."""

    def compose(self) -> ComposeResult:
        for key, label in SERIES:
            with Horizontal(classes="spark-row"):
                yield Label(label, classes="spark-label", id=f"lbl-{key}")
                yield Sparkline([], id=f"spark-{key}", summary_function=max)

    def update_series(self, series: dict[str, list[float | None]], title: str) -> None:
        self.border_title = title
        for key, label in SERIES:
            values = [v for v in series.get(key, []) if v is not None and not math.isnan(v)]
            self.query_one(f"#spark-{key}", Sparkline).data = values or [0.0]
            last = f"{values[-1]:.0f}" if values else "–"
            lo = f"{min(values):.0f}" if values else "–"
            hi = f"{max(values):.0f}" if values else "–"
            self.query_one(f"#lbl-{key}", Label).update(f"{label:<8}{last:>5} ({lo}–{hi})")
