"""The daemon decides what a token may run (storage/guard.py).

One store per module, served exactly as `fleettui daemon` serves it
(`fleettui.daemon._serve`: Quack, the guard, external access off, configuration
locked), filled with the simulated fleet and an alert. Every probe and every
statement of the generated corpus goes through a raw DuckDB client holding the
viewer token (no client-side check at all), through an ATTACHed Quack catalog,
through `fleettui sql`, and through the app's SQL console; each is refused, the
store's contents are checksummed before and after, and no file appears.
"""

from __future__ import annotations

import http.server
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from fleettui import cli
from fleettui.config import Config
from fleettui.daemon import _serve
from fleettui.paths import DaemonInfo, operator_path, read_operator_token
from fleettui.tui.demo import fixed_store
from fleettui.tui.screens.sql import run_query
from storage import guard, quack
from storage.reader import QuackReader, QueryError, ReadOnlyError
from storage.store import Store
from tests.security.probes import PROBES, READS, Hits, checksum, corpus, fill, serve_hits
from tests.tui_support import stale_host_alert, write_alerts


@dataclass
class Served:
    store: Store
    info: DaemonInfo
    operator_token: str
    tmp: Path
    where: dict[str, str]
    http: http.server.HTTPServer

    raw_client: duckdb.DuckDBPyConnection | None = None  # loading Quack costs ~2 s: one per module
    viewer: QuackReader | None = None

    def raw(self) -> duckdb.DuckDBPyConnection:
        """A cursor of a plain DuckDB client with Quack loaded: no client-side check at all."""
        return self.raw_client.cursor()

    def checksum(self) -> dict[str, tuple]:
        """Every table's row count and content hash, read on the owner's side."""
        return checksum(self.store.con, "fleet")

    def files(self) -> set[str]:
        return {str(p.relative_to(self.tmp)) for p in self.tmp.rglob("*")}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guard")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_RUNTIME_DIR", str(tmp / "run"))
        store, last = fixed_store(60.0, 10.0, path=str(tmp / "fleet.duckdb"))
        write_alerts(store, [stale_host_alert(last, "s")])
        info = _serve(store, Config(), tmp / "fleet.duckdb", None)
        other = tmp / "other.duckdb.daemon.json"
        other.write_text(
            json.dumps(
                {
                    "pid": 1,
                    "endpoint": "quack:127.0.0.1:1",
                    "token": "other-daemons-token",
                    "db": "x",
                    "started_at": "",
                }
            )
        )
        http_server = serve_hits()
        where = {
            "tmp": str(tmp),
            "endpoint": info.endpoint,
            "other_info": str(other),
            "url": f"http://127.0.0.1:{http_server.server_port}/internal",
        }
        op = read_operator_token(tmp / "fleet.duckdb", info.pid)
        assert op is not None
        served = Served(store, info, op, tmp, where, http_server)
        served.raw_client = duckdb.connect()
        quack.load_extensions(served.raw_client)
        served.viewer = QuackReader(info.endpoint, info.token)
        yield served
        served.viewer.close()
        served.raw_client.close()
        http_server.shutdown()
        store.con.execute("CALL quack_stop(?)", [info.endpoint])
        store.close()


def _raw_query(served: Served, sql: str, token: str | None = None) -> list:
    con = served.raw()
    try:
        return con.execute(
            "SELECT * FROM quack_query(?, ?, token := ?)",
            [served.info.endpoint, sql, token or served.info.token],
        ).fetchall()
    finally:
        con.close()


# The daemon's two refusals: the guard, and (for a replacement scan of a file
# name, which names no function) external access being off.
REFUSED = "Authorization failed|operations are disabled by configuration"


def _assert_unharmed(served: Served, before: dict, files_before: set[str]) -> None:
    assert served.checksum() == before
    assert served.files() == files_before
    assert not Hits.hits, f"the daemon fetched {Hits.hits}"


@pytest.mark.parametrize("name,sql", PROBES, ids=[p[0] for p in PROBES])
def test_probe_refused_by_the_daemon_for_a_raw_client(served, name, sql):
    before, files = served.checksum(), served.files()
    with pytest.raises(duckdb.Error, match=REFUSED):
        _raw_query(served, fill(sql, **served.where))
    _assert_unharmed(served, before, files)


