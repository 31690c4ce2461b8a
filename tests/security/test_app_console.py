"""The app's SQL console on the store the app writes itself (demo, --config): every
probe leaves the store as it was, whatever gets past the client-side check, because
each query runs in a READ ONLY transaction on its own cursor."""

from __future__ import annotations

import pytest

from fleettui.tui.demo import fixed_store
from fleettui.tui.screens.sql import run_query
from storage.reader import LocalReader, QueryError, ReadOnlyError, read_only_arrow
from tests.security.probes import PROBES, checksum, fill


@pytest.fixture(scope="module")
def own_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    store, _ = fixed_store(30.0, 10.0, path=str(tmp / "own.duckdb"))
    yield store, tmp
    store.close()


def _checksum(store) -> dict:
    return checksum(store.con, "own")


WRITES = [p for p in PROBES if not p[1].lstrip().upper().startswith("SELECT")]


@pytest.mark.parametrize("name,sql", WRITES, ids=[p[0] for p in WRITES])
def test_write_probes_leave_the_apps_own_store_unchanged(own_store, name, sql):
    store, tmp = own_store
    where = {
        "tmp": str(tmp),
        "endpoint": "quack:127.0.0.1:1",
        "url": "http://127.0.0.1:1/",
        "other_info": str(tmp / "none.json"),
    }
    before = _checksum(store)
    files = set(tmp.iterdir())
    with pytest.raises((ReadOnlyError, QueryError)):
        run_query(LocalReader(store.con), fill(sql, **where))
    assert _checksum(store) == before
    assert set(tmp.iterdir()) == files


def test_read_only_transaction_holds_even_past_the_courtesy_check(own_store):
    """Bypassing check_read_only (a statement shape it would pass is enough): the
    transaction itself refuses the write."""
    store, _ = own_store
    before = _checksum(store)
    cur = store.cursor()
    cur.execute("BEGIN TRANSACTION READ ONLY")
    with pytest.raises(Exception, match="read-only"):
        cur.execute("EXPLAIN ANALYZE DELETE FROM hosts")
    cur.execute("ROLLBACK")
    cur.close()
    assert read_only_arrow(store.con, "SELECT count(*) AS n FROM hosts").column(0)[0].as_py() > 0
    assert _checksum(store) == before
