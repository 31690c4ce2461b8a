"""The store on DuckLake: a real PostgreSQL catalog (tests/services/postgres.py), a
shared data directory, and several writers that must store every row exactly once."""

from __future__ import annotations

import itertools
import re
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from fleettui.backend import open_store
from fleettui.config import ConfigError, parse_config
from storage.batch import make_batch
from storage.lake import SAMPLE_KEYS, LakeStore, LakeTarget, creation_race, lake_sql, redact
from storage.migrate import migrations
from storage.store import StoreError
from tests.services.postgres import Postgres, postgres  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration]

_names = itertools.count()


def new_lake(pg: Postgres, tmp_path) -> LakeTarget:
    dsn = pg.create_database(f"lake{next(_names)}")
    return LakeTarget(dsn, str(tmp_path / "lake") + "/", pg.password)


def hosts_batch(names: list[str], t: datetime):
    return make_batch(
        "hosts",
        {
            "host": names,
            "model": ["HGX"] * len(names),
            "first_seen": [t] * len(names),
            "last_seen": [t] * len(names),
        },
    )


def gpu_batch(host: str, t0: datetime, n: int):
    ts = [t0 + timedelta(seconds=i) for i in range(n)]
    return make_batch(
        "gpu_samples",
        {
            "ts": ts,
            "host": [host] * n,
            "gpu_uuid": [f"GPU-{host}"] * n,
            "util_pct": [float(i) for i in range(n)],
            "source": ["agents"] * n,
        },
    )


def test_migrations_lose_only_the_constraints_ducklake_lacks():
    for _, name, sql in migrations():
        out = re.sub(r"--[^\n]*", "", lake_sql(sql)).upper()  # comments may say CHECK
        assert "PRIMARY KEY" not in out and not re.search(r"\bCHECK\s*\(", out), name
        assert "USING COMPRESSION" not in out, name
        # every column and table survives
        assert out.count("CREATE TABLE") == sql.count("CREATE TABLE"), name
    assert lake_sql("x VARCHAR NOT NULL CHECK (kind IN ('a', 'b')),\n y INT") == (
        "x VARCHAR NOT NULL,\n y INT"
    )


def test_two_processes_creating_one_catalog_is_a_race_to_retry_in_either_form():
    """PostgreSQL reports the loser's CREATE TABLE either way, depending on timing (both
    seen with two daemons starting on a new lake); anything else is a real failure."""
    init = 'Failed to initialize DuckLake: Failed to execute query "CREATE TABLE ...": ERROR:  '
    assert creation_race(init + 'relation "ducklake_metadata" already exists')
    assert creation_race(
        init + 'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'
    )
    assert not creation_race(init + "permission denied for schema public")
    assert not creation_race("Catalog Error: Table with name x already exists!")


def test_lake_schema_matches_the_file(postgres: Postgres, tmp_path):  # noqa: F811
    from storage.store import Store

    lake = LakeStore.open_lake(new_lake(postgres, tmp_path))
    file = Store.open(tmp_path / "f.duckdb")
    try:
        q = (
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "AND table_name NOT IN ('lake_commit_lock', 'lake_evaluator') ORDER BY ALL"
        )
        assert lake.cursor().execute(q).fetchall() == file.cursor().execute(q).fetchall()
    finally:
        lake.close()
        file.close()


def test_two_writers_store_each_host_and_sample_once(postgres: Postgres, tmp_path):  # noqa: F811
    target = new_lake(postgres, tmp_path)
    a, b = LakeStore.open_lake(target), LakeStore.open_lake(target)
    t = datetime(2026, 1, 1, 12, 0, 0)
    names = [f"h{i:02d}" for i in range(10)]
    errors = []

    def writer(store: LakeStore, offset: int) -> None:
        try:
            for k in range(12):
                # both writers add the same new hosts at the same time: without a key,
                # only the commit lock keeps the second MERGE from inserting them again
                store.write(
                    [
                        hosts_batch(names, t + timedelta(seconds=k + offset)),
                        gpu_batch(names[k % 10], t, 30),
                    ]
                )
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s, i)) for i, s in enumerate((a, b))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    cur = a.cursor()
    assert cur.execute("SELECT count(*), count(DISTINCT host) FROM hosts").fetchone() == (10, 10)
    # first_seen kept, last_seen the latest either writer saw
    assert cur.execute("SELECT min(first_seen), max(last_seen) FROM hosts").fetchone() == (
        t,
        t + timedelta(seconds=12),
    )
    # hosts h00..h11 % 10 got the same 30 samples from both writers, 24 times in all
    total, distinct = cur.execute(
        "SELECT count(*), count(DISTINCT (ts, gpu_uuid, source)) FROM gpu_samples"
    ).fetchone()
    assert total == distinct == 10 * 30
    assert a.duplicates_skipped + b.duplicates_skipped == 24 * 30 - 10 * 30
    a.close()
    b.close()


