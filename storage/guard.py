"""What a client of the daemon may run: decided by the daemon, on its side of Quack.

Quack runs any statement a token holder sends, so the daemon installs an
authorization function (`quack_authorization_function`, called by Quack on
every query before it runs) and locks its own configuration:

- **viewer** (anyone holding the token in `<db>.daemon.json`): one pure read.
  DuckDB's own parser decides, through `json_serialize_sql`: the text must be
  exactly one SELECT (plain `EXPLAIN SELECT …` too), and no function in it may
  be a table function outside `ALLOWED_TABLE_FUNCTIONS` or a scalar with side
  effects (`DENIED_SCALARS`). `EXPLAIN ANALYZE`, DDL/DML, COPY, ATTACH,
  SET/PRAGMA/CALL, `checkpoint()`, `quack_serve()`, `read_text()`, … fail
  server-side with "Authorization failed", whatever the client checks.
- **operator** (the token in `<db>.operator.json`): additionally the named
  operations of `fleettui.alerts.silences` (acknowledge, silence, expire), sent
  as one statement of a fixed shape that carries the operator token in a leading
  comment. The daemon keeps only the token's SHA-256, so comparing it leaks
  nothing about the token itself.
- then external access is switched off (no file, directory or URL can be read,
  whatever the function), extensions cannot be installed or loaded, and the
  configuration is locked: no statement can undo any of this.

The guard's macros live in an in-memory catalog (`fleettui_guard`), never in the
store file.
"""

from __future__ import annotations

import hashlib
import json
import re

import duckdb

GUARD_CATALOG = "fleettui_guard"

# Table functions a viewer may call: series, unnesting, and the catalog's own
# metadata (the app's schema tree and DuckDB clients' ATTACH read these).
ALLOWED_TABLE_FUNCTIONS = (
    "range",
    "generate_series",
    "unnest",
    "repeat",
    "json_each",
    "json_tree",
    "duckdb_columns",
    "duckdb_tables",
    "duckdb_views",
    "duckdb_schemas",
    "duckdb_types",
    "duckdb_constraints",
    "duckdb_indexes",
    "duckdb_keywords",
    "duckdb_functions",
    "duckdb_databases",
    "duckdb_dependencies",
    "pragma_table_info",
    "table_info",
    "show",
    "show_tables",
    "summary",
    "pragma_version",
    "version",
    "pg_timezone_names",
    "icu_calendar_names",
)
# Scalars with side effects or reaching beyond the query.
DENIED_SCALARS = (
    "nextval",
    "currval",
    "setseed",
    "write_log",
    "getvariable",
    "getenv",
    "json_execute_serialized_sql",
    "quack_check_token",
    "quack_nop_authorization",
    "quack_uri_parser",
)

OPERATOR_TAG = "fleettui-operator"

