"""0026: GPU UUIDs, cgroup paths and container ids are stored with ZSTD in the tables
that hold each once (random hex: DuckDB's dictionary of FSST strings kept them near
full length, a 128 KiB block per column in a 3,040-GPU file). The strings read back
as written, through the views too, in a new file and in one migrated from 25."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from collectors.sim.source import SimSource
from storage.store import BLOCK_SIZE_BYTES, STORAGE_VERSION, Store
from tests.test_keyed_tables import old_store

T0 = datetime(2026, 11, 26, 12, 0, 0)
ZSTD_COLUMNS = {
    ("gpus", "gpu_uuid"),
    ("gpu_series", "gpu_uuid"),
    ("link_info", "gpu_uuid"),
    ("process_info", "gpu_uuid"),
    ("process_info", "container"),
    ("process_info", "cgroup"),
}


def compressions(cur) -> dict[tuple[str, str], set[str]]:
    """(table, column) -> the compressions of its stored string segments."""
    out: dict[tuple[str, str], set[str]] = {}
    for table in {t for t, _ in ZSTD_COLUMNS} | {"slices", "assignments"}:
        for col, comp in cur.execute(
            "SELECT column_name, compression FROM pragma_storage_info(?)"
            " WHERE segment_type = 'VARCHAR' AND block_id >= 0",
            [table],
        ).fetchall():
            out.setdefault((table, col), set()).add(comp)
    return out


def test_a_new_store_keeps_the_random_strings_with_zstd_and_reads_them_back(tmp_path):
    src = SimSource(start=T0)
    src.ensure_model(T0)
    inventory = src.describe(T0)
    ticks = [src.sample(T0 + timedelta(seconds=k)).batches for k in range(6)]  # listings at 0, 5
    store = Store.open(tmp_path / "z.duckdb")
    try:
        store.write(inventory)
        for batches in ticks:
            store.write(batches)
        store.checkpoint()
        cur = store.cursor()
        comps = compressions(cur)
        for key in ZSTD_COLUMNS:
            assert comps[key] == {"ZSTD"}, key
        # the other strings keep DuckDB's choice
        assert "ZSTD" not in comps[("gpus", "host")] | comps[("slices", "gpu_uuid")]
        written = {b.table: b.data for batches in [inventory, *ticks] for b in batches}
        gpus = written["gpus"]
        assert sorted(cur.execute("SELECT gpu_uuid FROM gpus").fetchall()) == sorted(
            (u,) for u in gpus.column("gpu_uuid").to_pylist()
        )
        for view, cols in (
            ("gpu_samples", ("host", "gpu_uuid")),
            ("link_samples", ("host", "port", "gpu_uuid")),
            ("processes", ("gpu_uuid", "pid", "container", "cgroup")),
        ):
            sent = {
                tuple(r[c] for c in cols)
                for batches in ticks
                for b in batches
                if b.table == view
                for r in b.data.select(list(cols)).to_pylist()
            }
            got = set(cur.execute(f"SELECT DISTINCT {', '.join(cols)} FROM {view}").fetchall())
            assert sent and got == sent, view
    finally:
        store.close()


def version_25_store(path, fmt: str | None) -> tuple[dict[str, list], list[str]]:
    """A file at schema 25 made in on-disk format `fmt` (None: DuckDB's default), with
    rows in the four tables; returns their rows and the tables."""
    config = {"storage_compatibility_version": fmt, "default_block_size": BLOCK_SIZE_BYTES}
    duckdb.connect(str(path), config=config if fmt else {}).close()  # the format is the file's
    con = old_store(path, 25)
    uuid = "GPU-0de03917-0de0-3917-0de0-39170de03917"
    con.execute(f"INSERT INTO gpus VALUES ('{uuid}', 'h1', 0, 'H100', '0:1', false, 80)")
    con.execute(f"INSERT INTO gpu_series VALUES (1, 'h1', '{uuid}', 'sim')")
    con.execute(f"INSERT INTO link_info VALUES (1, 'nvlink', 'h1', 'nvlink-gpu0', '{uuid}', 'sim')")
    con.execute(
        f"INSERT INTO process_info VALUES (1, 'h1', '{uuid}', NULL, 42, 'c0de', "
        "'0::/tenants.slice/cri-containerd-c0de.scope', 't', 'sim'), "
        f"(2, 'h1', '{uuid}', NULL, 43, NULL, NULL, NULL, NULL)"
    )
    # more rows, 20 distinct strings: DuckDB's own choice is then a dictionary
    u = "'GPU-' || md5((i % 20)::VARCHAR)"
    con.execute(
        f"INSERT INTO gpus SELECT {u}, 'h2', i, 'H100', '0:2', false, 80 FROM range(300) r(i)"
    )
    con.execute(f"INSERT INTO gpu_series SELECT i + 2, 'h2', {u}, 'sim' FROM range(300) r(i)")
    con.execute(
        f"INSERT INTO link_info SELECT i + 2, 'ib', 'h2', 'p' || i, {u}, 'sim' FROM range(300) r(i)"
    )
    con.execute(
        f"INSERT INTO process_info SELECT i + 3, 'h2', {u}, NULL, i, md5((i % 20)::VARCHAR), "
        "'/cri-containerd-' || md5((i % 20)::VARCHAR), 't', 'sim' FROM range(300) r(i)"
    )
    tables = sorted({t for t, _ in ZSTD_COLUMNS})
    before = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}
    con.close()
    return before, tables


def migrated_compressions(path, storage_version) -> dict[tuple[str, str], set[str]]:
    """A version 25 store (in `storage_version`'s format) opened, hence migrated: its
    rows as they were, and its string columns' compressions after a checkpoint."""
    before, tables = version_25_store(path, storage_version)
    store = Store.open(path)
    try:
        store.checkpoint()
        cur = store.cursor()
        for t in tables:
            assert cur.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() == before[t], t
        return compressions(cur)
    finally:
        store.close()


def test_a_version_25_store_keeps_its_rows_and_compresses_them(tmp_path):
    comps = migrated_compressions(tmp_path / "v25.duckdb", STORAGE_VERSION)
    for key in ZSTD_COLUMNS:
        assert comps[key] == {"ZSTD"}, key


def test_a_file_in_duckdbs_default_format_keeps_duckdbs_choice(tmp_path):
    """That format has no ZSTD strings: DuckDB would store a column forced to it
    uncompressed, larger than its own dictionary of FSST strings."""
    comps = migrated_compressions(tmp_path / "old.duckdb", None)
    for key in ZSTD_COLUMNS:
        assert comps[key] and comps[key] <= {"FSST", "Dictionary", "Constant"}, (key, comps[key])