def test_a_redelivered_batch_is_stored_once_and_new_rows_still_go_in(
    postgres: Postgres,  # noqa: F811
    tmp_path,
):
    target = new_lake(postgres, tmp_path)
    a, b = LakeStore.open_lake(target), LakeStore.open_lake(target)
    t = datetime(2026, 1, 1)
    assert a.write([gpu_batch("x", t, 5)]) == 5
    # the broker hands the same report to the other daemon, overlapping with new rows
    assert b.write([gpu_batch("x", t, 8)]) == 3
    # a batch with a duplicate inside it
    twice = gpu_batch("y", t, 2)
    both = pa.concat_tables([twice.data, twice.data])
    assert b.write([make_batch("gpu_samples", {c: both[c] for c in both.column_names})]) == 2
    assert a.cursor().execute("SELECT count(*) FROM gpu_samples").fetchone() == (10,)
    # reopened (what the runtime does after DuckDB invalidated a database): the same lake
    a.reopen()
    assert a.write([gpu_batch("x", t, 9)]) == 1
    assert a.cursor().execute("SELECT count(*) FROM gpu_samples").fetchone() == (11,)
    a.close()
    b.close()


def test_readers_see_the_lake_by_plain_table_names(postgres: Postgres, tmp_path):  # noqa: F811
    target = new_lake(postgres, tmp_path)
    with pytest.raises(StoreError, match="no lake there yet"):  # readers never create one
        LakeStore.open_lake(target, read_only=True)
    w = LakeStore.open_lake(target)
    w.write([hosts_batch(["r1", "r2"], datetime(2026, 1, 1))])
    r = LakeStore.open_lake(target, read_only=True)
    try:
        # a fresh cursor, as the views and `fleettui sql` use, starts in `memory`
        assert r.con.cursor().execute("SELECT count(*) FROM hosts").fetchone() == (2,)
        # no live snapshot (a reader's would never move): the views read the lake
        assert r.live is None and w.live is None
        attached = r.con.execute("SELECT database_name FROM duckdb_databases()").fetchall()
        assert ("fleettui_live",) not in attached
        with pytest.raises(StoreError, match="read-only"):
            r.write([hosts_batch(["r3"], datetime(2026, 1, 1))])
    finally:
        r.close()
        w.close()


def test_wrong_password_is_one_line_without_the_password(postgres: Postgres, tmp_path):  # noqa: F811
    dsn = postgres.create_database(f"lake{next(_names)}")
    secret = "s3cret-" + postgres.password[:6]
    with pytest.raises(StoreError) as err:
        LakeStore.open_lake(LakeTarget(dsn, str(tmp_path / "d") + "/", secret))
    msg = str(err.value)
    assert "cannot attach the lake" in msg and "\n" not in msg
    assert secret not in msg
    assert redact("host=x password='a b' user=y") == "host=x password=*** user=y"


def test_store_section_is_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"\[store\].*password_file"):
        parse_config(
            {"store": {"backend": "ducklake", "catalog": "host=h password=x", "data_path": "/d"}},
            "f.toml",
        )
    with pytest.raises(ConfigError, match=r"\[store\].*needs catalog"):
        parse_config({"store": {"backend": "ducklake"}}, "f.toml")
    with pytest.raises(ConfigError, match=r"\[store\].*backend"):
        parse_config({"store": {"backend": "sqlite"}}, "f.toml")
    cfg = parse_config(
        {
            "store": {
                "backend": "ducklake",
                "catalog": "host=h",
                "data_path": str(tmp_path),
                "password_file": str(tmp_path / "missing"),
            }
        },
        "f.toml",
    )
    with pytest.raises(ConfigError, match="password_file.*cannot read"):
        open_store(cfg)
    # the default stays the embedded file
    assert parse_config({}, "f.toml").store.backend == "file"


def test_sample_keys_tell_rows_of_one_tick_apart(postgres: Postgres, tmp_path):  # noqa: F811
    """A key that two real rows share would drop one of them as a "duplicate": one tick
    of the whole simulated fleet (NVLink per link, MIG slices, processes, latency), written
    twice, is every row once."""
    from collectors.sim.source import SimSource

    t = datetime(2026, 11, 26, 12)
    src = SimSource(start=t - timedelta(minutes=5))
    batches = [b for b in src.sample(t).batches if b.table in SAMPLE_KEYS]
    assert {b.table for b in batches} >= {"gpu_samples", "link_samples", "slice_samples"}
    lake = LakeStore.open_lake(new_lake(postgres, tmp_path))
    try:
        lake.write(batches)
        lake.write(batches)  # redelivered
        for table in {b.table for b in batches}:
            want = sum(b.rows for b in batches if b.table == table)
            got = lake.cursor().execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert got == want, table
        assert lake.duplicates_skipped == sum(b.rows for b in batches)
    finally:
        lake.close()