class _SharedReader:
    """The module's viewer reader, as `fleettui sql` would open it (closing is a no-op)."""

    def __init__(self, reader: QuackReader):
        self._reader = reader

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("name,sql", PROBES, ids=[p[0] for p in PROBES])
def test_probe_refused_through_fleettui_sql(served, name, sql, capsys, monkeypatch):
    import fleettui.sql_cli

    def reader(endpoint, token, **_kw):
        assert (endpoint, token) == (served.info.endpoint, served.info.token)
        return _SharedReader(served.viewer)

    monkeypatch.setattr(fleettui.sql_cli, "QuackReader", reader)
    before, files = served.checksum(), served.files()
    rc = cli.main(
        [
            "sql",
            "--connect",
            served.info.endpoint,
            "--token",
            served.info.token,
            fill(sql, **served.where),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert err.startswith("fleettui sql: error: ") and len(err.strip().splitlines()) == 1, err
    _assert_unharmed(served, before, files)


@pytest.mark.parametrize("name,sql", PROBES, ids=[p[0] for p in PROBES])
def test_probe_refused_through_the_apps_sql_console(served, name, sql):
    before, files = served.checksum(), served.files()
    with pytest.raises((ReadOnlyError, QueryError)):
        run_query(served.viewer, fill(sql, **served.where))
    _assert_unharmed(served, before, files)


def test_the_clients_courtesy_check_is_not_the_guard(served):
    """A statement the client-side check lets through (one SELECT) but that reads a
    file is refused by the daemon, with the reader's one clear line."""
    with pytest.raises(ReadOnlyError, match="the daemon refused this statement"):
        served.viewer.rows("SELECT * FROM read_text('/etc/passwd')")


def test_generated_corpus_is_refused_by_the_daemon(served):
    statements = [fill(s, **served.where) for s in corpus()]
    assert len(statements) > 400
    before, files = served.checksum(), served.files()
    con = served.raw()
    admitted = []
    try:
        for sql in statements:  # noqa: B007
            try:
                con.execute(
                    "SELECT * FROM quack_query(?, ?, token := ?)",
                    [served.info.endpoint, sql, served.info.token],
                ).fetchall()
                admitted.append(sql)
            except duckdb.Error as exc:
                assert re.search(REFUSED, str(exc)), (sql, exc)
    finally:
        con.close()
    assert admitted == []
    _assert_unharmed(served, before, files)


def test_pure_reads_still_work_for_a_viewer(served):
    for sql in READS:
        assert _raw_query(served, sql) is not None, sql
    assert _raw_query(served, "SELECT count(*) FROM hosts")[0][0] > 0


def test_attached_quack_catalog_reads_but_cannot_write(served):
    before, files = served.checksum(), served.files()
    con = duckdb.connect()  # ATTACH changes the client: its own connection
    quack.load_extensions(con)
    try:
        con.execute(
            f"ATTACH '{served.info.endpoint}' AS fleet_remote "
            f"(TYPE quack, TOKEN '{served.info.token}')"
        )
        assert con.execute("SELECT count(*) FROM fleet_remote.hosts").fetchone()[0] > 0
        for sql in (
            "DELETE FROM fleet_remote.tenants",
            "DROP TABLE fleet_remote.hosts",
            "CREATE TABLE fleet_remote.pwned (a INTEGER)",
            "INSERT INTO fleet_remote.tenants (tenant) VALUES ('pwned')",
            "UPDATE fleet_remote.hosts SET rack = 'x'",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
    finally:
        con.close()
    _assert_unharmed(served, before, files)


def test_external_access_off_and_configuration_locked_on_the_daemon(served):
    """Even the daemon's own connection can no longer read files or change settings:
    nothing a client sends could undo the lockdown."""
    cur = served.store.cursor()
    try:
        with pytest.raises(duckdb.Error):
            cur.execute("SELECT * FROM read_text('/etc/passwd')").fetchall()
        with pytest.raises(duckdb.Error, match="lock"):
            cur.execute("SET enable_external_access = true")
    finally:
        cur.close()


def test_store_keeps_writing_and_checkpointing_under_the_lockdown(served):
    from storage.batch import make_batch

    n = served.store.write([make_batch("tenants", {"tenant": ["guard-test-tenant"]})])
    assert n == 1
    served.store.checkpoint()
    cur = served.store.cursor()
    try:
        assert (
            cur.execute(
                "SELECT count(*) FROM tenants WHERE tenant = 'guard-test-tenant'"
            ).fetchone()[0]
            == 1
        )
    finally:
        cur.close()


def test_operator_acknowledges_and_silences_a_viewer_cannot(served):
    from fleettui.alerts.silences import acknowledge, expire, silence

    alert_id = _raw_query(served, "SELECT alert_id FROM alerts")[0][0]
    now = served.store.cursor().execute("SELECT max(ts) FROM gpu_samples").fetchone()[0]
    viewer = served.viewer
    operator = QuackReader(
        served.info.endpoint, served.info.token, operator_token=served.operator_token
    )
    wrong = QuackReader(served.info.endpoint, served.info.token, operator_token="0" * 64)
    try:
        assert not viewer.can_operate and operator.can_operate
        with pytest.raises(ReadOnlyError):
            acknowledge(viewer, alert_id, by="mallory", until=now + timedelta(hours=1), now=now)
        with pytest.raises(ReadOnlyError, match="refused"):
            silence(wrong, by="mallory", until=now + timedelta(hours=1), rule="host_stale", now=now)
        ack = acknowledge(operator, alert_id, by="ops", until=now + timedelta(hours=1), now=now)
        sil = silence(
            operator,
            by="ops",
            until=now + timedelta(hours=1),
            rule="host_stale",
            scope_key="it's [/] \x1b[2J",
            now=now,
            comment="o'clock; DROP TABLE hosts",
        )
        expire(operator, sil, now=now + timedelta(minutes=1))
        rows = dict(_raw_query(served, "SELECT silence_id, ends_at FROM silences"))
        assert set(rows) >= {ack, sil}
        assert rows[sil] == now + timedelta(minutes=1)
        assert _raw_query(served, "SELECT count(*) FROM hosts")[0][0] > 0
    finally:
        operator.close()
        wrong.close()


def test_operator_token_opens_only_the_named_operations(served):
    op = served.operator_token
    before = served.checksum()
    for sql in (
        "DELETE FROM hosts",
        "DROP TABLE silences",
        "DELETE FROM silences",
        "INSERT INTO silences SELECT * FROM silences",
        "INSERT INTO silences VALUES ('a', 'ack', NULL, NULL, NULL, 'x', "
        "TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-01 00:00:00', "
        "TIMESTAMP '2099-01-01 00:00:00', NULL); DELETE FROM hosts",
        "INSERT INTO silences VALUES ('a', 'ack', (SELECT 'x'), NULL, NULL, 'x', "
        "TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-01 00:00:00', "
        "TIMESTAMP '2099-01-01 00:00:00', NULL)",
        "UPDATE silences SET ends_at = TIMESTAMP '2026-01-01 00:00:00'",
        "SELECT * FROM read_text('/etc/passwd')",
    ):
        with pytest.raises(duckdb.Error, match="Authorization failed"):
            _raw_query(served, guard.operator_statement(op, sql))
    assert served.checksum() == before


def test_tokens_and_files_are_private(served):
    db = Path(served.info.db)
    for p in (db, db.with_name(db.name + ".daemon.json"), operator_path(db)):
        assert p.stat().st_mode & 0o777 == 0o600, p
    assert len(served.info.token) == 64 and not served.info.token.startswith("-")
    assert served.operator_token != served.info.token
    # the viewer's file never holds the operator token
    assert served.operator_token not in db.with_name(db.name + ".daemon.json").read_text()


async def test_the_app_attached_acknowledges_with_the_operator_token_only(served):
    from fleettui.tui.app import FleetApp
    from tests.tui_support import settle

    now = served.store.cursor().execute("SELECT max(ts) FROM gpu_samples").fetchone()[0]
    # viewer only: `a` is refused with a notice, nothing written
    before = served.checksum()
    app = FleetApp(served.viewer, clock=lambda: now, refresh_s=3600)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("4")
        await settle(pilot)
        app.screen.query_one("#alerts-table").focus()
        await pilot.press("a")
        await settle(pilot)
        assert any("read-only" in n.message for n in app._notifications)
    assert served.checksum() == before
    # with the operator token (the daemon's own user): `x` silences through the daemon
    operator = QuackReader(
        served.info.endpoint, served.info.token, operator_token=served.operator_token
    )
    try:
        app = FleetApp(operator, clock=lambda: now, refresh_s=3600)
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.press("4")
            await settle(pilot)
            table = app.screen.query_one("#alerts-table")
            table.focus()
            await pilot.press("x")
            await settle(pilot)
            assert any("silenced host_stale" in n.message for n in app._notifications), [
                n.message for n in app._notifications
            ]
            assert table.rows_data[0]["muted_kind"] in ("silence", "ack")
        assert _raw_query(
            served, "SELECT count(*) FROM silences WHERE comment = 'from the app'"
        ) == [(1,)]
    finally:
        operator.close()
