"""ViewTable draws only what changed, and shows what a freshly filled table shows.

A load whose cells equal the shown ones is skipped (`fleettui/tui/widgets/table.py`):
after any sequence of loads, the table must draw exactly what a new table loaded
once with the last rows draws (except that a column never narrows: Textual keeps
a column's widest width across `clear()`).
"""

from __future__ import annotations

import gc

import pyarrow as pa
from rich.text import Text
from textual.app import App, ComposeResult
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.widgets import DataTable

from fleettui.tui.widgets.table import Col, ViewTable, safe_cell

COLS = [
    Col("host", "host"),
    Col("util %", "util", lambda v, _r: Text(f"{v:.1f}", style="bold red" if v > 90 else "")),
    Col("state", "up", lambda v, _r: Text("up" if v else "DOWN", style="green" if v else "red")),
]


def rows(*spec: tuple[str, float, bool], uuid: str = "u0") -> pa.Table:
    return pa.Table.from_pylist(
        [{"host": h, "util": u, "up": up, "gpu_uuid": f"{uuid}-{h}"} for h, u, up in spec]
    )


A = rows(("h1", 95.0, True), ("h2", 50.0, False), ("h3", 10.0, True))
# h2's value and state changed, h1 and h3 swapped places, h4 is new
B = rows(("h3", 99.0, True), ("h2", 51.0, True), ("h1", 95.0, True), ("h4", 1.0, True))
# A's rows next second: same keys and widths, h1 and h3 changed value and style
C = rows(("h1", 85.0, False), ("h2", 50.0, False), ("h3", 91.0, True))
# a util cell wider than its label: the column grows
D = rows(("h1", 85.0, False), ("h2", 12345.0, False), ("h3", 91.0, True))
# A's keys in another order, same widths
A_SWAPPED = rows(("h3", 10.0, True), ("h1", 95.0, True), ("h2", 50.0, False))


class Two(App):
    """The table under test beside one loaded once per step with the same rows."""

    def compose(self) -> ComposeResult:
        yield ViewTable(COLS, key="host", id="kept")
        yield ViewTable(COLS, key="host", id="fresh")


def drawn(table: ViewTable) -> list[list[tuple[str, object]]]:
    strips = table.render_lines(Region(0, 0, table.size.width, table.size.height))
    return [[(s.text, s.style) for s in strip] for strip in strips]


async def test_table_after_many_loads_draws_as_a_fresh_one():
    app = Two()
    async with app.run_test(size=(60, 24)) as pilot:
        kept = app.query_one("#kept", ViewTable)
        kept_at = 0
        for step, (table, cursor) in enumerate(
            [(A, 0), (B, 0), (A, 1), (A, 1), (B, 2), (B, 0), (rows(), 0), (A, 0)]
            + [(A, 2), (C, None), (A, None), (C, 1), (A_SWAPPED, None), (C, None)]
            + [(A_SWAPPED, 2), (C, None), (D, None)]  # last: a column never narrows
        ):
            kept.load(table)
            if cursor is None:  # the cursor is kept where it was
                assert kept.cursor_row == min(kept_at, table.num_rows - 1), step
                cursor = kept.cursor_row
            else:
                kept.move_cursor(row=cursor, animate=False)
            # a new table each step: nothing cached from earlier steps
            old = app.query_one("#fresh", ViewTable)
            await old.remove()
            fresh = ViewTable(COLS, key="host", id="fresh")
            await app.mount(fresh)
            await pilot.pause()
            fresh.load(table)
            fresh.move_cursor(row=cursor, animate=False)
            app.set_focus(None)  # focus changes the look: neither has it
            await pilot.pause()
            assert fresh.size == kept.size, step
            assert drawn(kept) == drawn(fresh), step
            assert kept.rows_data == fresh.rows_data == table.to_pylist()
            kept_at = cursor


async def test_same_cells_skip_the_redraw_but_keep_the_new_rows():
    app = Two()
    async with app.run_test(size=(60, 24)) as pilot:
        table = app.query_one("#kept", ViewTable)
        table.load(A)
        await pilot.pause()
        count = table._update_count
        again = rows(("h1", 95.0, True), ("h2", 50.0, False), ("h3", 10.0, True), uuid="u1")
        table.load(again)  # the same cells (gpu_uuid is not shown): nothing redrawn
        assert table._update_count == count
        assert table.current() == {"host": "h1", "util": 95.0, "up": True, "gpu_uuid": "u1-h1"}
        table.load(rows(("h1", 95.0, True), ("h2", 50.5, False), ("h3", 10.0, True)))
        assert table._update_count > count  # a changed cell: the table is filled again


# cells of every kind the fast drawing takes, and some it leaves to DataTable
ODD = [
    Text("plain"),
    Text("styled", style="bold red"),
    Text("", style="green"),
    Text("12.5", style="dim", justify="right"),
    Text("mid", style="on blue", justify="center"),
    Text("left", style="italic", justify="left"),
    Text.assemble(("a", "red"), "b", ("cd", "bold on green"), style="underline"),
    Text("表格 wide", style="yellow"),
    Text("trailing  ", justify="right"),  # Rich strips it before justifying
    Text("full justify", justify="full"),
    Text("two\nlines"),  # pictured by safe_cell: one line
    Text("far too long for the column", style="bold"),  # cropped: Rich's overflow
    Text("ellipsis too long here", overflow="ellipsis"),
]
ODD_COLS = [
    Col("k", "k"),
    Col("cell", "i", lambda v, _r: ODD[v]),
    Col("fixed", "j", lambda v, _r: ODD[v], width=8),
    Col("[b]lbl[/b]", "s"),
]
ODD_ROWS = pa.Table.from_pylist(
    [{"k": f"r{i}", "i": i, "j": (i + 5) % len(ODD), "s": f"[x]{i}"} for i in range(len(ODD))]
)


