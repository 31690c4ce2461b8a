"""Readers: one way to run read-only SQL, against a local store or a daemon.

- `LocalReader` wraps a DuckDB connection in this process (the daemon's or the
  app's own store, or a database file opened read-only); each query gets its
  own cursor, so worker threads can share a reader.
- `QuackReader` runs each query *on the daemon* through Quack's
  `quack_query`, so joins and aggregates execute next to the data (an
  attached Quack catalog refuses queries that scan two remote tables).
  The daemon itself refuses anything but one pure read from a viewer
  (`storage/guard.py`); the reader's own single-SELECT check is a courtesy that
  gives a clearer message first. With the operator token a reader can also run
  the operator's named operations (`operate`).

Both return Arrow tables (`arrow`) or (columns, rows) (`rows`). Parameters are
`?` placeholders; the Quack path inlines them as SQL literals.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from storage import guard, quack

_READ_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class ReadOnlyError(ValueError):
    """The SQL is not a single read-only statement."""


class QueryError(RuntimeError):
    """The query failed; DuckDB's message on one line (see `error_text`)."""


# DuckDB's error kinds ("Catalog Error: ", "Binder Error: ", ...). Through Quack the
# kind is replaced by "Invalid Input Error: ", so it is dropped on both paths and
# the same mistake reads the same through a daemon and on a file.
_KIND = re.compile(r"^(?:[A-Z][A-Za-z]* )+Error: ")
# The lines of a DuckDB error that help fix the query; the rest (the LINE/caret
# context, Quack's own wrapper context) is left out so the message stays one line.
_HINTS = ("Did you mean", "Candidate bindings:", "HINT:")


def error_text(message: str) -> str:
    """One line from a DuckDB error: the message without its kind, with its hints."""
    lines = [ln.strip() for ln in message.strip().splitlines()]
    first = lines[0] if lines else ""
    while m := _KIND.match(first):
        first = first[m.end() :]
    hints = [ln for ln in lines[1:] if ln.startswith(_HINTS)]
    return " ".join([first, *hints])


def check_read_only(sql: str) -> None:
    try:
        stmts = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(error_text(str(exc))) from exc
    if len(stmts) != 1:
        raise ReadOnlyError(f"expected one statement, got {len(stmts)}")
    if stmts[0].type not in _READ_TYPES:
        raise ReadOnlyError(f"only SELECT queries are allowed here, not {stmts[0].type.name}")
    if _EXPLAIN_ANALYZE.match(sql):
        raise ReadOnlyError(
            "EXPLAIN ANALYZE runs its statement: only plain EXPLAIN is allowed here"
        )


_EXPLAIN_ANALYZE = re.compile(r"(?is)^(?:\s|--[^\n]*\n|/\*.*?\*/)*EXPLAIN\s+ANALY[SZ]E\b")


