"""Query results as a text table, CSV or JSON (for `fleettui sql`).

Data is hostile (fleettui/safe_text.py): the table shows control characters as
escapes; CSV does too when it goes to a terminal, and passes data unchanged only
to pipes and files; JSON escapes them itself (\u001b), which loses nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from fleettui.safe_text import escaped

FORMATS = ("table", "csv", "json")
_MAX_CELL = 60


def _cell(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    s = escaped(str(v))
    return s if len(s) <= _MAX_CELL else s[: _MAX_CELL - 1] + "…"


def as_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(r[i], int | float | decimal.Decimal) or r[i] is None for r in rows)
        and any(r[i] is not None for r in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    columns = [escaped(str(c)) for c in columns]
    out = [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def as_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, tty: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(
            ["" if v is None else v.isoformat() if isinstance(v, dt.datetime) else v for v in r]
        )
    return escaped(buf.getvalue()).replace("\\x0a", "\n") if tty else buf.getvalue()


def _json_default(v: Any) -> Any:
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def as_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and (math.isnan(v) or math.isinf(v)) else v

    records = [{c: clean(v) for c, v in zip(columns, r, strict=True)} for r in rows]
    return json.dumps(records, default=_json_default, indent=1) + "\n"


# What EXPLAIN returns: one row per plan, the plan drawn over many lines.
EXPLAIN_COLUMNS = ["explain_key", "explain_value"]


def as_plan(rows: Sequence[Sequence[Any]]) -> str:
    """EXPLAIN's plans whole (a table cell would keep one line of each); control
    characters in them (from the query's literals) shown as escapes."""
    return "".join(
        escaped(str(key))
        + "\n"
        + "".join(escaped(line) + "\n" for line in str(value).rstrip().split("\n"))
        for key, value in rows
    )


def render(
    fmt: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, tty: bool = False
) -> str:
    """`tty`: the output is a terminal (CSV then shows control characters as escapes)."""
    if fmt == "table" and list(columns) == EXPLAIN_COLUMNS:
        return as_plan(rows)
    if fmt == "csv":
        return as_csv(columns, rows, tty=tty)
    return {"table": as_table, "json": as_json}[fmt](columns, rows)
