"""Processes and links as dimensions (migration 0018, issue 13): a row keeps the time, the
process's or link's integer id and its values; the `processes` and `link_samples` views
give back the rows as written, an old store's rows survive the migration, and retention
drops keys no row names any more."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa

from collectors.sim.source import SimSource
from storage.batch import make_batch
from storage.migrate import latest_version, migrations
from storage.retention import RetentionTask
from storage.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0)
COLS = [
    "ts",
    "host",
    "gpu_uuid",
    "slice_id",
    "pid",
    "used_mem_bytes",
    "container",
    "cgroup",
    "tenant_guess",
    "source",
]

# Rows that tell identities apart: NULL and non-NULL slices and cgroups, one pid in two
# cgroups (pid reuse), one process listed at two times with different memory.
ROWS = [
    (T0, "h1", "GPU-a", None, 10, 5 << 30, "c1", "/t/tenant-x/c1", "x", "nvml"),
    (T0, "h1", "GPU-a", "GPU-a/gi1", 11, None, None, None, None, "nvml"),
    (T0, "h2", "GPU-b", None, 10, 7, "c2", "/t/tenant-y/c2", "y", "sim"),
    (
        T0 + timedelta(seconds=5),
        "h1",
        "GPU-a",
        None,
        10,
        (5 << 30) + 1,
        "c1",
        "/t/tenant-x/c1",
        "x",
        "nvml",
    ),
    (T0 + timedelta(seconds=5), "h1", "GPU-a", None, 10, 3, "c9", "/t/tenant-z/c9", "z", "nvml"),
    (T0 + timedelta(seconds=5), "h1", "GPU-a", "GPU-a/gi1", 11, 0, None, None, None, "nvml"),
]


LINK_COLS = [
    "ts",
    "host",
    "kind",
    "port",
    "gpu_uuid",
    "tx_bytes_per_s",
    "rx_bytes_per_s",
    "line_rate_bytes_per_s",
    "errors",
    "link_up",
    "source",
]
# NULL GPUs (IB ports), NULL values, a port on two hosts, one port from two sources,
# values that are not integers (DCGM rates), one link at two times
LINK_ROWS = [
    (T0, "h1", "nvlink", "nvlink-gpu0", "GPU-a", 1.5e11, 2.25e11, 9e11, 0, True, "nvml"),
    (T0, "h1", "ib", "mlx5_0/1", None, 123.456, None, 5e10, None, None, "scrape"),
    (T0, "h2", "ib", "mlx5_0/1", None, 0.1, 0.2, 5e10, 3, False, "scrape"),
    (T0, "h2", "ib", "mlx5_0/1", None, 7.0, 8.0, 5e10, 3, False, "prometheus"),
    (
        T0 + timedelta(seconds=1),
        "h1",
        "nvlink",
        "nvlink-gpu0",
        "GPU-a",
        1e11,
        2e11,
        9e11,
        1,
        True,
        "nvml",
    ),
    (T0 + timedelta(seconds=1), "h1", "roce", "eth2", None, None, None, None, None, None, None),
]


def links_batch(rows):
    return make_batch("link_samples", {c: [r[i] for r in rows] for i, c in enumerate(LINK_COLS)})


def rows_batch(rows):
    return make_batch("processes", {c: [r[i] for r in rows] for i, c in enumerate(COLS)})


def old_store(path, version: int) -> duckdb.DuckDBPyConnection:
    """A store file as FleetTUI left it at schema `version` (before this migration)."""
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL)"
    )
    for v, name, sql in migrations():
        if v <= version:
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)", [v, name])
    return con


def column_types(con, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?"
        " AND schema_name = 'main' ORDER BY column_index",
        [table],
    ).fetchall()


def test_a_version_17_store_migrates_in_place_and_reads_the_same(tmp_path):
    path = tmp_path / "old.duckdb"
    con = old_store(path, 17)
    con.executemany(f"INSERT INTO processes VALUES ({', '.join('?' * len(COLS))})", ROWS)
    con.executemany(
        f"INSERT INTO link_samples VALUES ({', '.join('?' * len(LINK_COLS))})", LINK_ROWS
    )
    links_before = con.execute("SELECT * FROM link_samples ORDER BY ALL").fetchall()
    link_types = column_types(con, "link_samples")
    con.execute(
        "INSERT INTO gpu_samples (ts, host, gpu_uuid, util_pct) VALUES (?, 'h1', 'GPU-a', 42.5)",
        [T0],
    )
    # every column, fractional DCGM-style values, one GPU from two sources and none
    con.execute(
        "INSERT INTO gpu_samples SELECT ? + INTERVAL (i) SECOND, 'h' || (i % 2), 'GPU-' || (i % 3),"
        " i * 0.1, 45.3, i::BIGINT << 30, 80::BIGINT << 30, 301.123, 1e6 + i * 0.001, 61, 70.5, 1980, 2619,"
        " 1.5e9, 2.25e9, i, 0, 4, CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN 'dcgm' ELSE 'nvml' END"
        " FROM range(40) t(i)",
        [T0],
    )
    gpus_before = con.execute("SELECT * FROM gpu_samples ORDER BY ALL").fetchall()
    gpu_types = column_types(con, "gpu_samples")
    (series,) = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT host, gpu_uuid, source FROM gpu_samples)"
    ).fetchone()
    before = con.execute("SELECT * FROM processes ORDER BY ALL").fetchall()
    types = column_types(con, "processes")
    con.close()

    store = Store.open(path)
    try:
        cur = store.cursor()
        assert (
            cur.execute("SELECT max(version) FROM schema_version").fetchone()[0] == latest_version()
        )
        assert latest_version() >= 18
        assert cur.execute("SELECT * FROM processes ORDER BY ALL").fetchall() == before
        assert column_types(cur, "processes") == types
        # four distinct processes among the six rows
        assert cur.execute("SELECT count(*) FROM process_info").fetchone()[0] == 4
        assert cur.execute("SELECT * FROM gpu_samples ORDER BY ALL").fetchall() == gpus_before
        assert column_types(cur, "gpu_samples") == gpu_types
        assert cur.execute("SELECT count(*) FROM gpu_series").fetchone()[0] == series > 6
        assert cur.execute("SELECT * FROM link_samples ORDER BY ALL").fetchall() == links_before
        assert column_types(cur, "link_samples") == link_types
        assert cur.execute("SELECT count(*) FROM link_info").fetchone()[0] == 5
        # the store keeps writing after the migration: a known process keeps its id
        store.write([rows_batch(ROWS[:1])])
        assert cur.execute("SELECT count(*) FROM process_info").fetchone()[0] == 4
        assert cur.execute("SELECT count(*) FROM processes").fetchone()[0] == len(ROWS) + 1
        store.write([links_batch(LINK_ROWS[:2])])
        assert cur.execute("SELECT count(*) FROM link_info").fetchone()[0] == 5
        assert cur.execute("SELECT count(*) FROM link_samples").fetchone()[0] == len(LINK_ROWS) + 2
    finally:
        store.close()


def test_a_version_18_store_migrates_gpu_and_slice_samples_in_place_and_reads_the_same(tmp_path):
    """0019 on a store written by main at 0018: `gpu_samples` and `slice_samples` are still
    tables there."""
    path = tmp_path / "v18.duckdb"
    con = old_store(path, 18)
    assert column_types(con, "gpu_series") == []
    # every column; fractional DCGM-style values (energy not integral in mJ), extreme
    # doubles and integers, NULLs, one GPU from two sources and from none
    con.execute(
        "INSERT INTO gpu_samples SELECT ? + INTERVAL (i) SECOND, 'h' || (i % 3), 'GPU-' || (i % 5),"
        " CASE WHEN i % 7 = 0 THEN NULL ELSE i * 0.1 END, 45.3, i::BIGINT << 30, 80::BIGINT << 30,"
        " 301.123 + i, 1e6 + i * 0.0013, 61, CASE WHEN i % 2 = 0 THEN NULL ELSE 70.5 END, 1980,"
        " 2619, 1.5e9 + i / 3, 2.25e9, i, 0, 9223372036854775807 - i,"
        " CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN 'dcgm' ELSE 'nvml' END FROM range(60) t(i)",
        [T0],
    )
    con.execute(
        "INSERT INTO gpu_samples (ts, host, gpu_uuid, energy_j, power_w) VALUES"
        " (?, 'h9', 'GPU-z', 1.7976931348623157e308, 5e-324)",
        [T0],
    )
    before = con.execute("SELECT * FROM gpu_samples ORDER BY ALL").fetchall()
    types = column_types(con, "gpu_samples")
    (series,) = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT host, gpu_uuid, source FROM gpu_samples)"
    ).fetchone()
    # slices: MIG and fractional ids, NULL GPU and source, one slice from two sources
    con.execute(
        "INSERT INTO slice_samples SELECT ? + INTERVAL (i) SECOND,"
        " 'GPU-' || (i % 3) || CASE WHEN i % 2 = 0 THEN '/gi' ELSE '/f' END || (i % 4),"
        " CASE WHEN i % 5 = 0 THEN NULL ELSE 'GPU-' || (i % 3) END, i / 7, i::BIGINT << 20,"
        " 20::BIGINT << 30, CASE i % 3 WHEN 0 THEN NULL WHEN 1 THEN 'dcgm' ELSE 'nvml' END"
        " FROM range(50) t(i)",
        [T0],
    )
    slices_before = con.execute("SELECT * FROM slice_samples ORDER BY ALL").fetchall()
    slice_types = column_types(con, "slice_samples")
    (slice_series,) = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT slice_id, gpu_uuid, source FROM slice_samples)"
    ).fetchone()
    con.close()

    store = Store.open(path)
    try:
        cur = store.cursor()
        assert (
            cur.execute("SELECT max(version) FROM schema_version").fetchone()[0] == latest_version()
        )
        assert cur.execute("SELECT * FROM gpu_samples ORDER BY ALL").fetchall() == before
        assert column_types(cur, "gpu_samples") == types
        assert cur.execute("SELECT count(*) FROM gpu_series").fetchone()[0] == series > 10
        assert cur.execute("SELECT count(*) FROM gpu_values").fetchone()[0] == len(before)
        assert cur.execute("SELECT * FROM slice_samples ORDER BY ALL").fetchall() == slices_before
        assert column_types(cur, "slice_samples") == slice_types
        assert cur.execute("SELECT count(*) FROM slice_series").fetchone()[0] == slice_series > 10
        # the store keeps writing after the migration: known GPUs keep their series
        model = SimSource(scale=1, start=T0)
        model.ensure_model(T0)
        store.write(model.describe(T0))
        batches = model.sample(T0 + timedelta(hours=1)).batches
        store.write(batches)
        (gpus,) = cur.execute("SELECT count(DISTINCT gpu_uuid) FROM gpus").fetchone()
        assert cur.execute("SELECT count(*) FROM gpu_series").fetchone()[0] == series + gpus
        assert cur.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] == len(before) + gpus
        (new_slices,) = cur.execute(
            "SELECT count(*) FROM slice_samples WHERE ts = ?", [T0 + timedelta(hours=1)]
        ).fetchone()
        assert new_slices > 0  # the sim's slices: each new, one row each
        assert cur.execute("SELECT count(*) FROM slice_series").fetchone()[0] == (
            slice_series + new_slices
        )
    finally:
        store.close()


# Energy as DCGM/NVML give it (whole mJ in J), and values no integer mJ gives back exactly
ENERGIES = [
    123456789.123,
    0.001,
    0.0,
    4000000000.123,
    1e6 + 0.0013,  # a tenth of a mJ: kept as it came
    -0.0,
    -1.5,
    float("nan"),
    float("inf"),
    float("-inf"),
    1.7976931348623157e308,
    5e-324,
    0.1 + 0.2,  # 0.30000000000000004 J: not k / 1000 for any k
    None,
]


def test_gpu_energy_reads_back_bit_for_bit_in_mj_or_as_it_came(tmp_path):
    store = Store.open(tmp_path / "e.duckdb")
    try:
        n = len(ENERGIES)
        store.write(
            [
                make_batch(
                    "gpu_samples",
                    {
                        "ts": [T0 + timedelta(seconds=i) for i in range(n)],
                        "host": ["h1"] * n,
                        "gpu_uuid": ["GPU-a"] * n,
                        "energy_j": ENERGIES,
                    },
                )
            ]
        )
        cur = store.cursor()
        got = [r[0] for r in cur.execute("SELECT energy_j FROM gpu_samples ORDER BY ts").fetchall()]
        assert [struct.pack("<d", g) if g is not None else None for g in got] == [
            struct.pack("<d", e) if e is not None else None for e in ENERGIES
        ]
        # the whole-mJ values are integers in the rows table, the others kept as they came
        split = cur.execute(
            "SELECT count(energy_mj), count(energy_j_raw) FROM gpu_values"
        ).fetchone()
        assert split == (4, n - 1 - 4)
        assert ("energy_j", "DOUBLE") in column_types(cur, "gpu_samples")
    finally:
        store.close()


# Framebuffer byte counts: whole MiB as DCGM gives them, and values no INTEGER MiB holds
MEMS = [
    80 << 30,
    0,
    1 << 20,
    (1 << 20) + 1,  # not a whole MiB: kept as it came
    7,
    -(1 << 20),  # negative: kept as it came
    (1 << 51) - (1 << 20),  # the largest whole MiB an INTEGER holds
    1 << 51,  # one more: kept as it came
    9223372036854775807,
    -9223372036854775808,
    None,
]


def test_framebuffer_bytes_read_back_exactly_in_mib_or_as_they_came(tmp_path):
    """0021: a whole-MiB byte count is stored as INTEGER MiB, any other as it came; both
    views give back every value written, GPU and slice, used and total."""
    store = Store.open(tmp_path / "m.duckdb")
    try:
        n = len(MEMS)
        ts = [T0 + timedelta(seconds=i) for i in range(n)]
        store.write(
            [
                make_batch(
                    "gpu_samples",
                    {
                        "ts": ts,
                        "host": ["h1"] * n,
                        "gpu_uuid": ["GPU-a"] * n,
                        "mem_used_bytes": MEMS,
                        "mem_total_bytes": MEMS[::-1],
                    },
                ),
                make_batch(
                    "slice_samples",
                    {
                        "ts": ts,
                        "slice_id": ["GPU-a/gi1"] * n,
                        "mem_used_bytes": MEMS[::-1],
                        "mem_total_bytes": MEMS,
                    },
                ),
            ]
        )
        cur = store.cursor()
        for view, used, total in (
            ("gpu_samples", MEMS, MEMS[::-1]),
            ("slice_samples", MEMS[::-1], MEMS),
        ):
            got = cur.execute(
                f"SELECT mem_used_bytes, mem_total_bytes FROM {view} ORDER BY ts"
            ).fetchall()
            assert got == list(zip(used, total, strict=True))
            assert ("mem_used_bytes", "BIGINT") in column_types(cur, view)
            assert ("mem_total_bytes", "BIGINT") in column_types(cur, view)
        # the whole-MiB values are INTEGER MiB in the rows tables, the others as they came
        for rows in ("gpu_values", "slice_values"):
            split = cur.execute(
                f"SELECT count(mem_used_mib), count(mem_used_bytes_raw), count(mem_total_mib),"
                f" count(mem_total_bytes_raw) FROM {rows}"
            ).fetchone()
            assert split == (4, n - 1 - 4, 4, n - 1 - 4)
    finally:
        store.close()


def test_a_sim_store_is_smaller_with_framebuffer_bytes_in_mib(tmp_path):
    """The sim's byte counts are whole MiB (as DCGM reports them): stored as MiB they take
    fewer blocks than the same rows with every count in `*_bytes` (the mutant: 0021's
    encoding off)."""
    import dataclasses

    from storage.keyed import KEYED

    raw = tuple(
        (c, e)
        for m in ("mem_used", "mem_total")
        for c, e in ((f"{m}_mib", "NULL::INTEGER"), (f"{m}_bytes_raw", f"s.{m}_bytes"))
    )
    sizes = []
    saved = dict(KEYED)
    for mib in (True, False):
        if not mib:
            for view in ("gpu_samples", "slice_samples"):
                KEYED[view] = dataclasses.replace(KEYED[view], encode=(*KEYED[view].encode, *raw))
        try:
            path = tmp_path / f"s{int(mib)}.duckdb"
            store = Store.open(path)
            src = SimSource(scale=1, start=T0)
            src.ensure_model(T0)
            store.write(src.describe(T0))
            for k in range(240):
                store.write(
                    [
                        b
                        for b in src.sample(T0 + timedelta(seconds=k)).batches
                        if b.table in ("gpu_samples", "slice_samples")
                    ]
                )
            cur = store.cursor()
            (exact,) = cur.execute(
                "SELECT count(*) FROM gpu_samples WHERE mem_used_bytes % 1048576 = 0"
            ).fetchone()
            assert exact > 1000
            store.close()
            sizes.append(path.stat().st_size)
        finally:
            KEYED.clear()
            KEYED.update(saved)
    assert sizes[0] < sizes[1]


def test_written_listings_read_back_bit_for_bit_with_one_row_per_process(tmp_path):
    store = Store.open(tmp_path / "f.duckdb")
    src = SimSource(start=T0)
    written = []
    try:
        for k in range(11):  # the sim lists processes every 5th gather
            batches = src.sample(T0 + timedelta(seconds=k)).batches
            written += [b.data for b in batches if b.table == "processes"]
            store.write(batches)
        want = pa.concat_tables(written).select(COLS)
        assert want.num_rows > 100
        cur = store.cursor()
        got = cur.execute(f"SELECT {', '.join(COLS)} FROM processes").to_arrow_table()
        key = [(c, "ascending") for c in ("ts", "host", "gpu_uuid", "slice_id", "pid")]
        assert got.cast(want.schema).sort_by(key).equals(want.sort_by(key))
        distinct = cur.execute(
            "SELECT count(*) FROM (SELECT DISTINCT * EXCLUDE (ts, used_mem_bytes) FROM processes)"
        ).fetchone()[0]
        assert cur.execute("SELECT count(*) FROM process_info").fetchone()[0] == distinct
        assert distinct < want.num_rows  # processes listed again kept their ids
        # ids 1..n, each listing's rows in id order
        ids = cur.execute("SELECT min(process_id), max(process_id) FROM process_info").fetchone()
        assert ids == (1, distinct)
    finally:
        store.close()


def test_one_write_stores_its_rows_or_none(tmp_path):
    """A listing that fails (a NULL pid) leaves neither dimension rows nor listings."""
    store = Store.open(tmp_path / "f.duckdb")
    try:
        bad = [list(r) for r in ROWS[:2]]
        bad[1][4] = None
        try:
            store.write([rows_batch(bad)])
        except duckdb.Error:
            pass
        else:
            raise AssertionError("a NULL pid was stored")
        cur = store.cursor()
        assert cur.execute("SELECT count(*) FROM process_info").fetchone()[0] == 0
        assert cur.execute("SELECT count(*) FROM process_listings").fetchone()[0] == 0
    finally:
        store.close()


async def test_retention_drops_processes_whose_listings_are_all_gone():
    store = Store.open(":memory:")
    try:
        store.write([rows_batch(ROWS)])
        task = RetentionTask(store, keep_h=1.0)
        # keep only the listings at T0 + 5 s: the process on h2 was listed at T0 only
        await task.tick(T0 + timedelta(hours=1, seconds=1))
        cur = store.cursor()
        assert task.last_deleted["process_info"] == 1
        hosts = cur.execute("SELECT DISTINCT host FROM process_info").fetchall()
        assert hosts == [("h1",)]
        assert cur.execute("SELECT count(*) FROM processes").fetchone()[0] == 3
        assert (
            cur.execute(
                "SELECT count(*) FROM process_listings l ANTI JOIN process_info i USING (process_id)"
            ).fetchone()[0]
            == 0
        )
    finally:
        store.close()


def test_link_samples_read_back_bit_for_bit_with_one_row_per_link(tmp_path):
    """The simulated fleet's links (NVLink per GPU, IB, RoCE) through the keyed tables: the
    view gives back every written row exactly; each link has one id, ids 1..n."""
    store = Store.open(tmp_path / "f.duckdb")
    src = SimSource(start=T0)
    written = [links_batch(LINK_ROWS).data]
    try:
        store.write([links_batch(LINK_ROWS)])
        for k in range(3):
            batches = src.sample(T0 + timedelta(seconds=k)).batches
            written += [b.data for b in batches if b.table == "link_samples"]
            store.write(batches)
        want = pa.concat_tables(written, promote_options="default").select(LINK_COLS)
        cur = store.cursor()
        got = cur.execute(f"SELECT {', '.join(LINK_COLS)} FROM link_samples").to_arrow_table()
        key = [(c, "ascending") for c in ("ts", "host", "kind", "port", "gpu_uuid", "source")]
        assert got.num_rows == want.num_rows > 1000
        assert got.cast(want.schema).sort_by(key).equals(want.sort_by(key))
        distinct = cur.execute(
            "SELECT count(*) FROM (SELECT DISTINCT host, kind, port, gpu_uuid, source"
            " FROM link_samples)"
        ).fetchone()[0]
        ids = cur.execute("SELECT count(*), min(link_id), max(link_id) FROM link_info").fetchone()
        assert ids == (distinct, 1, distinct)
        # each write's rows are stored in id order (what makes the ids bit-pack)
        unordered = cur.execute(
            "SELECT count(*) FROM (SELECT ts, link_id, lag(link_id) OVER (ORDER BY rowid) AS prev,"
            " lag(ts) OVER (ORDER BY rowid) AS prev_ts FROM link_values)"
            " WHERE prev_ts = ts AND prev > link_id"
        ).fetchone()[0]
        assert unordered == 0
        # one write with a known port and a new one: both stored, the new one gets the next id
        t = T0 + timedelta(seconds=10)
        mixed = [
            (t, *LINK_ROWS[0][1:]),
            (t, "h9", "efa", "efa0", None, 1.0, 2.0, 3.0, 0, True, "x"),
        ]
        store.write([links_batch(mixed)])
        got = cur.execute(
            "SELECT host, port, link_id FROM link_samples JOIN link_info USING (host, kind, port)"
            " WHERE ts = ? ORDER BY link_id",
            [t],
        ).fetchall()
        (known,) = cur.execute(
            "SELECT link_id FROM link_info WHERE host = 'h1' AND port = 'nvlink-gpu0'"
        ).fetchone()
        assert known <= 6  # first seen with the other rows at T0 (ids by kind, then host)
        assert got == [("h1", "nvlink-gpu0", known), ("h9", "efa0", distinct + 1)]
    finally:
        store.close()


async def test_retention_drops_links_whose_samples_are_all_gone():
    store = Store.open(":memory:")
    try:
        store.write([links_batch(LINK_ROWS)])
        task = RetentionTask(store, keep_h=1.0)
        await task.tick(T0 + timedelta(hours=1, seconds=1))
        cur = store.cursor()
        # left: the NVLink port and the RoCE port, listed at T0 + 1 s
        assert task.last_deleted["link_info"] == 3
        assert cur.execute("SELECT count(*) FROM link_info").fetchone()[0] == 2
        assert cur.execute("SELECT count(*) FROM link_samples").fetchone()[0] == 2
    finally:
        store.close()


def test_the_footprint_counts_a_keyed_tables_rows_for_its_rollups():
    """The projected store size counts raw rows of every table with rollups, the views
    over keyed tables included (storage/footprint.py)."""
    from storage.footprint import rollup_rows

    store = Store.open(":memory:")
    try:
        store.write([links_batch(LINK_ROWS)])
        raw, _, _ = rollup_rows(store)
        assert raw == len(LINK_ROWS)
    finally:
        store.close()


def test_the_dimensions_whose_ids_the_writer_hands_out_carry_no_key_index(tmp_path):
    """0021: `gpu_series`, `slice_series`, `link_info` and `process_info` lost their
    PRIMARY KEY (an ART index, a block of its own in every file); ids stay unique
    because the one writer hands them out."""
    store = Store.open(tmp_path / "k.duckdb")
    try:
        src = SimSource(start=T0)
        for k in range(6):
            store.write(src.sample(T0 + timedelta(seconds=k)).batches)
        cur = store.cursor()
        keyed = ("gpu_series", "slice_series", "link_info", "process_info")
        keys = cur.execute(
            "SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
            f" AND table_name IN {keyed}"
        ).fetchall()
        assert keys == []
        for table, id_col in zip(
            keyed, ("series_id", "slice_series_id", "link_id", "process_id"), strict=True
        ):
            n, ids = cur.execute(
                f"SELECT count(*), count(DISTINCT {id_col}) FROM {table}"
            ).fetchone()
            assert n == ids > 0, table
    finally:
        store.close()


def test_a_dimension_stores_its_new_keys_in_id_order():
    """The ids a write hands out (storage/keyed.py) lie in the table in id order: one
    delta run for the id column, and the rows of a host together. Without the order
    a write of more than 2,048 new keys came out in the window's chunks (ids 2049...
    first), which took a 128 KiB block more for `process_info` at 3,040 GPUs."""
    store = Store.open(":memory:")
    try:
        src = SimSource(scale=10, start=T0)
        store.write(src.sample(T0).batches)
        cur = store.cursor()
        for dim, id_col in (
            ("process_info", "process_id"),
            ("link_info", "link_id"),
            ("gpu_series", "series_id"),
            ("slice_series", "slice_series_id"),
        ):
            ids = [
                r[0] for r in cur.execute(f"SELECT {id_col} FROM {dim} ORDER BY rowid").fetchall()
            ]
            assert len(ids) > 1000, dim
            assert ids == list(range(1, len(ids) + 1)), dim
    finally:
        store.close()