def check_pure_read(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """What the daemon admits from a viewer, judged here for a store in this process:
    one read of the store, nothing outside it (no file, URL or directory)."""
    check_read_only(sql)
    reason = guard.local_refusal(con, sql)
    if reason:
        raise ReadOnlyError(reason)


def read_only_arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run `sql` on a cursor of `con` inside a READ ONLY transaction (the app's SQL
    console on the store it writes): whatever the statement, the store is not changed,
    and nothing outside the store is read."""
    check_pure_read(con, sql)
    cur = con.cursor()
    try:
        cur.execute("BEGIN TRANSACTION READ ONLY")
        res = cur.execute(sql)
        return res.to_arrow_table() if res.description is not None else pa.table({})
    except duckdb.Error as exc:
        raise _error(exc) from exc
    finally:
        try:
            cur.execute("ROLLBACK")
        except duckdb.Error:
            pass
        cur.close()


def sql_literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"'{v}'::DOUBLE" if math.isnan(v) or math.isinf(v) else repr(v)
    if isinstance(v, dt.datetime):
        return f"TIMESTAMP '{v.isoformat(sep=' ')}'"
    if isinstance(v, dt.date):
        return f"DATE '{v.isoformat()}'"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(sql_literal(x) for x in v) + "]"
    raise TypeError(f"cannot inline a {type(v).__name__} as SQL")


def inline_params(sql: str, params: Sequence[Any]) -> str:
    """Replace `?` placeholders outside quotes and comments with literals."""
    out, it, i, n = [], iter(params), 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":  # a quoted string or identifier: copy through its closing quote
            j = sql.find(ch, i + 1)
            j = n - 1 if j < 0 else j
            out.append(sql[i : j + 1])
            i = j + 1
            continue
        if sql.startswith("--", i) or sql.startswith("/*", i):
            end = "\n" if sql[i + 1] == "-" else "*/"
            j = sql.find(end, i + 2)
            j = n if j < 0 else j + len(end)
            out.append(sql[i:j])
            i = j
            continue
        if ch == "?":
            try:
                out.append(sql_literal(next(it)))
            except StopIteration:
                raise QueryError("more ? placeholders than parameters") from None
        else:
            out.append(ch)
        i += 1
    if next(it, _END) is not _END:
        raise QueryError("more parameters than ? placeholders")
    return "".join(out)


_END = object()


class Reader(Protocol):
    where: str

    def arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table: ...

    def rows(
        self, sql: str, params: Sequence[Any] | None = None
    ) -> tuple[list[str], list[tuple]]: ...

    def close(self) -> None: ...


def _error(exc: duckdb.Error) -> QueryError:
    return QueryError(error_text(str(exc)))


class LocalReader:
    """A Reader over a DuckDB connection in this process (the app's or daemon's own store,
    or a file opened read-only): a cursor per query, closed after it, so worker threads
    can share one reader. The connection is closed with the reader only when `owns`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, where: str = "local", *, owns: bool = False):
        self.con = con
        self.where = where
        self._owns = owns

    def _fetch(
        self,
        sql: str,
        params: Sequence[Any] | None,
        take: Callable[[duckdb.DuckDBPyConnection], Any],
    ) -> Any:
        cur = self.con.cursor()
        try:
            return take(cur.execute(sql, list(params) if params else None))
        except duckdb.Error as exc:
            raise _error(exc) from exc
        finally:
            cur.close()

    def arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        return self._fetch(
            sql,
            params,
            lambda res: pa.table({}) if res.description is None else res.to_arrow_table(),
        )

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple]]:
        return self._fetch(
            sql,
            params,
            lambda res: (
                ([], [])
                if res.description is None
                else ([d[0] for d in res.description], res.fetchall())
            ),
        )

    def close(self) -> None:
        if self._owns:
            self.con.close()


_REFUSED = (
    "the daemon refused this statement: a viewer runs one read-only SELECT "
    "(no files, URLs, settings or writes)"
)


class QuackReader:
    def __init__(self, endpoint: str, token: str, *, operator_token: str | None = None):
        quack.parse_endpoint(endpoint)
        self.endpoint = endpoint
        self.where = endpoint
        self._token = token
        self._operator_token = operator_token
        self._con = duckdb.connect()
        quack.load_extensions(self._con)
        self._lock = threading.Lock()
        self.rows("SELECT 1")  # fail now, with a clear message, if unreachable or refused

    @property
    def can_operate(self) -> bool:
        """Holds the operator token: may acknowledge and silence alerts."""
        return self._operator_token is not None

    def operate(self, sql: str) -> None:
        """Run one of the operator's named operations (storage.guard.OPERATOR_SHAPES)."""
        if self._operator_token is None:
            raise ReadOnlyError(
                f"{self.endpoint}: no operator token (only the daemon's own user "
                "holds it, in <db>.operator.json)"
            )
        self._send(guard.operator_statement(self._operator_token, sql)).fetchall()

    def _run(self, sql: str, params: Sequence[Any] | None) -> duckdb.DuckDBPyConnection:
        check_read_only(sql)
        return self._send(inline_params(sql, params or ()))

    def _send(self, text: str) -> duckdb.DuckDBPyConnection:
        with self._lock:
            cur = self._con.cursor()
        try:
            return cur.execute(
                "SELECT * FROM quack_query(?, ?, token := ?)", [self.endpoint, text, self._token]
            )
        except duckdb.Error as exc:
            msg = str(exc).strip().splitlines()[0]
            if "uthentication failed" in msg or "nvalid token" in msg:
                raise quack.QuackError(
                    f"{self.endpoint}: authentication failed (wrong token)"
                ) from exc
            if "Could not connect" in msg or "Failed to send" in msg:
                raise quack.QuackError(f"{self.endpoint}: no daemon answers there") from exc
            if "Authorization failed" in msg:
                raise ReadOnlyError(_REFUSED) from exc
            raise QueryError(error_text(str(exc))) from exc

    def arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        return self._run(sql, params).to_arrow_table()

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple]]:
        res = self._run(sql, params)
        return [d[0] for d in res.description], res.fetchall()

    def close(self) -> None:
        self._con.close()
