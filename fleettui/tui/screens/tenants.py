"""Tenant view: holdings, utilisation, GPU-hours, idle allocations, latency."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Sparkline, Static

from fleettui.safe_text import pictured
from fleettui.tui.screens.base import DataScreen, Reader
from fleettui.tui.widgets.header import FleetHeader
from fleettui.tui.widgets.scale import fmt_bytes, fmt_num, pct_text
from fleettui.tui.widgets.section import set_line
from fleettui.tui.widgets.table import Col, ViewTable
from storage.views import tenant_history, tenant_summary

WINDOWS = ((3600.0, "1 h"), (86400.0, "24 h"), (7 * 86400.0, "7 d"))
# The chart of the highlighted tenant: days read the rollups (storage/resolution.py).
CHART_WINDOWS = ((3600.0, "1 h"), (86400.0, "24 h"), (30 * 86400.0, "30 d"))
CHART_BUCKETS = 120  # 1 h: 30 s buckets (raw); 24 h: 12 min (1m); 30 d: 6 h (1h)
CHART_REREAD_S = 60.0  # the chart is read again at least this often (cursor time)
TIER_NAMES = {"raw": "raw samples", "1m": "1-minute rollups", "1h": "1-hour rollups"}


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
        Binding("h", "chart_window", "chart window"),
        Binding("enter", "show_gpus", "its GPUs", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.window = 1
        self.chart = 2  # 30 days by default: the trend the table cannot show
        self.chart_tenant: str | None = None  # the highlighted row's; None: the first
        # (tenant, window, read at, tier, rows): the chart last read
        self._chart_kept: tuple[str, float, datetime, str, pa.Table] | None = None

    def compose(self) -> ComposeResult:
        yield FleetHeader()
        yield Static(id="tenants-title", classes="section")
        yield ViewTable(COLS, key="tenant", id="tenants-table")
        yield Static(id="tenant-chart-title", classes="section")
        yield Sparkline([], id="tenant-chart", summary_function=max)
        yield Footer()

    def fetch(self, reader: Reader, at: datetime) -> tuple:
        summary = tenant_summary(reader, at, hours_window_s=WINDOWS[self.window][0])
        names = summary.column("tenant").to_pylist() if summary.num_rows else []
        tenant = self.chart_tenant if self.chart_tenant in names else (names or [None])[0]
        if tenant is None:
            return summary, None, "raw", None
        tier, hist = self._history(reader, tenant, at)
        return summary, tenant, tier, hist

    def _history(self, reader: Reader, tenant: str, at: datetime) -> tuple[str, pa.Table]:
        """The chart, read again once the cursor moved by a chart bucket or by
        CHART_REREAD_S (or back), or the tenant or window changed: at 100,000 GPUs a
        read costs more than the table's refresh (the 30-day chart's newest buckets
        come from the raw rows), and a bucket of 12 minutes or 6 hours barely moves in
        a minute."""
        window_s = CHART_WINDOWS[self.chart][0]
        kept = self._chart_kept
        if kept is not None and kept[:2] == (tenant, window_s):
            moved = (at - kept[2]).total_seconds()
            if 0 <= moved < min(window_s / CHART_BUCKETS, CHART_REREAD_S):
                return kept[3], kept[4]
        tier, hist = tenant_history(reader, tenant, at, window_s=window_s, buckets=CHART_BUCKETS)
        self._chart_kept = (tenant, window_s, at, tier, hist)
        return tier, hist

    def show(self, data: tuple) -> None:
        summary, tenant, tier, hist = data
        self.query_one(ViewTable).load(summary)
        self._title()
        self._chart(tenant, tier, hist)

    def _chart(self, tenant: str | None, tier: str, hist: pa.Table | None) -> None:
        values = [0.0] * CHART_BUCKETS
        known: list[float] = []
        if hist is not None:
            for b, v in zip(
                hist.column("bucket").to_pylist(), hist.column("util_pct").to_pylist(), strict=True
            ):
                if v is not None and 0 <= b < CHART_BUCKETS:
                    values[b] = v
                    known.append(v)
        self.query_one("#tenant-chart", Sparkline).data = values
        title = Text(" Utilisation", style="bold")
        if tenant is None:
            title.append("   no tenants", style="dim")
        else:
            summary = (
                f"mean {sum(known) / len(known):.0f} %, peak bucket {max(known):.0f} %"
                f"   from {TIER_NAMES[tier]}"
                if known
                else "no samples"
            )
            title.append(f" of {pictured(tenant)}", style="bold")
            title.append(
                f" over {CHART_WINDOWS[self.chart][1]}   {summary}   h: window", style="dim"
            )
        set_line(self.query_one("#tenant-chart-title", Static), title)

    def _title(self) -> None:
        t = self.query_one(ViewTable)
        sort = next((c.label for c in COLS if c.key == t.sort_key), "GPUs held")
        title = Text(" Tenants", style="bold")
        title.append(
            f"   GPU-hours over {WINDOWS[self.window][1]}   utilisation over 30 s"
            f"   sorted by {sort}   (fractional shares count as fractions)",
            style="dim",
        )
        set_line(self.query_one("#tenants-title", Static), title)

    def action_sort(self) -> None:
        t = self.query_one(ViewTable)
        t.sort_next()
        t.load(pa.Table.from_pylist(t.rows_data))
        self._title()

    def action_window(self) -> None:
        self.window = (self.window + 1) % len(WINDOWS)
        self.reload()

    def action_chart_window(self) -> None:
        self.chart = (self.chart + 1) % len(CHART_WINDOWS)
        self.reload()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = self.query_one(ViewTable).current()
        tenant = row["tenant"] if row else None
        if tenant is not None and tenant != self.chart_tenant:
            self.chart_tenant = tenant
            self.reload()

    async def on_data_table_row_selected(self, event) -> None:
        row = self.query_one(ViewTable).current()
        if row:
            await self.app.show_racks(f"tenant:{row['tenant']}")
