"""Where the views read from: a DuckDB connection/cursor, or a `storage.reader` Reader.

The view SQL names its parameters (`$at`); a Reader takes `?` placeholders
(the Quack path inlines them), so for a Reader they are rewritten in order.
Either way the result is an Arrow table.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa

from storage.reader import Reader

# what a view reads: a DuckDB connection/cursor, or a Reader (local or on a daemon)
Source = duckdb.DuckDBPyConnection | Reader

_PARAM = re.compile(r"\$([a-z_]+)")


def run(src: Source, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
    """Run one SELECT with named parameters; returns an Arrow table."""
    params = params or {}
    if isinstance(src, duckdb.DuckDBPyConnection):
        used = set(_PARAM.findall(sql))
        return src.execute(sql, {k: v for k, v in params.items() if k in used}).to_arrow_table()
    positional = [params[name] for name in _PARAM.findall(sql)]
    return src.arrow(_PARAM.sub("?", sql), positional)


# A table that a newer component adds (the alert engine's `alerts`) is looked
# for again after a few seconds, not on every refresh of every view (a failed
# lookup costs milliseconds). The cache lives on the reader object; a bare
# DuckDB connection is asked every time.
_COLUMNS_TTL_S = 5.0


def table_columns(src: Source, table: str) -> frozenset[str]:
    """Column names of `table`, empty when it does not exist (there)."""
    attrs: dict[str, Any] | None = getattr(src, "__dict__", None)
    cache: dict[str, tuple[float, frozenset[str]]] | None = None
    if attrs is not None:
        cache = attrs.setdefault("_view_tables", {})
        hit = cache.get(table)
        if hit is not None and time.monotonic() - hit[0] < _COLUMNS_TTL_S:
            return hit[1]
    try:
        cols = frozenset(run(src, f"SELECT * FROM {table} LIMIT 0").column_names)
    except Exception:  # noqa: BLE001 - duckdb.Error locally, QueryError through a reader
        cols = frozenset()
    if cache is not None:
        cache[table] = (time.monotonic(), cols)
    return cols
