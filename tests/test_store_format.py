"""The on-disk format a store file is made with (storage.store.STORAGE_VERSION and
BLOCK_SIZE_BYTES, issue 13): new files get the pinned DuckDB's own format (its newer
codecs) and 128 KiB blocks, and a file made in the older default format, with DuckDB's
256 KiB blocks, keeps both and still opens, migrates and writes."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from collectors.sim.source import SimSource
from storage.rollups import SPECS, RollupOptions, roll_tier
from storage.store import BLOCK_SIZE_BYTES, STORAGE_VERSION, Store

T0 = datetime(2026, 11, 26, 12, 0, 0)


def storage_version(con) -> str:
    return con.execute(
        "SELECT tags['storage_version'] FROM duckdb_databases() WHERE NOT internal"
        " AND database_name = current_database()"
    ).fetchone()[0]


def block_bytes(con) -> int:
    return con.execute(
        "SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
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


def test_a_new_store_is_made_with_smaller_blocks_and_reopens_with_them(tmp_path):
    path = tmp_path / "new.duckdb"
    store = Store.open(path)
    try:
        assert BLOCK_SIZE_BYTES == 128 << 10  # DuckDB's default is 256 KiB
        assert block_bytes(store.con) == BLOCK_SIZE_BYTES
        fill(store, 3)
    finally:
        store.close()
    # each small table, key index and column takes at least a block: 3.8 MB here,
    # where DuckDB's default 256 KiB blocks make the same file 7.4 MB
    assert path.stat().st_size < 5 << 20
    con = duckdb.connect(str(path), read_only=True)  # any DuckDB >= 1.2 reads it as it is
    try:
        assert block_bytes(con) == BLOCK_SIZE_BYTES
        assert con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] > 0
    finally:
        con.close()


def test_a_file_in_the_old_default_format_keeps_it_and_opens(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))  # DuckDB's default format and blocks, as stores were made
    old = storage_version(con)
    old_block = block_bytes(con)
    con.close()
    assert old != STORAGE_VERSION + "+"
    assert old_block == 256 << 10
    store = Store.open(path)
    try:
        fill(store, 2)
        store.checkpoint()
        assert storage_version(store.con) == old
        assert block_bytes(store.con) == old_block
        assert store.con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] > 0
    finally:
        store.close()
    store = Store.open(path, read_only=True)
    try:
        assert store.con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] > 0
    finally:
        store.close()


def test_rollup_sums_stay_compressed_at_the_stores_block_size(tmp_path):
    """DuckDB 1.5 leaves DECIMAL(38,6) columns (the rollups' exact sums) uncompressed
    in blocks of 64 KiB or less: +40 % rollup bytes. The store's block size must not."""
    store = Store.open(tmp_path / "roll.duckdb")
    try:
        fill(store, 130)
        with store.writer() as cur:
            spec = SPECS["gpu_samples"]
            roll_tier(cur, spec, "1m", T0 + timedelta(seconds=130), RollupOptions(max_span_h=1))
        store.checkpoint()
        comps = store.con.execute(
            "SELECT column_name, compression FROM pragma_storage_info('gpu_samples_1m')"
            " WHERE segment_type LIKE 'DECIMAL%' AND block_id >= 0"
        ).fetchall()
        assert len({c for c, _ in comps}) >= 7  # every sum column has a stored segment
        assert [c for c in comps if c[1] == "Uncompressed"] == []
    finally:
        store.close()