# One SQL literal as the operator's statements use them (fleettui.alerts.silences).
_LIT = r"(?:NULL|'(?:[^']|'')*'|TIMESTAMP '[0-9][0-9 :.T-]*')"
# The operator's named operations: the only shapes besides pure reads.
OPERATOR_SHAPES = (
    # acknowledge / silence: one row into silences, literals only
    rf"INSERT INTO silences VALUES \({_LIT}(?:, {_LIT}){{9}}\)",
    # expire: end one silence now
    r"UPDATE silences SET ends_at = TIMESTAMP '[0-9][0-9 :.T-]*' WHERE silence_id = '(?:[^']|'')*'",
)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def operator_statement(token: str, sql: str) -> str:
    """`sql` (one of OPERATOR_SHAPES) as the operator sends it."""
    return f"/*{OPERATOR_TAG}:{token}*/ {sql}"


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _denied_functions(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every table function (and pragma, table macro) this instance knows, less the
    allowlist, plus the denied scalars: the names a viewer's query may not call."""
    rows = con.execute(
        "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
        "WHERE function_type IN ('table', 'table_macro', 'pragma') ORDER BY 1"
    ).fetchall()
    allowed = set(ALLOWED_TABLE_FUNCTIONS)
    return sorted({r[0] for r in rows if r[0] not in allowed} | set(DENIED_SCALARS))


# A name DuckDB would read as a file or URL (a replacement scan): `FROM '/etc/passwd'`,
# `FROM 'x.csv'`, `FROM 's3://b/k'`.
_PATHLIKE = ("/", "\\", ":", ".")
_EXPLAIN = re.compile(r"(?is)(?:\s|--[^\n]*\n|/\*.*?\*/)*EXPLAIN\b")
_EXPLAIN_SELECT = re.compile(r"(?is)(\s*EXPLAIN\s+)(?:SELECT|FROM|WITH|\().*")


def local_refusal(con: duckdb.DuckDBPyConnection, sql: str) -> str | None:
    """Why the daemon would refuse `sql` from a viewer, judged in this process on `con`
    (the app's console on its own store, `fleettui sql` on a file): a table function
    outside the allowlist, a denied scalar, or a table that is a file or URL. None when
    it is a pure read, or when DuckDB cannot parse it (running it then says why).
    The statement kind is `storage.reader.check_read_only`'s to judge."""
    explained = _EXPLAIN_SELECT.fullmatch(sql)  # plain EXPLAIN binds (reads) what it explains
    if explained:
        sql = sql[explained.end(1) :]
    elif _EXPLAIN.match(sql):
        return "EXPLAIN is allowed here of a SELECT only"
    text = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
    tree = json.loads(text[0]) if text and text[0] else {}
    if tree.get("error") is not False:
        return None
    scalars: set[str] = set()
    table_functions: set[str] = set()
    tables: set[str] = set()
    ctes: set[str] = set()
    stack: list = [tree]
    while stack:  # every node of the parse tree, whatever its shape
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("function_name"), str):
            scalars.add(node["function_name"].lower())
        if node.get("type") == "TABLE_FUNCTION":
            name = (node.get("function") or {}).get("function_name")
            table_functions.add(str(name).lower())
        if node.get("type") == "BASE_TABLE" and not node.get("schema_name"):
            if not node.get("catalog_name"):
                tables.add(node.get("table_name", ""))
        for entry in (node.get("cte_map") or {}).get("map") or ():
            ctes.add(str(entry.get("key", "")).lower())
        stack.extend(v for v in node.values() if isinstance(v, dict | list))
    # table functions by the allowlist (whatever extensions this process loaded),
    # scalars by the daemon's denied list
    denied = sorted(table_functions - set(ALLOWED_TABLE_FUNCTIONS))
    denied += sorted(scalars & set(_denied_functions(con)))
    if denied:
        return f"{denied[0]}() is not allowed here: queries read the store, nothing else"
    for name in sorted(tables):
        if name.lower() in ctes or not any(c in name for c in _PATHLIKE):
            continue
        found = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? UNION ALL "
            "SELECT count(*) FROM duckdb_views() WHERE view_name = ?",
            [name, name],
        ).fetchall()
        if not any(n for (n,) in found):
            return f"{name!r} is a file or URL, not a table: queries read the store, nothing else"
    return None


# Every function a parsed SELECT calls, scalar or table, appears in DuckDB's JSON
# form as a "function_name" key (string values cannot contain an unescaped quote).
_NAMES = r"""regexp_extract_all(j, '"function_name":"((?:[^"\\]|\\.)*)"', 1)"""


def _install_sql(operator_sha256: str | None, denied: list[str]) -> list[str]:
    g = GUARD_CATALOG
    denied_list = "[" + ", ".join(_q(f) for f in denied) + "]"
    shapes = "|".join(f"(?:{s})" for s in OPERATOR_SHAPES)
    operator = "false"
    if operator_sha256:
        head = rf"/\*{OPERATOR_TAG}:([0-9a-f]{{64}})\*/ "
        operator = (
            f"(regexp_full_match(q, {_q(head + '(?:' + shapes + ')')}) "
            f"AND sha256(regexp_extract(q, {_q('^' + head)}, 1)) = {_q(operator_sha256)})"
        )
    # One expression, no subquery (Quack runs it before every query): the JSON is
    # bound once through a one-element list_transform.
    return [
        f"ATTACH ':memory:' AS {g}",
        f"""CREATE MACRO {g}.pure_read(q) AS coalesce(list_transform(
            [json_serialize_sql(q::VARCHAR)],
            j -> json_extract_string(j, '$.error') = 'false'
                 AND json_array_length(j, '$.statements') = 1
                 AND NOT list_has_any(list_transform({_NAMES}, x -> lower(x)), {denied_list})
            )[1], false)""",
        # plain EXPLAIN of a SELECT: judged by the SELECT it explains
        f"""CREATE MACRO {g}.authorize(sid, q) AS (
            {g}.pure_read(CASE WHEN regexp_full_match(q, '(?is)\\s*EXPLAIN\\s+(?:SELECT|FROM|WITH|\\().*')
                               THEN regexp_replace(q, '(?i)^\\s*EXPLAIN\\s+', '') ELSE q END)
            OR {operator})""",
    ]


# Settings that close every way out of the store, applied last, in this order.
LOCKDOWN = (
    "SET enable_external_access = false",
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET lock_configuration = true",
)


def install(con: duckdb.DuckDBPyConnection, operator_token: str | None) -> None:
    """Make `con`'s Quack server authorize as above, then lock the configuration.
    Call after the extensions are loaded and `quack_serve` runs; nothing after
    this can change a setting on this database instance."""
    sha = token_sha256(operator_token) if operator_token else None
    for sql in _install_sql(sha, _denied_functions(con)):
        con.execute(sql)
    con.execute(f"SET GLOBAL quack_authorization_function = '{GUARD_CATALOG}.authorize'")
    for sql in LOCKDOWN:
        con.execute(sql)
