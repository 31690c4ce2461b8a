"""`fleettui export` (hive-partitioned Parquet) and `fleettui sql --archive`."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta

import duckdb
import pyarrow.dataset as ds
import pytest

from fleettui.export_cli import Progress
from storage.batch import Batch, make_batch
from storage.rollups import SPECS, TIERS, RollupOptions, roll_tier
from storage.store import Store
from tests.rollup_data import sample_rows

START = datetime(2026, 11, 2, 0, 0, 0)


@pytest.fixture
def store_file(tmp_path):
    """Two days of GPU and link samples, their rollups and a few hosts, in a closed file."""
    path = tmp_path / "fleet.duckdb"
    store = Store.open(path)
    store.write(
        [
            Batch("gpu_samples", sample_rows("gpu_samples", START, 48, 30.0, 4, seed=1)),
            Batch("link_samples", sample_rows("link_samples", START, 48, 60.0, 4, seed=2)),
            make_batch("hosts", {"host": ["host-0", "host-1"], "rack": ["r1", "r'2"]}),
        ]
    )
    with store.writer() as cur:
        for tier in TIERS:
            roll_tier(
                cur,
                SPECS["gpu_samples"],
                tier,
                START + timedelta(days=2, minutes=5),
                RollupOptions(max_span_h=100),
            )
    store.close()
    return path


def _count(path, table: str) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def test_export_writes_hive_parquet_that_duckdb_and_pyarrow_read(fleettui, store_file, tmp_path):
    out = tmp_path / "archive"
    res = fleettui(
        "export",
        "--db",
        str(store_file),
        "--out",
        str(out),
        "--chunk-rows",
        "5000",
        timeout=300,
        check_rc=0,
    )
    assert "exported" in res.stdout
    assert "gpu_samples day=2026-11-02:" in res.stderr  # plain progress lines off a terminal
    days = sorted(p.name for p in (out / "table=gpu_samples").iterdir())
    assert days == ["day=2026-11-02", "day=2026-11-03"]
    assert not list(out.rglob("*.tmp"))
    con = duckdb.connect()
    con.execute(f"ATTACH '{store_file}' AS s (READ_ONLY)")
    for table in ("gpu_samples", "link_samples", "gpu_samples_1m", "gpu_samples_1h"):
        scan = f"read_parquet('{out}/table={table}/*/*.parquet', hive_partitioning = true)"
        # every row once, value for value (DECIMAL sums and timestamps included)
        diff = con.execute(f"""SELECT count(*) FROM (
            (SELECT * EXCLUDE ("table", day) FROM {scan}) EXCEPT ALL (SELECT * FROM s.{table}))
            """).fetchone()[0]
        n = con.execute(f"SELECT count(*) FROM {scan}").fetchone()[0]
        assert (diff, n) == (0, _count(store_file, table)), table
    # pyarrow reads the tree with hive partitioning, partitions as columns
    dset = ds.dataset(out / "table=gpu_samples", format="parquet", partitioning="hive")
    t = dset.to_table(filter=ds.field("day") == "2026-11-03")
    assert (
        t.num_rows
        == con.execute("SELECT count(*) FROM s.gpu_samples WHERE ts >= '2026-11-03'").fetchone()[0]
        > 0
    )
    hosts = con.execute(
        f"SELECT rack FROM read_parquet('{out}/table=hosts/*/*.parquet') ORDER BY rack"
    ).fetchall()
    assert hosts == [("r'2",), ("r1",)]
    # a second export of the same days replaces their files: no duplicates
    fleettui(
        "export",
        "--db",
        str(store_file),
        "--out",
        str(out),
        "--since",
        "2026-11-03",
        "--tables",
        "gpu_samples",
        timeout=300,
        check_rc=0,
    )
    assert con.execute(
        f"SELECT count(*) FROM read_parquet('{out}/table=gpu_samples/*/*.parquet')"
    ).fetchone()[0] == _count(store_file, "gpu_samples")


def test_sql_archive_sees_exported_rows_that_retention_deleted(fleettui, store_file, tmp_path):
    out = tmp_path / "archive"
    fleettui(
        "export",
        "--db",
        str(store_file),
        "--out",
        str(out),
        "--tables",
        "gpu_samples,hosts",
        timeout=300,
        check_rc=0,
    )
    total = _count(store_file, "gpu_samples")
    store = Store.open(store_file)  # retention: the first day leaves the store
    with store.writer() as cur:
        cur.execute("DELETE FROM gpu_values WHERE ts < ?", [START + timedelta(days=1)])
    store.close()
    live = _count(store_file, "gpu_samples")
    assert 0 < live < total
    q = "SELECT count(*) AS n, count(DISTINCT (ts, gpu_uuid)) AS d FROM gpu_samples"
    res = fleettui(
        "sql", "--db", str(store_file), "--archive", str(out), "--format", "json", q, check_rc=0
    )
    row = json.loads(res.stdout)[0]
    assert row["n"] == total
    plain = fleettui("sql", "--db", str(store_file), "--format", "json", q, check_rc=0)
    assert json.loads(plain.stdout)[0]["n"] == live
    # inventory joins work against the copied live table; the rollup views pass through
    res = fleettui(
        "sql",
        "--db",
        str(store_file),
        "--archive",
        str(out),
        "--format",
        "json",
        "SELECT count(*) AS n FROM gpu_samples g JOIN hosts h USING (host)"
        " WHERE g.ts < '2026-11-03'",
        check_rc=0,
    )
    assert json.loads(res.stdout)[0]["n"] == total - live - _rows_of_unknown_hosts(out)
    res = fleettui(
        "sql",
        "--db",
        str(store_file),
        "--archive",
        str(out),
        "--format",
        "json",
        "SELECT count(*) AS n FROM gpu_samples_1h_live",
        check_rc=0,
    )
    assert json.loads(res.stdout)[0]["n"] > 0


def _rows_of_unknown_hosts(out) -> int:
    return duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{out}/table=gpu_samples/*/*.parquet')"
        " WHERE host NOT IN ('host-0', 'host-1') AND ts < '2026-11-03'"
    ).fetchone()[0]


def test_export_through_a_running_daemon(fleettui, sim_daemon, tmp_path):
    import time

    time.sleep(3)  # a few seconds of the simulated fleet
    out = tmp_path / "archive"
    res = fleettui(
        "export", "--out", str(out), "--tables", "gpu_samples,gpus", timeout=300, check_rc=0
    )
    assert "exported" in res.stdout
    n = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{out}/table=gpu_samples/*/*.parquet')"
    ).fetchone()[0]
    assert n >= 304  # at least one tick of the 304-GPU fleet
    res = fleettui(
        "sql",
        "--archive",
        str(out),
        "--format",
        "json",
        "SELECT count(*) AS n FROM gpu_samples",
        check_rc=0,
    )
    assert json.loads(res.stdout)[0]["n"] >= n  # archive + live, each row once
    # the rollup views answer through the daemon, reaching the present
    res = fleettui(
        "sql",
        "--format",
        "json",
        "SELECT count(DISTINCT gpu_uuid) AS gpus, max(last_ts) AS newest FROM gpu_samples_1m_live",
        check_rc=0,
    )
    assert json.loads(res.stdout)[0]["gpus"] == 304


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--tables", "nope"], "--tables: no table 'nope'"),
        (["--tables", "gpu_samples;drop"], "is not a table name"),
        (["--since", "yesterday"], "--since 'yesterday': expected YYYY-MM-DD"),
    ],
)
def test_export_bad_input_is_one_line(fleettui, store_file, tmp_path, args, msg):
    res = fleettui("export", "--db", str(store_file), "--out", str(tmp_path / "a"), *args)
    assert res.returncode == 1
    assert msg in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_progress_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    s = Tty()
    p = Progress(4, s)
    for i in range(4):
        p.step(f"gpu_samples {i}")
    p.close()
    text = s.getvalue()
    assert "\r[" in text and "100% gpu_samples 3" in text and text.endswith("\n")
