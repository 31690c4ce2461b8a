"""SQL console: type SQL against the store, see the result, browse the schema.

Read-only whatever the reader: through a daemon, the daemon refuses anything but
one pure read (`storage/guard.py`); on the store the app writes itself, each
query runs in a READ ONLY transaction. `check_read_only` (one SELECT or plain
EXPLAIN) answers first with a clearer message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TextArea, Tree
from textual.worker import Worker, WorkerState

from fleettui.tui.screens.base import Reader
from fleettui.tui.widgets.header import FleetHeader
from fleettui.tui.widgets.table import safe_cell
from storage.reader import check_read_only, read_only_arrow

MAX_ROWS = 1000
EXAMPLE = """-- ctrl+r runs; esc leaves the editor; the views' queries live in storage/views/
SELECT h.rack, count(DISTINCT s.gpu_uuid) AS gpus, round(avg(s.util_pct), 1) AS util_pct
FROM gpu_samples s JOIN hosts h USING (host)
WHERE s.ts > (SELECT max(ts) FROM gpu_samples) - INTERVAL 10 SECOND
GROUP BY ALL ORDER BY util_pct DESC, rack"""
SCHEMA_SQL = """SELECT table_name, column_name, data_type FROM duckdb_columns()
WHERE NOT internal AND schema_name = 'main' AND database_name = current_database()
ORDER BY table_name, column_index"""


@dataclass(frozen=True, slots=True)
class QueryResult:
    table: pa.Table  # at most MAX_ROWS rows
    total_rows: int
    elapsed_ms: float


def run_query(reader: Reader, sql: str) -> QueryResult:
    """Run one read-only statement; at most MAX_ROWS rows are kept for display."""
    check_read_only(sql)
    t0 = time.perf_counter()
    con = getattr(reader, "con", None)  # the app's own store: a read-only transaction
    table = read_only_arrow(con, sql) if con is not None else reader.arrow(sql)
    elapsed = (time.perf_counter() - t0) * 1e3
    return QueryResult(table.slice(0, MAX_ROWS), table.num_rows, elapsed)


class SqlScreen(Screen):
    view_title = "SQL"

    # The editor takes every printable key, so `1`-`5` type digits there: Esc
    # leaves it (then `1`-`5` switch views), F1-F5 switch views even while editing.
    BINDINGS = [
        Binding("ctrl+r", "run", "run query", priority=True),
        Binding("ctrl+o", "focus_editor", "editor"),
        Binding("escape", "leave_editor", "leave editor"),
    ]
    EDITING_HINT = (
        " editing: Ctrl+R runs · Esc leaves the editor (then 1–5 switch views)"
        " · F1–F5 switch views from anywhere"
    )

    def compose(self) -> ComposeResult:
        yield FleetHeader()
        with Horizontal(id="sql-body"):
            yield Tree("store", id="sql-schema")
            with Vertical(id="sql-main"):
                yield TextArea(EXAMPLE, id="sql-editor", show_line_numbers=True)
                yield Static(id="sql-status", classes="status")
                yield DataTable(id="sql-result", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Tree).show_root = False
        self._load_schema()
        editor = self.query_one(TextArea)
        editor.cursor_blink = not self.app.is_headless  # snapshots and screenshots: steady
        editor.focus()
        self.query_one("#sql-status", Static).update(Text(self.EDITING_HINT, style="dim"))

    def on_screen_resume(self) -> None:
        self.app.view_title = self.view_title

    @work(thread=True, exclusive=True, group="sql-schema", exit_on_error=False)
    def _load_schema(self) -> list[tuple[str, str, str]]:
        t = self.app.reader.arrow(SCHEMA_SQL)
        return list(zip(*(c.to_pylist() for c in t.columns), strict=True))

    def action_run(self) -> None:
        sql = self.query_one(TextArea).text
        self.query_one("#sql-status", Static).update(Text(" running…", style="dim"))
        self._run(sql)

    def action_leave_editor(self) -> None:
        self.query_one("#sql-result", DataTable).focus()

    def action_focus_editor(self) -> None:
        self.query_one(TextArea).focus()

    @work(thread=True, exclusive=True, group="sql-run", exit_on_error=False)
    def _run(self, sql: str) -> QueryResult:
        return run_query(self.app.reader, sql)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        w = event.worker
        if w.node is not self or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        status = self.query_one("#sql-status", Static)
        if w.group == "sql-schema" and event.state == WorkerState.SUCCESS:
            self._show_schema(w.result)
        elif w.group == "sql-run" and event.state == WorkerState.SUCCESS:
            self._show_result(w.result)
        elif w.group == "sql-run":
            msg = str(w.error).strip().splitlines()[0] if str(w.error).strip() else repr(w.error)
            status.update(Text(f" error: {msg}", style="bold red"))

    def _show_schema(self, rows: list[tuple[str, str, str]]) -> None:
        tree = self.query_one(Tree)
        tree.clear()
        node = None
        current = None
        for table, column, dtype in rows:
            if table != current:
                current = table
                node = tree.root.add(safe_cell(table), data=table)
            node.add_leaf(safe_cell(Text.assemble(column, " ", (dtype.lower(), "dim"))), data=table)
        tree.root.expand()

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        if event.node.data and not event.node.children:
            return
        if event.node.data:
            self.query_one(TextArea).text = f"SELECT * FROM {event.node.data} LIMIT 100"

    def _show_result(self, res: QueryResult) -> None:
        table = self.query_one("#sql-result", DataTable)
        table.clear(columns=True)
        t = res.table
        table.add_columns(*(safe_cell(c) for c in t.column_names))
        cols = [c.to_pylist() for c in t.columns]
        table.add_rows(
            [
                [safe_cell("NULL" if v is None else str(v)) for v in row]
                for row in zip(*cols, strict=True)
            ]
        )
        more = f" (first {MAX_ROWS:,} shown)" if res.total_rows > MAX_ROWS else ""
        took = f" in {res.elapsed_ms:.1f} ms" if self.app.show_timings else ""
        self.query_one("#sql-status", Static).update(
            Text(f" {res.total_rows:,} rows{more}{took}", style="bold")
        )
