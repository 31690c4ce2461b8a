"""0025: the tables the writer merges on their key carry no PRIMARY KEY (each key's
ART index took a block of its own in every file); the MERGE keeps one row per key."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from collectors.sim.source import SimSource
from storage.batch import make_batch
from storage.store import Store
from tests.test_keyed_tables import old_store

T0 = datetime(2026, 11, 26, 12, 0, 0)
MERGED = (
    "hosts",
    "gpus",
    "slices",
    "tenants",
    "endpoints",
    "host_status",
    "rollup_state",
    "schema_version",
)


def primary_keyed(cur) -> set[str]:
    return {
        r[0]
        for r in cur.execute(
            "SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    }


def test_only_the_tables_whose_new_keys_are_inserted_keep_a_key_index():
    """`silences`; `alerts` lost its key in 0027 (tests/test_alert_first_cycle.py)."""
    store = Store.open(":memory:")
    try:
        assert primary_keyed(store.cursor()) == {"silences"}
    finally:
        store.close()


def test_a_merge_keeps_one_row_per_key_without_the_index():
    store = Store.open(":memory:")
    try:
        hosts = lambda seen, model: make_batch(  # noqa: E731
            "hosts", {"host": ["h1", "h2"], "model": model, "last_seen": [seen, seen]}
        )
        store.write([hosts(T0, ["m1", None])])
        # a key twice in one batch, and keys the table holds: still one row each
        store.write([hosts(T0 + timedelta(seconds=5), [None, "m2"]), hosts(T0, ["m3", None])])
        rows = store.cursor().execute("SELECT host, model, last_seen FROM hosts ORDER BY host")
        assert rows.fetchall() == [
            ("h1", "m3", T0 + timedelta(seconds=5)),
            ("h2", "m2", T0 + timedelta(seconds=5)),
        ]
        gpus = make_batch("gpus", {"gpu_uuid": ["GPU-a"], "host": ["h1"], "gpu_index": [0]})
        store.write([gpus])
        store.write([gpus])
        assert store.cursor().execute("SELECT count(*) FROM gpus").fetchone() == (1,)
    finally:
        store.close()


def test_a_version_21_store_keeps_its_rows_and_loses_the_key_indexes(tmp_path):
    path = tmp_path / "v21.duckdb"
    con = old_store(path, 21)
    con.execute(
        "INSERT INTO hosts (host, model, first_seen) VALUES ('h1', 'x', ?), ('h2', NULL, ?)",
        [T0, T0],
    )
    con.execute("INSERT INTO gpus VALUES ('GPU-a', 'h1', 0, 'H100', '0:1', false, 80)")
    con.execute("INSERT INTO slices VALUES ('GPU-a/gi1', 'GPU-a', 'mig', '1g', 0.125, 10)")
    con.execute("INSERT INTO tenants VALUES ('t', 'T', 'gold')")
    con.execute("INSERT INTO endpoints VALUES ('e', 't', 'llm', 20.0, 300.0)")
    con.execute("INSERT INTO host_status VALUES ('h1', 'online', ?, 'b1', ?)", [T0, T0])
    con.execute("INSERT INTO rollup_state VALUES ('gpu_samples_1m', ?, ?)", [T0, T0])
    before = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in MERGED}
    assert set(MERGED) <= primary_keyed(con)
    con.close()
    store = Store.open(path)
    try:
        cur = store.cursor()
        assert primary_keyed(cur) == {"silences"}
        for t in MERGED:
            got = cur.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
            if t == "schema_version":
                n = len(before[t])  # then the migrations after 21: 25, 26, 27
                assert got[:n] == before[t] and [r[0] for r in got[n:]] == [25, 26, 27]
            else:
                assert got == before[t], t
        # the key columns stay NOT NULL, as the key made them
        try:
            cur.execute("INSERT INTO gpus (gpu_uuid, host) VALUES (NULL, 'h1')")
            raise AssertionError("a NULL key was taken")
        except duckdb.ConstraintException:
            pass
    finally:
        store.close()


def test_every_block_of_a_sim_store_holds_table_data_or_metadata(tmp_path):
    """No block of its own for a key index: a sim store's alerts and silences (the
    tables that keep a key) are empty."""
    path = tmp_path / "s.duckdb"
    store = Store.open(path)
    src = SimSource(start=T0)
    for k in range(3):
        store.write(src.sample(T0 + timedelta(seconds=k)).batches)
    store.checkpoint()
    cur = store.cursor()
    assert cur.execute("SELECT count(*) FROM gpus").fetchone()[0] > 0
    tables = [
        r[0]
        for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
    ]
    data = set()
    for t in tables:
        data |= {
            r[0]
            for r in cur.execute(
                f"SELECT block_id FROM pragma_storage_info('{t}') WHERE block_id >= 0"
            ).fetchall()
        }
    meta = {r[0] for r in cur.execute("SELECT block_id FROM pragma_metadata_info()").fetchall()}
    total = cur.execute(
        "SELECT total_blocks, free_blocks FROM pragma_database_size()"
        " WHERE database_name = current_database()"
    ).fetchone()
    store.close()
    assert total[0] - total[1] == len(data | meta)