class Pair(App):
    """ViewTable beside Textual's own DataTable given the same cells."""

    def compose(self) -> ComposeResult:
        yield ViewTable(ODD_COLS, key="k", id="view")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="plain")


def pixels(table: DataTable) -> list[list[tuple[str, object]]]:
    """Each drawn character with its style (however the segments are cut)."""
    strips = table.render_lines(Region(0, 0, table.size.width, table.size.height))
    return [[(ch, s.style) for s in strip for ch in s.text] for strip in strips]


async def test_cells_drawn_as_textual_draws_them():
    """The one-line fast path draws what DataTable's Rich pipeline draws, cursor,
    hover, zebra stripes, header and column widths included."""
    app = Pair()
    async with app.run_test(size=(120, 40)) as pilot:
        view = app.query_one("#view", ViewTable)
        plain = app.query_one("#plain", DataTable)
        for c in ODD_COLS:
            plain.add_column(c.label, key=c.key, width=c.width)
        for r in ODD_ROWS.to_pylist():
            plain.add_row(*(safe_cell(c.fmt(r[c.key], r)) for c in ODD_COLS), key=r["k"])
        view.load(ODD_ROWS)
        for t in (view, plain):
            t.move_cursor(row=1, animate=False)
        app.set_focus(None)
        await pilot.pause()
        assert [c.content_width for c in view.ordered_columns] == [
            c.content_width for c in plain.ordered_columns
        ]
        assert view.size == plain.size
        assert pixels(view) == pixels(plain)
        focused = []
        for t in (view, plain):  # focused: the cursor's own style; the mouse over row 4
            app.set_focus(t)
            t.hover_coordinate = Coordinate(4, 1)
            t._show_hover_cursor = True
            await pilot.pause()
            focused.append(pixels(t))
        assert focused[0] == focused[1]
        assert view.current() == ODD_ROWS.to_pylist()[1]


async def test_a_load_leaves_nothing_drawn_to_the_garbage_collector():
    """The cells drawn for the last load are freed when the next load clears the
    caches (Textual's LRUCache rings, cleared as they are, left them all as cyclic
    garbage for the collector's full passes)."""
    app = Two()
    async with app.run_test(size=(60, 24)) as pilot:
        table = app.query_one("#kept", ViewTable)
        table.load(A)
        await pilot.pause()
        assert table._line_cache and table._cell_render_cache  # A was drawn
        gc.collect()
        gc.disable()
        try:
            table.load(B)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            # an LRUCache entry is [prev, next, key, value], linked in a ring
            left = [o for o in gc.garbage if type(o) is list and len(o) == 4 and o[0] is not o]
            left = [o for o in left if type(o[0]) is list and type(o[1]) is list]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert not left


# cells that all take the one-pass row drawing (one line, fit their column)
FAST = [
    Text("plain"),
    Text("styled", style="bold red"),
    Text("", style="green"),
    Text("12.5", style="dim", justify="right"),
    Text("mid", style="on blue", justify="center"),
    Text.assemble(("a", "red"), "b", ("cd", "bold on green"), style="underline"),
    Text("表格", style="yellow"),
]
FAST_COLS = [
    Col("k", "k"),
    Col("cell", "i", lambda v, _r: FAST[v]),
    Col("fixed", "j", lambda v, _r: FAST[v], width=6),
]
FAST_ROWS = pa.Table.from_pylist(
    [{"k": f"r{i}", "i": i % len(FAST), "j": (i + 3) % len(FAST)} for i in range(2 * len(FAST))]
)


class FastPair(App):
    def compose(self) -> ComposeResult:
        yield ViewTable(FAST_COLS, key="k", id="view")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="plain")


async def test_rows_drawn_in_one_pass_as_textual_draws_them():
    """The one-pass row drawing (`ViewTable._render_line_in_row`) draws what DataTable
    draws cell by cell: zebra stripes, the cursor's row, the hover row, each cell's
    row/column meta (the mouse reads it) and the row's style out to the widget's edge."""
    app = FastPair()
    async with app.run_test(size=(80, 40)) as pilot:
        view = app.query_one("#view", ViewTable)
        plain = app.query_one("#plain", DataTable)
        for c in FAST_COLS:
            plain.add_column(c.label, key=c.key, width=c.width)
        for r in FAST_ROWS.to_pylist():
            plain.add_row(*(safe_cell(c.fmt(r[c.key], r)) for c in FAST_COLS), key=r["k"])
        view.load(FAST_ROWS)
        for t in (view, plain):
            t.move_cursor(row=2, animate=False)
        app.set_focus(None)
        await pilot.pause()
        assert view.size == plain.size and view.size.width > 30  # room right of the cells
        assert pixels(view) == pixels(plain)
        # drawn in one pass: only the header went through the cell cache
        cells = view._cell_render_cache._cache
        assert cells and all(k[0] is view._header_row_key for k in cells)
        for hover in (5, 2):  # the mouse on another row, then on the cursor's
            focused = []
            for t in (view, plain):
                app.set_focus(t)
                t.hover_coordinate = Coordinate(hover, 1)
                t._show_hover_cursor = True
                await pilot.pause()
                focused.append(pixels(t))
            assert focused[0] == focused[1], hover
