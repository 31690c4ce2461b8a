"""Hostile text from the fleet shows literally in every view of the app and in
`fleettui sql`: no markup is interpreted, no escape sequence reaches the terminal."""

from __future__ import annotations

import html
import re

import pytest

from fleettui.formats import render
from fleettui.safe_text import escaped, pictured
from fleettui.tui.app import FleetApp
from fleettui.tui.demo import fixed_store
from storage.live import LiveSnapshot
from storage.reader import LocalReader
from tests.tui_support import settle, stale_host_alert, write_alerts

# Rich markup that would crash (`[/]`) or restyle, an OSC title change, a screen
# clear, a bell, a right-to-left override, and quotes.
HOSTILE = "[/][bold red]x\x1b]0;pwned\x07\x1b[2J\u202e'\""
# Columns whose values the code branches on (enums, JSON): left as they are.
_KEEP = {
    "state",
    "kind",
    "scope",
    "severity",
    "labels",
    "annotations",
    "source",
    "link_kind",
    "port_state",
    "profile",
    "unit",
    "status",
    "reason",
}


@pytest.fixture(scope="module")
def hostile_store():
    store, last = fixed_store(60.0, 10.0)
    write_alerts(store, [stale_host_alert(last, "no samples")])
    cur = store.cursor()
    cols = cur.execute(
        "SELECT c.table_name, c.column_name FROM duckdb_columns() c "
        "JOIN duckdb_tables() t USING (database_name, schema_name, table_name) "
        "WHERE c.data_type = 'VARCHAR' AND c.schema_name = 'main' "
        "AND c.database_name = current_database()"
    ).fetchall()
    by_table: dict[str, list[str]] = {}
    for table, col in cols:
        if col not in _KEEP:
            by_table.setdefault(table, []).append(col)
    # every name gets the same suffix, so keys still join across tables
    for table, names in by_table.items():
        sets = ", ".join(f"{c} = {c} || ?" for c in names)
        cur.execute(f"UPDATE {table} SET {sets}", [HOSTILE] * len(names))
    cur.close()
    # the writer's newest-sample snapshot never saw these UPDATEs: rebuild it from the
    # store, so the live views show the hostile names too
    store.live = LiveSnapshot(store.con)
    yield store, last
    store.close()


def _screen_text(app) -> str:
    """What the screen shows: the text of the exported screenshot's cells."""
    svg = app.export_screenshot()
    cells = re.findall(r"<text[^>]*>(.*?)</text>", svg, re.S)
    return html.unescape("".join(cells)).replace("\xa0", " ") + svg


async def test_every_view_shows_hostile_names_literally(hostile_store):
    store, last = hostile_store
    app = FleetApp(store.con, clock=lambda: last, refresh_s=3600)
    async with app.run_test(size=(200, 60)) as pilot:
        seen = []
        for key in ("1", "2", "3", "4"):
            await pilot.press(key)
            await settle(pilot)
            svg = _screen_text(app)
            assert "\x1b" not in svg and "\x07" not in svg and "\u202e" not in svg, key
            seen.append(svg)
        # the hostile names are on screen, literally (markup shown, escapes pictured)
        assert any("[/][bold red]x" in s for s in seen)
        assert any("␛]0;pwned␇␛[2J" in s for s in seen)
        host = store.cursor().execute("SELECT min(host) FROM hosts").fetchone()[0]
        app.drill_down(host)
        await settle(pilot)
        svg = _screen_text(app)
        assert "\x1b" not in svg and "[/][bold red]x" in svg
        app.pop_screen()
        await pilot.press("5")
        await settle(pilot)
        app.screen.query_one("#sql-editor").text = "SELECT host, rack FROM hosts LIMIT 3"
        await pilot.press("ctrl+r")
        await settle(pilot)
        svg = _screen_text(app)
        assert "\x1b" not in svg and "[/][bold red]x" in svg and "␛]0;pwned" in svg
        assert not [n for n in app._notifications if n.severity == "error"], [
            n.message for n in app._notifications
        ]
    assert app.return_code in (None, 0)


async def test_acknowledging_a_hostile_alert_notifies_literally(hostile_store):
    store, last = hostile_store
    app = FleetApp(store.con, clock=lambda: last, refresh_s=3600, store=store)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("4")
        await settle(pilot)
        table = app.screen.query_one("#alerts-table")
        table.focus()
        await pilot.press("a")
        await settle(pilot)
        msgs = [n.message for n in app._notifications]
        assert any("acknowledged" in m and "[/][bold red]x" in m for m in msgs), msgs
        assert all("\x1b" not in m for m in msgs)


def test_sql_output_shows_control_characters_visibly():
    rows = [(HOSTILE, 1)]
    table = render("table", ["name", "n"], rows)
    assert "\x1b" not in table and "\\x1b]0;pwned\\x07\\x1b[2J" in table and "[/]" in table
    assert "\\u202e" in table
    tty_csv = render("csv", ["name", "n"], rows, tty=True)
    assert "\x1b" not in tty_csv and "\\x1b" in tty_csv
    piped_csv = render("csv", ["name", "n"], rows, tty=False)
    assert HOSTILE.replace('"', '""') in piped_csv  # data unchanged to a pipe or file
    js = render("json", ["name", "n"], rows)
    assert "\x1b" not in js and "\\u001b" in js  # JSON escapes it, losing nothing


def test_safe_text_forms():
    assert pictured("a\x1bb\x07") == "a␛b␇" and len(pictured(HOSTILE)) == len(HOSTILE)
    assert escaped("a\x1bb\x9b\u202e") == "a\\x1bb\\x9b\\u202e"
    assert escaped("plain [b]text[/b]") == "plain [b]text[/b]"


def test_sql_view_result_from_a_reader_is_literal(hostile_store):
    from fleettui.tui.screens.sql import run_query

    store, _ = hostile_store
    res = run_query(LocalReader(store.con), "SELECT host FROM hosts LIMIT 1")
    assert res.table.column(0)[0].as_py().endswith(HOSTILE)  # the data is unchanged
