"""What an attacker tries against a served store: the issue's probes, our own, and a
generated corpus of statements that are not single pure reads.

Each probe is SQL text with `{tmp}` (a scratch directory), `{endpoint}` (the
daemon's Quack endpoint), `{url}` (an HTTP server on 127.0.0.1 that records
hits) and `{other_info}` (another daemon's info file) filled in by the test.
"""

from __future__ import annotations

import http.server
import itertools
import threading

import duckdb

# (name, sql): every one must be refused for a viewer, whatever the path.
PROBES: list[tuple[str, str]] = [
    ("EXPLAIN ANALYZE DELETE", "EXPLAIN ANALYZE DELETE FROM tenants"),
    ("EXPLAIN ANALYZE DROP", "EXPLAIN ANALYZE DROP TABLE gpu_samples"),
    ("EXPLAIN ANALYZE COPY TO file", "EXPLAIN ANALYZE COPY hosts TO '{tmp}/explain_copy.csv'"),
    ("checkpoint()", "SELECT * FROM checkpoint()"),
    ("force_checkpoint()", "SELECT * FROM force_checkpoint()"),
    ("read_text /etc/passwd", "SELECT * FROM read_text('/etc/passwd')"),
    ("read_csv /etc/shadow", "SELECT * FROM read_csv('/etc/shadow')"),
    ("glob /root/*", "SELECT * FROM glob('/root/*')"),
    ("read_json_auto other daemon's token", "SELECT * FROM read_json_auto('{other_info}')"),
    ("replacement scan of a file", "SELECT * FROM '{other_info}'"),
    ("read_blob a file", "SELECT * FROM read_blob('/etc/hostname')"),
    ("read_text http URL", "SELECT * FROM read_text('{url}')"),
    (
        "quack_serve with own token",
        "SELECT * FROM quack_serve('quack:127.0.0.1:1', token := 'attacker-token')",
    ),
    ("CALL quack_stop", "CALL quack_stop('{endpoint}')"),
    ("quack_query to itself", "SELECT * FROM quack_query('{endpoint}', 'DELETE FROM hosts')"),
    ("ATTACH a file", "ATTACH '{tmp}/attacker.duckdb' AS a"),
    ("SET external access on", "SET enable_external_access = true"),
    ("SET threads", "SET threads = 1"),
    ("RESET", "RESET lock_configuration"),
    ("PRAGMA", "PRAGMA enable_profiling"),
    ("CALL a table function", "CALL pragma_version()"),
    ("INSTALL", "INSTALL httpfs"),
    ("LOAD", "LOAD httpfs"),
    ("multi-statement", "SELECT 1; DELETE FROM hosts"),
    ("COPY TO file", "COPY hosts TO '{tmp}/copy.csv'"),
    ("COPY FROM file", "COPY hosts FROM '/etc/passwd'"),
    ("CREATE TABLE", "CREATE TABLE pwned AS SELECT 1 AS a"),
    ("CREATE MACRO", "CREATE MACRO pwned() AS 1"),
    ("INSERT", "INSERT INTO tenants (tenant) VALUES ('pwned')"),
    ("UPDATE", "UPDATE hosts SET rack = 'pwned'"),
    ("DELETE", "DELETE FROM tenants"),
    ("DROP TABLE", "DROP TABLE gpu_samples"),
    ("ALTER TABLE", "ALTER TABLE hosts ADD COLUMN pwned INTEGER"),
    ("TRUNCATE", "TRUNCATE hosts"),
    ("CHECKPOINT", "CHECKPOINT"),
    ("VACUUM", "VACUUM"),
    ("EXPORT DATABASE", "EXPORT DATABASE '{tmp}/export'"),
    ("IMPORT DATABASE", "IMPORT DATABASE '{tmp}/export'"),
    ("DETACH", "DETACH fleettui_guard"),
    ("CREATE SECRET", "CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')"),
    ("duckdb_secrets()", "SELECT * FROM duckdb_secrets()"),
    ("duckdb_settings()", "SELECT * FROM duckdb_settings()"),
    ("query() of a write", "SELECT * FROM query('DELETE FROM hosts')"),
    ("nextval", "SELECT nextval('pwned')"),
    (
        "operator shape without the operator token",
        "INSERT INTO silences VALUES ('sil-x', 'silence', 'r', NULL, NULL, 'me', "
        "TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-01 00:00:00', "
        "TIMESTAMP '2099-01-01 00:00:00', NULL)",
    ),
]

# Pure reads a viewer must still be able to run (the positive control).
READS = [
    "SELECT count(*) FROM gpu_samples",
    "select host, rack from hosts order by host limit 3",
    "WITH h AS (SELECT * FROM hosts) SELECT count(*) FROM h",
    "FROM gpus LIMIT 1",
    "EXPLAIN SELECT count(*) FROM gpu_samples",
    "SELECT table_name FROM duckdb_tables() ORDER BY 1",
    "SELECT * FROM range(3)",
    "SELECT json_extract_string('{\"a\": 1}', '$.a')",
    "SELECT 'DELETE FROM hosts; read_text(''/etc/passwd'')' AS just_text",
]