async def test_rollups_and_retention_on_the_lake_equal_the_files(
    postgres: Postgres,  # noqa: F811
    tmp_path,
):
    """The evaluator's tasks run the file's SQL on the lake: four minutes of the simulated
    fleet rolled up and expired on both backends give the same rows."""
    from collectors.sim.source import SimSource
    from storage.retention import RetentionTask
    from storage.rollups import RollupOptions, RollupTask
    from storage.store import Store

    t0 = datetime(2026, 11, 26, 12)
    src = SimSource(start=t0, faults=(), interval_s=10.0)
    ticks = [src.sample(t0 + timedelta(seconds=10 * i)).batches for i in range(24)]
    lake = LakeStore.open_lake(new_lake(postgres, tmp_path))
    file = Store.open(tmp_path / "f.duckdb")
    now = t0 + timedelta(minutes=5)
    try:
        for store in (lake, file):
            for batches in ticks:
                store.write(batches)
            RollupTask(store, opts=RollupOptions(grace_s=0.0)).run_once(now)
            # keep the last two minutes of raw rows (the rollups keep the rest)
            await RetentionTask(store, keep_h=2 / 60).tick(now)
        for table in ("gpu_samples", "gpu_samples_1m", "link_samples_1m", "slice_samples_1m"):
            rows = [
                s.cursor().execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
                for s in (lake, file)
            ]
            assert rows[0] == rows[1], table
            assert rows[0], table
        n = lake.cursor().execute("SELECT count(*) FROM gpu_samples").fetchone()[0]
        assert 0 < n < sum(b.rows for t in ticks for b in t if b.table == "gpu_samples")
    finally:
        lake.close()
        file.close()


def test_one_evaluator_per_lake(postgres: Postgres, tmp_path):  # noqa: F811
    from storage.lake import LEASE_S, EvaluatorTaken, claim_evaluator, release_evaluator

    target = new_lake(postgres, tmp_path)
    a, b = LakeStore.open_lake(target), LakeStore.open_lake(target)
    t = datetime(2026, 1, 1, 12)
    try:
        claim_evaluator(a, "host-a:/a.duckdb", t)
        claim_evaluator(a, "host-a:/a.duckdb", t + timedelta(seconds=30))  # its heartbeat
        with pytest.raises(EvaluatorTaken, match="'host-a:/a.duckdb' already evaluates"):
            claim_evaluator(b, "host-b:/b.duckdb", t + timedelta(seconds=60))
        # a silent evaluator is replaced once its lease ran out
        claim_evaluator(b, "host-b:/b.duckdb", t + timedelta(seconds=31 + LEASE_S))
        with pytest.raises(EvaluatorTaken):
            claim_evaluator(a, "host-a:/a.duckdb", t + timedelta(seconds=40 + LEASE_S))
        # a clean stop hands it over at once
        release_evaluator(b, "host-b:/b.duckdb")
        claim_evaluator(a, "host-a:/a.duckdb", t + timedelta(seconds=41 + LEASE_S))
        rows = a.cursor().execute("SELECT daemon FROM lake_evaluator").fetchall()
        assert rows == [("host-a:/a.duckdb",)]
    finally:
        a.close()
        b.close()


def test_maintenance_compacts_without_changing_rows(postgres: Postgres, tmp_path):  # noqa: F811
    from storage.lake import LakeMaintenanceTask

    target = new_lake(postgres, tmp_path)
    lake = LakeStore.open_lake(target)
    t = datetime(2026, 1, 1)
    try:
        for i in range(8):  # eight commits: eight small files
            lake.write([gpu_batch("m", t + timedelta(minutes=i), 40)])
        q = "SELECT count(*), sum(util_pct), min(ts), max(ts) FROM gpu_samples"
        before = lake.cursor().execute(q).fetchone()
        files = lambda: len(list((tmp_path / "lake").rglob("*.parquet")))  # noqa: E731
        n_before = files()
        task = LakeMaintenanceTask(lake, keep_snapshots_h=0.0)
        task.run_once()
        assert task.runs == 1
        assert lake.cursor().execute(q).fetchone() == before
        # merged into fewer files, and the files no snapshot needs are gone
        assert files() < n_before, (files(), n_before)
        lake.write([gpu_batch("m", t + timedelta(hours=1), 5)])  # still writable
        assert lake.cursor().execute("SELECT count(*) FROM gpu_samples").fetchone() == (325,)
    finally:
        lake.close()


def test_store_size_of_a_lake_is_its_data_files(postgres: Postgres, tmp_path):  # noqa: F811
    """/metrics and `fleettui status` read the size from here; a lake has no file of
    its own, so the path-based size said 0 whatever the lake held."""
    from fleettui.metrics import StoreSizeTask

    target = new_lake(postgres, tmp_path)
    store = LakeStore.open_lake(target)
    t = datetime(2026, 1, 1, 12, 0, 0)
    store.write([hosts_batch(["h1", "h2"], t)])
    task = StoreSizeTask(store, retention_h=48)
    empty = task.measure()["file_bytes"]
    for k in range(3):
        store.write([gpu_batch(f"h{k % 2 + 1}", t + timedelta(minutes=k), 200)])
    size = task.measure()
    on_disk = sum(p.stat().st_size for p in Path(target.data_path).rglob("*") if p.is_file())
    assert size["file_bytes"] == size["used_bytes"] == task.snapshot()["file_bytes"]
    assert size["file_bytes"] > empty
    # the catalog lists the files the lake uses; nothing has been expired, so all of them
    assert size["file_bytes"] == on_disk
    store.close()
