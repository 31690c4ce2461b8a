"""SQL on a store in this process reads the store and nothing else, as through a daemon.

`fleettui sql --db FILE` (no daemon running) opens the file read-only with external
access off, and both it and the app's SQL console on its own store judge each query
as the daemon's guard does (`storage.guard.local_refusal`): every probe and every
statement of the generated corpus is refused, the store is unchanged, no file
appears, and nothing is fetched; pure reads, TIMESTAMPTZ included, still work.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from fleettui import cli
from fleettui.tui.demo import fixed_store
from fleettui.tui.screens.sql import run_query
from storage.reader import LocalReader, QueryError, ReadOnlyError, check_pure_read
from storage.store import Store
from tests.security.probes import PROBES, READS, Hits, checksum, corpus, fill, serve_hits


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    db = tmp / "fleet.duckdb"
    store, _ = fixed_store(30.0, 10.0, path=str(db))
    store.close()
    other = tmp / "other.daemon.json"  # a readable secret beside the store
    other.write_text(json.dumps({"token": "other-daemons-token"}))
    server = serve_hits()
    where = {
        "tmp": str(tmp),
        "endpoint": "quack:127.0.0.1:1",
        "other_info": str(other),
        "url": f"http://127.0.0.1:{server.server_port}/internal",
    }
    yield db, tmp, where
    server.shutdown()


def _checksum(path) -> dict:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return checksum(con, path.stem)
    finally:
        con.close()


def _unharmed(tmp, before_files: set, db, before: dict) -> None:
    assert set(tmp.iterdir()) == before_files
    assert not Hits.hits, f"fetched {Hits.hits}"
    assert _checksum(db) == before


@pytest.mark.parametrize("name,sql", PROBES, ids=[p[0] for p in PROBES])
def test_probe_refused_by_fleettui_sql_on_a_file(local, name, sql, capsys):
    db, tmp, where = local
    before, files = _checksum(db), set(tmp.iterdir())
    rc = cli.main(["sql", "--db", str(db), fill(sql, **where)])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "", out
    assert err.startswith("fleettui sql: error: ") and len(err.strip().splitlines()) == 1, err
    assert "root:" not in err and "other-daemons-token" not in err
    _unharmed(tmp, files, db, before)


@pytest.mark.parametrize("name,sql", PROBES, ids=[p[0] for p in PROBES])
def test_probe_refused_by_the_apps_console_on_its_own_store(local, name, sql):
    """The store the app writes itself (demo, --config): a writable connection."""
    db, tmp, where = local
    before, files = _checksum(db), set(tmp.iterdir())
    store = Store.open(str(db))
    try:
        with pytest.raises((ReadOnlyError, QueryError)):
            run_query(LocalReader(store.con), fill(sql, **where))
    finally:
        store.close()
    _unharmed(tmp, files, db, before)


def test_generated_corpus_is_refused_on_a_local_store(local):
    db, tmp, where = local
    statements = [fill(s, **where) for s in corpus()]
    assert len(statements) > 400
    before, files = _checksum(db), set(tmp.iterdir())
    store = Store.open(str(db), read_only=True)
    admitted = []
    try:
        for sql in statements:
            try:
                check_pure_read(store.con, sql)
                admitted.append(sql)
            except (ReadOnlyError, QueryError):
                pass
    finally:
        store.close()
    assert admitted == []
    _unharmed(tmp, files, db, before)


def test_pure_reads_still_work_on_a_file(local, capsys):
    db, _, _ = local
    for sql in [*READS, 'WITH "x.csv" AS (SELECT 1 AS a) SELECT a FROM "x.csv"']:
        assert cli.main(["sql", "--db", str(db), "--format", "csv", sql]) == 0, sql
        out, err = capsys.readouterr()
        assert out and err == "", (sql, err)


def test_timestamptz_results_print(local, capsys):
    """DuckDB hands TIMESTAMPTZ (now(), ::TIMESTAMPTZ) to Python through pytz."""
    db, _, _ = local
    sql = "SELECT TIMESTAMPTZ '2026-01-01 10:00:00+02' AS t, now() > t AS later"
    assert cli.main(["sql", "--db", str(db), "--format", "csv", sql]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[1].startswith("2026-01-01T08:00:00+00:00,"), out
    assert out.splitlines()[1].endswith("True"), out


def test_a_file_opened_by_fleettui_sql_is_locked_down(local):
    """Beside the judgement: the file's connection cannot reach outside the store, and
    no statement can switch that back on."""
    from fleettui.sql_cli import open_reader

    db, _, _ = local
    reader = open_reader(str(db), None, None)
    try:
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            reader.con.execute("SELECT * FROM read_text('/etc/hostname')").fetchall()
        with pytest.raises(duckdb.Error, match="locked"):
            reader.con.execute("SET enable_external_access = true")
    finally:
        reader.close()
