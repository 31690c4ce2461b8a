"""Where the views read from: a DuckDB connection/cursor, or a `storage.reader` Reader.

The view SQL names its parameters (`$at`); a Reader takes `?` placeholders
(the Quack path inlines them), so for a Reader they are rewritten in order.
Either way the result is an Arrow table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import duckdb
import pyarrow as pa


class ArrowReader(Protocol):
    def arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table: ...


Source = duckdb.DuckDBPyConnection | ArrowReader

_PARAM = re.compile(r"\$([a-z_]+)")


def run(src: Source, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
    """Run one SELECT with named parameters; returns an Arrow table."""
    params = params or {}
    if isinstance(src, duckdb.DuckDBPyConnection):
        used = set(_PARAM.findall(sql))
        return src.execute(sql, {k: v for k, v in params.items() if k in used}).to_arrow_table()
    positional = [params[name] for name in _PARAM.findall(sql)]
    return src.arrow(_PARAM.sub("?", sql), positional)


def table_columns(src: Source, table: str) -> set[str]:
    """Column names of `table`, empty when it does not exist (there)."""
    try:
        return set(run(src, f"SELECT * FROM {table} LIMIT 0").column_names)
    except Exception:  # noqa: BLE001 - duckdb.Error locally, QueryError through a reader
        return set()


class ConnectionReader:
    """A Reader over a DuckDB connection in this process: a cursor per query, so
    worker threads can share it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, where: str = "local") -> None:
        self.con = con
        self.where = where

    def arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        cur = self.con.cursor()
        try:
            return cur.execute(sql, list(params) if params else None).to_arrow_table()
        finally:
            cur.close()

    def close(self) -> None:
        """The connection belongs to the caller."""
