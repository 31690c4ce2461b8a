"""SCHEMA.md documents every table and column of a freshly migrated store, with its type,
and nothing that is not there: the document cannot drift from the migrations."""

from __future__ import annotations

import re
from pathlib import Path

from storage.store import Store

SCHEMA_MD = Path(__file__).resolve().parents[1] / "SCHEMA.md"
# one table, or several with the same columns: ### `a`, `b`: ...
_HEADING = re.compile(r"^### (`[a-z0-9_]+`(?:, `[a-z0-9_]+`)*)")
_TYPE_END = re.compile(r",(?![^(]*\))")  # a comma outside DECIMAL(38,6)


def documented() -> dict[str, dict[str, str]]:
    """table -> column -> type, from each `### `table`` section's markdown table."""
    out: dict[str, dict[str, str]] = {}
    tables: list[str] = []
    for line in SCHEMA_MD.read_text().splitlines():
        if m := _HEADING.match(line):
            tables = re.findall(r"`([a-z0-9_]+)`", m.group(1))
            for table in tables:
                assert table not in out, f"SCHEMA.md documents {table} twice"
                out[table] = {}
        elif line.startswith("## "):
            tables = []
        elif tables and line.startswith("| ") and not line.startswith(("| column", "| ---")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            kind = _TYPE_END.split(cells[1])[0].strip()
            for table in tables:
                for col in cells[0].split(","):
                    out[table][col.strip().strip("`")] = kind
    return out


def live() -> dict[str, dict[str, str]]:
    store = Store.open(":memory:")
    try:
        rows = (
            store.cursor()
            .execute(
                "SELECT table_name, column_name, data_type FROM duckdb_columns() "
                "WHERE schema_name = 'main' AND database_name = current_database() "
                "AND NOT internal ORDER BY table_name, column_index"
            )
            .fetchall()
        )
    finally:
        store.close()
    out: dict[str, dict[str, str]] = {}
    for table, column, dtype in rows:
        out.setdefault(table, {})[column] = dtype
    return out


def test_schema_md_has_every_table_and_column_with_its_type():
    doc, db = documented(), live()
    assert sorted(set(db) - set(doc)) == [], "tables missing from SCHEMA.md"
    assert sorted(set(doc) - set(db)) == [], "SCHEMA.md documents tables the store lacks"
    for table, cols in db.items():
        assert doc[table] == cols, f"SCHEMA.md `{table}` differs from the store"