# Statement kinds that are not pure reads, and wrappers to hide them in.
_WRITES = [
    "DELETE FROM hosts",
    "UPDATE hosts SET rack = 'x'",
    "INSERT INTO tenants (tenant) VALUES ('x')",
    "DROP TABLE hosts",
    "CREATE TABLE z AS SELECT 1",
    "COPY hosts TO '{tmp}/c.csv'",
    "ATTACH '{tmp}/z.duckdb' AS z",
    "SET threads = 1",
    "PRAGMA enable_profiling",
    "CALL checkpoint()",
    "CHECKPOINT",
    "VACUUM",
    "EXPORT DATABASE '{tmp}/e'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "ALTER TABLE hosts RENAME TO h2",
    "CREATE MACRO m() AS 1",
    "TRUNCATE hosts",
    "CREATE OR REPLACE VIEW v AS SELECT 1",
    "DETACH fleettui_guard",
    "USE fleettui_guard",
]
_STATEMENT_WRAPPERS = [
    "{}",
    "EXPLAIN ANALYZE {}",
    "explain analyse {}",
    "EXPLAIN {}",
    "/* c */ {}",
    "  \n\t{};",
    "SELECT 1; {}",
    "{}; SELECT 1",
    "EXPLAIN SELECT 1; {}",
    "WITH x AS (SELECT 1) {}",
]
_TABLE_FUNCTIONS = [
    "read_text('/etc/passwd')",
    "read_csv('/etc/passwd')",
    "read_csv_auto('/etc/passwd')",
    "read_json('/etc/passwd')",
    "read_json_auto('{other_info}')",
    "read_ndjson('/etc/passwd')",
    "read_parquet('{tmp}/x.parquet')",
    "parquet_scan('{tmp}/x.parquet')",
    "read_blob('/etc/passwd')",
    "glob('/*')",
    "sniff_csv('/etc/passwd')",
    "checkpoint()",
    "force_checkpoint()",
    "quack_serve('quack:127.0.0.1:1', token := 'zzzz')",
    "quack_stop('{endpoint}')",
    "quack_server_list()",
    "quack_active_connections()",
    "query('SELECT 1')",
    "query_table('hosts')",
    "duckdb_secrets()",
    "duckdb_settings()",
    "duckdb_extensions()",
    "duckdb_logs()",
    "enable_logging()",
    "truncate_duckdb_logs()",
    "read_duckdb('{tmp}/z.duckdb')",
    "json_execute_serialized_sql('x')",
    "which_secret('s3://x', 's3')",
]
_FUNCTION_WRAPPERS = [
    "SELECT * FROM {}",
    "select * from {} limit 1",
    "SELECT (SELECT count(*) FROM {})",
    "SELECT * FROM hosts WHERE EXISTS (SELECT 1 FROM {})",
    "WITH r AS (SELECT * FROM {}) SELECT * FROM r",
    "SELECT * FROM (SELECT * FROM (SELECT * FROM {}))",
    "SELECT * FROM hosts, {}",
    "EXPLAIN SELECT * FROM {}",
    "SELECT * FROM hosts UNION ALL SELECT * FROM {}",
]
_SCALARS = [
    "nextval('s')",
    "setseed(0.5)",
    "write_log('x')",
    "getvariable('x')",
    "quack_check_token('a', 'b', 'c')",
]


def corpus() -> list[str]:
    """Statements that are not single pure reads: kinds × wrappers (deterministic)."""
    out = [w.format(s) for s, w in itertools.product(_WRITES, _STATEMENT_WRAPPERS)]
    out += [w.format(f) for f, w in itertools.product(_TABLE_FUNCTIONS, _FUNCTION_WRAPPERS)]
    out += [f"SELECT {f}" for f in _SCALARS]
    out += [f"SELECT count(*) FROM hosts WHERE {f} IS NOT NULL" for f in _SCALARS]
    return out


def fill(sql: str, **where: str) -> str:
    return (
        sql.replace("{tmp}", where["tmp"])
        .replace("{endpoint}", where["endpoint"])
        .replace("{url}", where["url"])
        .replace("{other_info}", where["other_info"])
    )


class Hits(http.server.BaseHTTPRequestHandler):
    """An internal URL that records every fetch: `{url}` in the probes."""

    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        Hits.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"internal secret\n")

    def log_message(self, *_args) -> None:
        pass


def serve_hits() -> http.server.HTTPServer:
    """Hits on a free 127.0.0.1 port, in a thread (stop with `.shutdown()`)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), Hits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def checksum(con: duckdb.DuckDBPyConnection, database: str) -> dict[str, tuple]:
    """Every table of `database`: its row count and content hash."""
    cur = con.cursor()
    try:
        tables = [
            r[0]
            for r in cur.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY 1",
                [database],
            ).fetchall()
        ]
        return {
            t: cur.execute(f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {t}").fetchone()
            for t in tables
        }
    finally:
        cur.close()
