"""The store: migrations, batch writes, merges of dimension tables."""

from datetime import datetime, timedelta

import duckdb
import pytest

from collectors.sim.source import SimSource
from storage.batch import BatchError, make_batch
from storage.columns import TABLE_COLUMNS
from storage.migrate import SchemaError, latest_version
from storage.store import Store, StoreError

T0 = datetime(2026, 11, 26, 12, 0, 0)


def test_columns_module_matches_migrated_schema():
    store = Store.open(":memory:")
    for table, cols in TABLE_COLUMNS.items():
        db_cols = [
            r[0]
            for r in store.con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index",
                [table],
            ).fetchall()
        ]
        assert db_cols == list(cols), table


def test_open_migrates_and_refuses_newer_schema(tmp_path):
    path = tmp_path / "f.duckdb"
    Store.open(path).close()
    con = duckdb.connect(str(path))
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == latest_version()
    con.execute("INSERT INTO schema_version VALUES (9999, '9999_future.sql', now()::TIMESTAMP)")
    con.close()
    with pytest.raises(SchemaError, match="newer than this FleetTUI knows"):
        Store.open(path)


def test_a_migration_that_landed_below_the_store_version_is_still_applied(tmp_path, monkeypatch):
    """A store made on a branch that had 0017 but not yet 0015 must get 0015 when the
    merged code opens it; comparing with the newest version alone would skip it."""
    from storage import migrate as migrate_mod

    path = tmp_path / "f.duckdb"
    bundled = migrate_mod.migrations()
    monkeypatch.setattr(migrate_mod, "migrations", lambda: [m for m in bundled if m[0] != 15])
    Store.open(path).close()
    monkeypatch.setattr(migrate_mod, "migrations", lambda: bundled)
    con = duckdb.connect(str(path))
    assert 15 not in {r[0] for r in con.execute("SELECT version FROM schema_version").fetchall()}
    con.close()

    Store.open(path).close()
    con = duckdb.connect(str(path))
    versions = [r[0] for r in con.execute("SELECT version FROM schema_version").fetchall()]
    cols = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'gpu_samples_1m'"
        ).fetchall()
    }
    con.close()
    assert sorted(versions) == [m[0] for m in bundled]
    assert "energy_j_nonnull_last" in cols


def test_locked_database_is_one_clear_error(tmp_path):
    path = tmp_path / "f.duckdb"
    Store.open(path).close()
    code = (
        "import sys; from storage.store import Store, StoreError\n"
        f"try:\n    Store.open({str(path)!r})\nexcept StoreError as e:\n    print(e); sys.exit(3)\n"
    )
    import subprocess
    import sys

    holder = Store.open(path)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    finally:
        holder.close()
    assert out.returncode == 3
    assert "in use by another process" in out.stdout


def test_missing_database_read_only(tmp_path):
    with pytest.raises(StoreError, match="no such database"):
        Store.open(tmp_path / "nope.duckdb", read_only=True)


def test_bad_batch_is_rejected_before_the_database():
    with pytest.raises(BatchError, match="no column 'bogus'"):
        make_batch("gpu_samples", {"bogus": [1]})
    with pytest.raises(BatchError, match="gpu_samples.util_pct"):
        make_batch("gpu_samples", {"util_pct": ["high"]})


def test_failed_write_leaves_nothing_behind():
    store = Store.open(":memory:")
    good = make_batch("events", {"ts": [T0], "kind": ["xid"], "code": [79]})
    bad = make_batch("events", {"ts": [T0], "kind": [None]})  # kind is NOT NULL
    with pytest.raises(duckdb.Error):
        store.write([good, bad])
    assert store.con.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_hosts_keep_first_seen_and_advance_last_seen():
    store = Store.open(":memory:")
    src = SimSource()
    for i in range(3):
        store.write(src.sample(T0 + timedelta(seconds=i)).batches)
    first, last = store.con.execute("SELECT min(first_seen), max(last_seen) FROM hosts").fetchone()
    assert first == T0 and last == T0 + timedelta(seconds=2)


def test_inventory_written_twice_is_stored_once():
    store = Store.open(":memory:")
    a, b = SimSource(), SimSource()
    store.write(a.sample(T0).batches)
    store.write(b.sample(T0).batches)  # a restarted daemon describes the fleet again
    counts = store.con.execute(
        "SELECT (SELECT count(*) FROM gpus), (SELECT count(*) FROM slices),"
        " (SELECT count(*) FROM assignments), (SELECT count(*) FROM tenants)"
    ).fetchone()
    fleet = a.model.fleet
    assigned = int((fleet.gpu_tenant >= 0).sum()) + len(fleet.slice_id)
    assert counts == (fleet.n_gpus, len(fleet.slice_id), assigned, 8)


def test_retention_deletes_only_old_samples():
    from storage.retention import delete_before

    store = Store.open(":memory:")
    src = SimSource()
    for i in range(4):
        store.write(src.sample(T0 + timedelta(minutes=i)).batches)
    cutoff = T0 + timedelta(minutes=2)
    old, before = store.con.execute(
        "SELECT count(*) FILTER (WHERE ts < ?), count(*) FROM gpu_samples", [cutoff]
    ).fetchone()
    deleted = delete_before(store, cutoff)
    after = store.con.execute("SELECT count(*), min(ts) FROM gpu_samples").fetchone()
    assert old > 0 and deleted["gpu_values"] == old == before - after[0]  # gpu_samples: a view
    assert after[1] == cutoff
    assert store.con.execute("SELECT count(*) FROM gpus").fetchone()[0] == src.model.fleet.n_gpus


def test_close_lets_a_side_writer_in_flight_commit_and_then_checkpoints(tmp_path, caplog):
    import threading
    import time

    path = tmp_path / "s.duckdb"
    store = Store.open(path)
    started = threading.Event()

    def rollup_tick():  # a long maintenance transaction, as a rollup tick in its thread
        with store.side_writer() as cur:
            cur.execute("INSERT INTO tenants (tenant) VALUES ('rolled')")
            started.set()
            time.sleep(0.5)

    t = threading.Thread(target=rollup_tick)
    t.start()
    assert started.wait(10)
    with caplog.at_level("WARNING", logger="fleettui.store"):
        store.close()  # SIGTERM arrives mid-tick
    t.join(10)
    assert "checkpoint on close skipped" not in caplog.text
    assert not (tmp_path / "s.duckdb.wal").exists()  # checkpointed: nothing left to replay
    again = Store.open(path, read_only=True)
    try:
        assert (
            again.con.execute("SELECT count(*) FROM tenants WHERE tenant = 'rolled'").fetchone()[0]
            == 1
        )
    finally:
        again.close()
