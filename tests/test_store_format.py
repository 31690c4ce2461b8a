"""The on-disk format a store file is made with (storage.store.STORAGE_VERSION, issue 13):
new files get the pinned DuckDB's own format (its newer codecs), and a file made in the
older default format keeps it and still opens, migrates and writes."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from collectors.sim.source import SimSource
from storage.store import STORAGE_VERSION, Store

T0 = datetime(2026, 11, 26, 12, 0, 0)


def storage_version(con) -> str:
    return con.execute(
        "SELECT tags['storage_version'] FROM duckdb_databases() WHERE NOT internal"
        " AND database_name = current_database()"
    ).fetchone()[0]


def fill(store: Store, seconds: int) -> None:
    src = SimSource(scale=1, start=T0)
    src.ensure_model(T0)
    store.write(src.describe(T0))
    for k in range(seconds):
        store.write(src.sample(T0 + timedelta(seconds=k)).batches)


def test_a_new_store_is_made_in_the_pinned_duckdbs_own_format(tmp_path):
    path = tmp_path / "new.duckdb"
    store = Store.open(path)
    try:
        fill(store, 3)
        store.checkpoint()
        assert storage_version(store.con) == STORAGE_VERSION + "+"
        # a codec the default (v0.10.2) format does not have is in use
        comps = store.con.execute(
            "SELECT DISTINCT compression FROM pragma_storage_info('process_info')"
        ).fetchall()
        assert ("DICT_FSST",) in comps
    finally:
        store.close()


def test_a_file_in_the_old_default_format_keeps_it_and_opens(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))  # DuckDB's default format, as stores were made
    old = storage_version(con)
    con.close()
    assert old != STORAGE_VERSION + "+"
    store = Store.open(path)
    try:
        fill(store, 2)
        store.checkpoint()
        assert storage_version(store.con) == old
        assert store.con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] > 0
    finally:
        store.close()
    store = Store.open(path, read_only=True)
    try:
        assert store.con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] > 0
    finally:
        store.close()
