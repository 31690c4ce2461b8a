"""DataTable filled from a view's Arrow table, keeping the cursor across refreshes.

A refresh costs what changed on screen: a load whose rows show the same cells as
the table has is skipped, and a cell drawn before (same text, style, place and
width) is not drawn again. Textual's own cell cache is dropped on every change to
the table, so without these a refresh drew every visible cell (~0.1 ms each).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
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
        # drawn cells by what decides their look; two generations (this load's and
        # the one before), so the cache holds about the cells of the table at most
        self._drawn: dict[Hashable, list[list[Segment]]] = {}
        self._drawn_before: dict[Hashable, list[list[Segment]]] = {}
        self._style_gen = 0  # bumped when CSS or the theme changes: styles differ

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
        seen: set[str] = set()
        for r in rows:
            key = str(r.get(self.row_key_col))
            while key in seen:
                key += "'"
            seen.add(key)
            row_cells = [safe_cell(c.fmt(r.get(c.key), r)) for c in self.cols]
            cells.append(row_cells)
            shown.append((key, tuple(text_key(t) for t in row_cells)))
        if shown == self._shown and self.row_count == len(shown):
            return  # the same cells: nothing to draw (rows_data has the new values)
        self._shown = shown
        self._drawn_before, self._drawn = self._drawn, {}
        keep = self.cursor_row
        self.clear()
        for (key, _), row_cells in zip(shown, cells, strict=True):
            self.add_row(*row_cells, key=key)
        if rows:
            self.move_cursor(row=min(keep, len(rows) - 1), animate=False)

    def notify_style_update(self) -> None:
        self._style_gen += 1
        self._drawn.clear()
        self._drawn_before.clear()
        super().notify_style_update()

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        """DataTable's cell drawing, kept across loads for cells whose look is unchanged
        (Textual keys its cache on the table's update count: every load drew anew)."""
        if row_index < 0 or column_index < 0:  # the header and row labels: as before
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        cell = self._get_row_renderables(row_index).cells[column_index]
        if row_key is None or not isinstance(cell, Text):
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        # everything DataTable._render_cell reads, less the update count
        look = (
            row_index,
            column_index,
            text_key(cell),
            base_style,
            width,
            cursor,
            hover,
            self.rows[row_key].height,
            row_index < self.fixed_rows or column_index < self.fixed_columns,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority,
            self.cursor_background_priority,
            self.cell_padding,
            self._pseudo_class_state,
            self._style_gen,
        )
        lines = self._drawn.get(look)
        if lines is None:
            lines = self._drawn_before.get(look)
            if lines is None:
                lines = super()._render_cell(
                    row_index, column_index, base_style, width, cursor, hover
                )
            self._drawn[look] = lines
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
