"""DataTable filled from a view's Arrow table, keeping the cursor across refreshes.

A load whose rows show the same cells as the table has is skipped: Textual's cell
cache is dropped on every change to the table, so a refresh of unchanged data drew
every visible cell again (~0.1 ms each). (A cache of drawn cells across loads was
tried and dropped: under load the drill-down's snapshot test caught a stale frame.)

A refresh of changed data draws each one-line Text cell straight into its segments
(`ViewTable._render_cell`: the cell's styles, its justification into the column's
width, the padding, then the row's and cursor's styles, as Rich's `Styled(Padding(
Text))` pipeline draws them, ~5x cheaper), and sizes the columns from widths taken
at the load (`_update_dimensions`) instead of measuring every cell through Rich.
Anything else (a cell wider than its column, several lines, full justification, row
labels, fixed rows or columns) is drawn by DataTable itself. Nothing drawn survives
a load: DataTable's caches are keyed on its update count and cleared by `clear()`.

A row of such cells is drawn in one pass (`_render_line_in_row`): DataTable's per-cell
cache keys, row renderables and component-style lookups (each walks the widget's
ancestors) cost more than drawing the cells. The component styles are looked up once
per frame, and each segment's style (the row's, its position's meta, the cursor's and
the text's) is kept by what it is made of across loads: styles, never data.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.widgets import DataTable

from fleettui.safe_text import pictured


def safe_cell(v: str | Text) -> Text:
    """A cell as Text with control characters pictured: data never acts as markup
    (a str cell would be parsed as Rich markup: `[/]` crashes) or escapes."""
    if isinstance(v, Text):
        if v.plain != (clean := pictured(v.plain)):
            v = v.copy()
            v.plain = clean  # same length: the style spans stay where they were
        return v
    return Text(pictured(str(v)))


def text_key(t: Text) -> Hashable:
    """What decides how a Text cell looks, hashable (Text itself is not)."""
    return (
        t.plain,
        t.style,
        tuple(t.spans),
        t.justify,
        t.overflow,
        t.no_wrap,
        t.end,
        t.tab_size,
    )


@dataclass(frozen=True, slots=True)
class Col:
    label: str
    key: str
    fmt: Callable[[Any, dict[str, Any]], str | Text] = lambda v, _r: "–" if v is None else str(v)
    width: int | None = None


class ViewTable(DataTable):
    """A DataTable whose rows come from an Arrow table; sortable by a column."""

    def __init__(self, cols: Sequence[Col], key: str, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.cols = list(cols)
        self.row_key_col = key
        self.rows_data: list[dict[str, Any]] = []
        self.sort_key: str | None = None
        self.sort_reverse = True
        # keys and cells on screen; None until the first load (which sizes the table)
        self._shown: list[tuple[str, tuple[Hashable, ...]]] | None = None
        # each shown row's cell widths (what Rich measures a one-line Text as), by key
        self._widths: dict[str, list[int]] = {}
        # component styles looked up during one render_lines (None outside it)
        # a cell's segment style by (row and cursor styles, position, the text's style):
        # what `_render_cell` computes from them, kept across loads (styles, not data)
        self._styled: dict[tuple, Style] = {}
        self._frame_styles: dict[int, Style] | None = None

    def on_mount(self) -> None:
        for c in self.cols:
            self.add_column(c.label, key=c.key, width=c.width)

    def load(self, table: pa.Table) -> None:
        rows = table.to_pylist()
        if self.sort_key:
            present = [r for r in rows if r.get(self.sort_key) is not None]
            absent = [r for r in rows if r.get(self.sort_key) is None]
            present.sort(key=lambda r: r[self.sort_key], reverse=self.sort_reverse)
            rows = present + absent
        self.rows_data = rows
        shown: list[tuple[str, tuple[Hashable, ...]]] = []
        cells: list[list[Text]] = []
        widths: dict[str, list[int]] = {}
        seen: set[str] = set()
        for r in rows:
            key = str(r.get(self.row_key_col))
            while key in seen:
                key += "'"
            seen.add(key)
            row_cells = [safe_cell(c.fmt(r.get(c.key), r)) for c in self.cols]
            cells.append(row_cells)
            shown.append((key, tuple(text_key(t) for t in row_cells)))
            widths[key] = [_one_line_width(t) for t in row_cells]
        if shown == self._shown and self.row_count == len(shown):
            return  # the same cells: nothing to draw (rows_data has the new values)
        self._shown = shown
        self._widths = widths
        keep = self.cursor_row
        self.clear()
        for (key, _), row_cells in zip(shown, cells, strict=True):
            self.add_row(*row_cells, key=key)
        if rows:
            self.move_cursor(row=min(keep, len(rows) - 1), animate=False)

    def _clear_caches(self) -> None:
        """DataTable's caches emptied with their entries unlinked: Textual's LRUCache
        keeps them in a ring, so a plain `clear()` left every drawn cell of the last
        load as cyclic garbage, found only by the garbage collector's full passes
        (~50k objects a load at 100k GPUs, each pass scanning the whole heap)."""
        for cache in (
            self._row_render_cache,
            self._cell_render_cache,
            self._row_renderable_cache,
            self._line_cache,
            self._offset_cache,
            self._ordered_row_cache,
        ):
            _unlink(cache)
        super()._clear_caches()

    def _update_dimensions(self, new_rows) -> None:
        """Widen the columns to the new rows' cells from the widths taken at the load;
        DataTable measures the rest (rows it was not loaded with, labels, auto heights)."""
        widths = self._widths
        columns = self.ordered_columns
        widest = [0] * len(columns)
        rest = []
        for row_key in new_rows:
            row = self.rows.get(row_key)
            w = widths.get(row_key.value) if row is not None else None
            if w is None or len(w) != len(columns) or row.label is not None or row.auto_height:
                rest.append(row_key)
                continue
            if row_key not in self._row_locations:
                continue  # removed before this idle (as DataTable skips it)
            for i, cw in enumerate(w):
                if cw < 0:  # not one line: measured by DataTable
                    rest.append(row_key)
                    break
                if cw > widest[i]:
                    widest[i] = cw
        for column, cw in zip(columns, widest, strict=True):
            column.content_width = max(column.content_width, cw)
        super()._update_dimensions(rest)

    def render_lines(self, crop):
        # the component styles of this frame, looked up once (each lookup walks the
        # widget's ancestors: ~0.1 ms, twice per drawn line before)
        self._frame_styles = {}
        try:
            return super().render_lines(crop)
        finally:
            self._frame_styles = None

    def _get_row_style(self, row_index: int, base_style: Style) -> Style:
        memo = self._frame_styles
        if memo is None:
            return super()._get_row_style(row_index, base_style)
        if row_index == -1:
            kind = -1
        elif row_index < self.fixed_rows:
            kind = -2
        elif self.zebra_stripes:
            kind = row_index % 2
        else:
            return base_style
        style = memo.get(kind)
        if style is None:
            style = memo[kind] = super()._get_row_style(row_index, base_style)
        return style

    def _render_line_in_row(
        self,
        row_key,
        line_no: int,
        base_style: Style,
        cursor_location,
        hover_location,
    ):
        """A one-line row of one-line Text cells drawn in one pass: each cell's segments
        as `_render_cell` draws them, then the space right of the table, as DataTable
        draws them cell by cell (its cell cache keys, the row's renderables and its
        component styles looked up once per cell cost more than the drawing). Rows
        with labels, fixed rows or columns, other cursor types, the header, taller
        rows or a cell `_one_line_segments` cannot draw: DataTable's own path."""
        row_index = self._row_locations.get(row_key)
        row = self.rows.get(row_key)
        if (
            row_index is None
            or row is None
            or row.height != 1
            or line_no
            or row_index < self.fixed_rows
            or self.fixed_columns
            or self.cursor_type != "row"
            or (self._labelled_row_exists and self.show_row_labels)
        ):
            return super()._render_line_in_row(
                row_key, line_no, base_style, cursor_location, hover_location
            )
        cache_key = (
            row_key,
            line_no,
            base_style,
            cursor_location,
            hover_location,
            "row",
            self.show_cursor,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cache = self._row_render_cache
        if cache_key in cache:
            return cache[cache_key]
        cells = self._get_row_renderables(row_index)[1]
        console = self.app.console
        pad = self.cell_padding
        widths = [c.get_render_width(self) for c in self.ordered_columns]
        runs = []
        for cell, width in zip(cells, widths, strict=True):
            content = (
                _one_line_segments(cell, width - 2 * pad, console)
                if isinstance(cell, Text)
                else None
            )
            if content is None:
                return super()._render_line_in_row(
                    row_key, line_no, base_style, cursor_location, hover_location
                )
            runs.append(content)
        row_style = self._get_row_style(row_index, base_style)
        cursor = row_index == cursor_location.row
        hover = row_index == hover_location.row
        show_cursor, show_hover = self.show_cursor, self._show_hover_cursor
        component_style, post_style = self._get_styles_to_render_cell(
            False,
            False,
            False,
            hover,
            cursor,
            show_cursor,
            show_hover,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        from_meta = Style.from_meta
        padding = [(" " * pad, None)] if pad else []
        styled = self._styled
        if len(styled) > _STYLED_KEPT:
            styled.clear()
        scrollable: list[list[Segment]] = []
        for column_index, content in enumerate(runs):
            at = (row_style, component_style, post_style, row_index, column_index)
            if pad:
                content = [*padding, *content, *padding]
            line = []
            for text, s in content:
                style = styled.get((at, s))
                if style is None:
                    pre = row_style + from_meta({"row": row_index, "column": column_index})
                    pre = pre + component_style
                    style = (pre + s) + post_style if post_style else pre + s
                    styled[at, s] = style
                line.append(Segment(text, style))
            scrollable.append(line)
        # DataTable's extension of the row's style to the widget's width (cursor "row")
        remaining = max(0, self.size.width - sum(widths) - self._row_label_column_width)
        extend_style, _ = self._get_styles_to_render_cell(
            False,
            False,
            False,
            hover,
            cursor,
            show_cursor,
            show_hover,
            False,
            False,
        )
        at = (row_style, extend_style, row_index)
        extended = styled.get(at)
        if extended is None:
            extended = row_style + extend_style
            extended += from_meta({"row": row_index, "column": 0, "out_of_bounds": True})
            styled[at] = extended
        scrollable.append([Segment(" " * remaining, extended)])
        cache[cache_key] = pair = ([], scrollable)
        return pair

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ):
        """A one-line Text cell drawn straight into segments; DataTable draws the rest."""
        header = row_index == -1
        if column_index < 0 or (
            not header and (row_index < self.fixed_rows or column_index < self.fixed_columns)
        ):
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._header_row_key if header else self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        cache_key = (
            row_key,
            column_key,
            base_style,
            cursor,
            hover,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cache = self._cell_render_cache
        if cache_key in cache:
            return cache[cache_key]
        height = self.header_height if header else self.rows[row_key].height
        cell = self._get_row_renderables(row_index)[1][column_index]
        pad = self.cell_padding
        content = (
            _one_line_segments(cell, width - 2 * pad, self.app.console)
            if height == 1 and isinstance(cell, Text)
            else None
        )
        if content is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        component_style, post_style = self._get_styles_to_render_cell(
            header,
            False,
            False,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        pre = base_style + Style.from_meta({"row": row_index, "column": column_index})
        pre = pre + component_style
        if pad:
            content = [(" " * pad, None), *content, (" " * pad, None)]
        if post_style:
            line = [Segment(text, (pre + s) + post_style) for text, s in content]
        else:
            line = [Segment(text, pre + s) for text, s in content]
        cache[cache_key] = lines = [line]
        return lines

    def current(self) -> dict[str, Any] | None:
        if not self.rows_data or self.cursor_row >= len(self.rows_data):
            return None
        return self.rows_data[self.cursor_row]

    def sort_next(self) -> str:
        """Cycle the sort column; returns its label."""
        keys = [None] + [c.key for c in self.cols]
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        label = next((c.label for c in self.cols if c.key == self.sort_key), "default order")
        return label

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if self.sort_key == key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = key, True
        self.load(pa.Table.from_pylist(self.rows_data) if self.rows_data else pa.table({}))


# segment styles kept by a table (~100 rows x 10 columns x a few styles each)
_STYLED_KEPT = 20_000


def _unlink(cache: LRUCache) -> None:
    """Empty an LRUCache so that its entries are freed at once (by reference count)."""
    for node in cache._cache.values():  # [prev, next, key, value]: a ring
        node.clear()
    cache.clear()


def _one_line_width(t: Text) -> int:
    """The width Rich measures a Text as; -1 when it has several lines."""
    plain = t.plain
    return -1 if "\n" in plain or "\t" in plain else cell_len(plain)


def _one_line_segments(cell: Text, width: int, console) -> list[tuple[str, Style | None]] | None:
    """A one-line Text justified into `width` cells as (text, style) runs, styled as
    Rich's `Text.__rich_console__` styles it (no wrap); None when it does not fit in
    one line of `width` or justifies in a way drawn only by Rich."""
    plain = cell.plain
    if "\n" in plain or "\t" in plain:
        return None
    length = cell_len(plain)
    if length > width:
        return None  # cropped or folded: Rich's overflow rules
    justify = cell.justify or "default"
    if justify != "default" and justify != "left" and plain != plain.rstrip():
        return None  # Rich strips trailing space before justifying right or centre
    get_style = console.get_style
    base = get_style(cell.style, default=Style.null()) if cell.style else None
    if cell.spans:
        runs = [(s.text, s.style) for s in cell.render(console)]
    else:
        runs = [(plain, base)]
    gap = width - length
    if not gap:
        return runs
    if justify == "default":  # the padding line's own spaces: no style of the text
        return [*runs, (" " * gap, None)]
    if justify == "left":
        return [*runs, (" " * gap, base)]
    if justify == "right":
        return [(" " * gap, base), *runs]
    if justify == "center":
        left = gap // 2
        return [(" " * left, base), *runs, (" " * (gap - left), base)]
    return None  # full
