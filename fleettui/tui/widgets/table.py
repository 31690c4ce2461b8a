"""DataTable filled from a view's Arrow table, keeping the cursor across refreshes.

A load whose rows show the same cells as the table has is skipped: Textual's cell
cache is dropped on every change to the table, so a refresh of unchanged data drew
every visible cell again (~0.1 ms each). (A cache of drawn cells across loads was
tried and dropped: under load the drill-down's snapshot test caught a stale frame.)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
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
        keep = self.cursor_row
        self.clear()
        for (key, _), row_cells in zip(shown, cells, strict=True):
            self.add_row(*row_cells, key=key)
        if rows:
            self.move_cursor(row=min(keep, len(rows) - 1), animate=False)

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
