"""The rack grid: every rack side by side, a row per host, a cell per GPU.

Built on the Line API: only the visible lines are rendered, so a refresh costs
the same at 300 or 10,000 GPUs. Racks are panels packed into columns (each
panel goes to the shortest column). A cell is one character (compact) or three
(wide: the value itself); a sliced GPU shows its slice count (in wide mode as a
superscript before the value), coloured by the mean of its slices. Stale hosts
are grey, GPUs missing from their host's report red.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from fleettui.safe_text import pictured
from fleettui.tui.widgets.scale import (
    HEAT_STYLES,
    MISSING,
    STALE,
    heat_index,
    tdp_for,
)
from storage.views.rack import UNPLACED

SUPERSCRIPT = "⁰¹²³⁴⁵⁶⁷⁸⁹"
NO_VALUE, STALE_CODE, MISSING_CODE = 10, 11, 12
CODE_GLYPH = {NO_VALUE: "–", STALE_CODE: "·", MISSING_CODE: "✕"}
CODE_GLYPH_WIDE = {NO_VALUE: " – ", STALE_CODE: "···", MISSING_CODE: " ✕ "}
CODE_STYLE = {NO_VALUE: Style(dim=True), STALE_CODE: STALE, MISSING_CODE: MISSING}
# a one-character cell: its slice count (blank: none), or its code's glyph
GLYPH1 = (" ", *"123456789", *(CODE_GLYPH[c] for c in (NO_VALUE, STALE_CODE, MISSING_CODE)))
GAP = 2  # columns between panels
TITLE = Style(bold=True)
BADGE = Style(color="#ffffff", bgcolor="#c0392b", bold=True)
LABEL = Style(dim=True)
CURSOR = Style(reverse=True, bold=True)


@dataclass(slots=True)
class Panel:
    rack: str
    hosts: list[tuple[str, int, int]]  # label, first row, end row (exclusive)
    alerts: int
    x: int = 0
    y: int = 0

    @property
    def height(self) -> int:
        return len(self.hosts) + 1


class RackGrid(ScrollView, can_focus=True):
    """Every GPU of the fleet as a coloured cell; arrows move, Enter drills down."""

    BINDINGS = [
        Binding("left", "move(-1, 0)", "GPU ←", show=False),
        Binding("right", "move(1, 0)", "GPU →", show=False),
        Binding("up", "move(0, -1)", "host ↑", show=False),
        Binding("down", "move(0, 1)", "host ↓", show=False),
        Binding("enter", "select", "drill down"),
    ]

    metric: reactive[str] = reactive("util")
    """Metric the cells are coloured by (see scale.METRICS)."""
    wide: reactive[bool | None] = reactive(None)
    """Three-character cells showing the value (True), one (False), or whichever fits (None)."""
    cursor: reactive[int] = reactive(0)
    """Row (GPU) under the cursor."""

    class Selected(Message):
        """Enter on a GPU: drill down into its host."""

        def __init__(self, host: str, gpu_uuid: str) -> None:
            self.host = host
            self.gpu_uuid = gpu_uuid
            super().__init__()

    class Moved(Message):
        """The cursor moved to another GPU (row of the rack table)."""

        def __init__(self, row: int) -> None:
            self.row = row
            super().__init__()

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.table: pa.Table | None = None
        self.panels: list[Panel] = []
        self._lines: list[list[tuple[int, Panel, int]]] = []  # per line: (x, panel, host or -1)
        self._shape_key: tuple = ()
        self._layout_key = ()
        self._codes = np.zeros(0, dtype=np.int8)  # style code per GPU (HEAT index or *_CODE)
        self._shown = np.zeros(0, dtype=np.int64)  # value shown in a wide cell
        self._slices = np.zeros(0, dtype=np.int8)  # slice count, at most 9
        self._glyph1 = np.zeros(0, dtype=np.int8)  # index into GLYPH1
        self._breaks = np.zeros(0, dtype=np.int64)  # rows where the code changes
        self._host_of_row: np.ndarray = np.zeros(0, dtype=np.int64)
        self._row_pos: dict[int, tuple[int, int]] = {}
        self._label_w = 3
        self._max_gpus = 1
        self._styles_key: tuple = ()
        self._styles: tuple[Style, Style, Style, Style] = (Style(),) * 4

    # -- data ------------------------------------------------------------------
    def update_data(self, table: pa.Table, alerts: dict[str, int] | None = None) -> None:
        """New rack table (rack order); relayout only when the fleet's shape changed."""
        alerts = alerts or {}
        hosts, racks = table.column("host"), table.column("rack")
        alerts_key = tuple(sorted(alerts.items()))
        prev = self._shape_key
        self.table = table
        # compared in Arrow (C): at 100k GPUs, lists of hosts per refresh cost tens of ms
        if (
            not prev
            or prev[2] != alerts_key
            or not (hosts.equals(prev[0]) and racks.equals(prev[1]))
        ):
            self._shape_key = (hosts, racks, alerts_key)
            self._build_panels(hosts, racks, alerts)
            self._layout_key = ()
        self.cursor = min(self.cursor, max(table.num_rows - 1, 0))
        self._recolour()
        self._relayout()
        self.refresh()

    def _build_panels(
        self, hosts: pa.ChunkedArray, racks: pa.ChunkedArray, alerts: dict[str, int]
    ) -> None:
        # a host's GPUs are consecutive rows: find where the host changes in numpy,
        # then work per host, not per GPU
        n = len(hosts)
        if n == 0:
            self.panels, self._host_of_row = [], np.zeros(0, dtype=np.int64)
            self._label_w, self._max_gpus = 3, 1
            return
        code = pc.fill_null(hosts.combine_chunks().dictionary_encode().indices, -1)
        code = code.to_numpy(zero_copy_only=False)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(code)) + 1))
        ends = np.append(starts[1:], n)
        take = pa.array(starts, pa.int64())
        panels: list[Panel] = []
        for host, rack0, start, end in zip(
            hosts.take(take).to_pylist(),
            racks.take(take).to_pylist(),
            starts.tolist(),
            ends.tolist(),
            strict=True,
        ):
            rack = rack0 or UNPLACED  # no topology for the host: one group, last
            label = host[len(rack) + 1 :] if host.startswith(rack + "-") else host
            if not panels or panels[-1].rack != rack:
                panels.append(Panel(rack, [], 0))
            panels[-1].hosts.append((label, start, end))
            if alerts:
                panels[-1].alerts += alerts.get(host, 0)
        self.panels = panels
        self._host_of_row = np.repeat(np.arange(len(starts), dtype=np.int64), ends - starts)
        self._label_w = max((len(h[0]) for p in panels for h in p.hosts), default=3)
        self._max_gpus = int((ends - starts).max())

    def _recolour(self) -> None:
        """A style code per GPU for the current metric, vectorised; glyphs are made at render."""
        t = self.table
        if t is None or t.num_rows == 0:
            self._codes = np.zeros(0, dtype=np.int8)
            return
        metric = self.metric

        def col(name: str) -> np.ndarray:
            return t.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

        if metric == "util":
            values = col("util_pct")
        elif metric == "memory":
            values = col("mem_pct")
        elif metric == "power":
            values = 100.0 * col("power_w") / tdp_for(t.column("name").to_pylist())
        elif metric == "temp":
            values = col("temp_c")
        else:
            values = col("errors")
        codes = heat_index(metric, values)  # 0..9, -1 for no value
        codes = np.where(codes < 0, NO_VALUE, codes)
        codes = np.where(col("gpu_missing") > 0, MISSING_CODE, codes)
        codes = np.where(col("host_stale") > 0, STALE_CODE, codes)
        slices = t.column("n_slices").to_numpy(zero_copy_only=False)
        # kept as numpy: a frame reads only the visible rows (no list per GPU)
        self._codes = codes.astype(np.int8)
        self._shown = np.nan_to_num(values, nan=-1).round().astype(np.int64)
        self._slices = np.minimum(slices, 9).astype(np.int8)
        # the one-character glyph of every GPU: its slice count, or its code's
        self._glyph1 = np.where(self._codes >= 10, 10 + self._codes - NO_VALUE, self._slices)
        # where the style changes from one GPU to the next (runs share a segment)
        self._breaks = np.flatnonzero(np.diff(self._codes)) + 1

    def _cell(self, i: int) -> tuple[str, Style]:
        code = int(self._codes[i])
        n = int(self._slices[i])
        if not self._eff_wide:
            return GLYPH1[int(self._glyph1[i])], (
                CODE_STYLE[code] if code >= 10 else HEAT_STYLES[code]
            )
        if code >= 10:
            return CODE_GLYPH_WIDE[code], CODE_STYLE[code]
        v = int(self._shown[i])
        text = f"{v:>3d}" if v < 1000 else f"{v // 1000:>2d}k"
        if n:  # slice count as a superscript before the value
            text = SUPERSCRIPT[n] + f"{min(v, 99):>2d}"
        return text, HEAT_STYLES[code]

    def _compact_segments(self, first: int, end: int, cur: int, segs: list[Segment]) -> None:
        """One host's cells, one character each, a segment per run of one style."""
        codes = self._codes
        text = "".join(GLYPH1[g] for g in self._glyph1[first:end].tolist())
        b = self._breaks
        cuts = b[np.searchsorted(b, first, "right") : np.searchsorted(b, end, "left")].tolist()
        if first <= cur < end:  # the cursor's cell is a run of its own
            cuts = sorted({*cuts, cur, cur + 1} - {first, end})
        start = first
        for stop in (*cuts, end):
            code = int(codes[start])
            style = CODE_STYLE[code] if code >= 10 else HEAT_STYLES[code]
            if start == cur:
                style = style + CURSOR
            segs.append(Segment(text[start - first : stop - first], style))
            start = stop

    # -- layout ----------------------------------------------------------------
    @property
    def effective_wide(self) -> bool:
        return self._eff_wide

    @property
    def cell_w(self) -> int:
        return 4 if self._eff_wide else 1

    def _panel_w(self, wide: bool) -> int:
        return self._label_w + 1 + self._max_gpus * (4 if wide else 1) - (1 if wide else 0)

    def _pack(self, width: int, wide: bool) -> tuple[int, list[tuple[int, int]], int]:
        """Masonry: each panel to the shortest column; (columns, positions, height)."""
        pw = self._panel_w(wide)
        n_cols = max(1, (width + GAP) // (pw + GAP))
        heights = [0] * n_cols
        pos = []
        for p in self.panels:
            c = heights.index(min(heights))
            pos.append((c * (pw + GAP), heights[c]))
            heights[c] += p.height + 1
        return n_cols, pos, max(heights) if self.panels else 0

    def _relayout(self) -> None:
        region = self.scrollable_content_region
        width, height = max(region.width, 20), region.height
        key = (width, height if self.wide is None else -1, self.wide, len(self.panels))
        if key == self._layout_key:
            return
        self._layout_key = key
        if self.wide is None:  # wide cells when the whole fleet then fits on screen
            self._eff_wide = self._pack(width, True)[2] <= max(height, 1)
        else:
            self._eff_wide = self.wide
        n_cols, pos, total = self._pack(width, self._eff_wide)
        pw = self._panel_w(self._eff_wide)
        lines: list[list[tuple[int, Panel, int]]] = [[] for _ in range(total)]
        row_pos: dict[int, tuple[int, int]] = {}
        for p, (x, y) in zip(self.panels, pos, strict=True):
            p.x, p.y = x, y
            lines[p.y].append((p.x, p, -1))
            for k, (_, first, _end) in enumerate(p.hosts):
                lines[p.y + 1 + k].append((p.x, p, k))
                row_pos[first] = (p.x, p.y + 1 + k)
        for line in lines:
            line.sort(key=lambda s: s[0])
        self._lines = lines
        self._row_pos = row_pos
        self.virtual_size = Size(min(width, n_cols * (pw + GAP)), total)

    def on_resize(self) -> None:
        self._relayout()
        self.refresh()

    def watch_metric(self) -> None:
        self._recolour()
        self.refresh()

    def watch_wide(self) -> None:
        self._layout_key = ()
        self._relayout()
        self.refresh()

    # -- rendering -------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        vy = y + scroll_y
        width = self.scrollable_content_region.width
        if vy >= len(self._lines) or not len(self._codes):
            return Strip.blank(width, self._base_styles()[0])
        segs: list[Segment] = []
        pos = 0
        cw = self.cell_w
        lw = self._label_w
        cur = self.cursor
        cell = self._cell
        base, title_s, label_s, badge_s = self._base_styles()
        for x, panel, k in self._lines[vy]:
            if x > pos:
                segs.append(Segment(" " * (x - pos), base))
                pos = x
            if k < 0:
                title = pictured(panel.rack)  # names come from the fleet
                segs.append(Segment(title, title_s))
                used = len(title)
                if panel.alerts:
                    badge = f" ▲{panel.alerts} "
                    segs.append(Segment(" ", base))
                    segs.append(Segment(badge, badge_s))
                    used += 1 + len(badge)
                pos += used
                continue
            label, first, end = panel.hosts[k]
            segs.append(Segment(f"{pictured(label):<{lw}} ", label_s))
            pos += lw + 1
            if cw == 1:
                self._compact_segments(first, end, cur, segs)
                pos += end - first
                continue
            for i in range(first, end):
                text, style = cell(i)
                if i == cur:
                    style = style + CURSOR
                segs.append(Segment(text, style))
                if cw > 1 and i < end - 1:
                    segs.append(Segment(" ", base))
                pos += cw if i < end - 1 else cw - (1 if cw > 1 else 0)
        if scroll_x == 0 and pos <= width:  # the common case: no crop needed
            if pos < width:
                segs.append(Segment(" " * (width - pos), base))
            return Strip(segs, width)
        return Strip(segs, pos).crop_extend(scroll_x, scroll_x + width, base)

    def _base_styles(self) -> tuple[Style, Style, Style, Style]:
        """The widget's own style and its combinations, computed once per theme and focus."""
        key = (self.app.theme, self.has_focus)
        if self._styles_key != key:
            base = self.rich_style
            self._styles = (base, base + TITLE, base + LABEL, base + BADGE)
            self._styles_key = key
        return self._styles

    # -- navigation ------------------------------------------------------------
    def _host_range(self, row: int) -> tuple[Panel, int]:
        h = int(self._host_of_row[row])
        count = 0
        for p in self.panels:
            if h < count + len(p.hosts):
                return p, h - count
            count += len(p.hosts)
        raise IndexError(row)

    def action_move(self, dx: int, dy: int) -> None:
        if self.table is None or self.table.num_rows == 0:
            return
        n = self.table.num_rows
        if dx:
            self.cursor = max(0, min(n - 1, self.cursor + dx))
        else:
            panel, k = self._host_range(self.cursor)
            _, first, _ = panel.hosts[k]
            offset = self.cursor - first
            pidx = self.panels.index(panel)
            k += dy
            if k < 0:
                if pidx == 0:
                    return
                panel = self.panels[pidx - 1]
                k = len(panel.hosts) - 1
            elif k >= len(panel.hosts):
                if pidx == len(self.panels) - 1:
                    return
                panel = self.panels[pidx + 1]
                k = 0
            _, first, end = panel.hosts[k]
            self.cursor = min(first + offset, end - 1)

    def watch_cursor(self, row: int) -> None:
        if self.table is None or row >= self.table.num_rows:
            return
        panel, k = self._host_range(row)
        x, y = self._row_pos.get(panel.hosts[k][1], (0, 0))
        x += self._label_w + 1 + (row - panel.hosts[k][1]) * self.cell_w
        self.scroll_to_region(Region(x, max(y - 1, 0), self.cell_w, 2), animate=False)
        self.post_message(self.Moved(row))
        self.refresh()

    def action_select(self) -> None:
        if self.table is None or self.table.num_rows == 0:
            return
        row = self.cursor
        self.post_message(
            self.Selected(
                self.table.column("host")[row].as_py(), self.table.column("gpu_uuid")[row].as_py()
            )
        )

    def on_click(self, event) -> None:
        """Click a cell to put the cursor on it; click it again to drill down."""
        x, y = event.x + self.scroll_offset.x, event.y + self.scroll_offset.y
        if y >= len(self._lines):
            return
        for px, panel, k in self._lines[y]:
            if k < 0:
                continue
            cx = x - px - self._label_w - 1
            label, first, end = panel.hosts[k]
            if 0 <= cx < (end - first) * self.cell_w:
                row = first + cx // self.cell_w
                if row == self.cursor:
                    self.action_select()
                self.cursor = row
                return
