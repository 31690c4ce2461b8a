"""The history path's newest sample per GPU and slice (storage/views/latest.py), the
rack grid's order and the fleet totals' newest time, against the statements they
replaced (grouping the views' rows by host / GPU name; every sort key in one ORDER BY;
max(ts) of the view) on rows made to tell them apart: a host silent within the stale
window, one silent beyond it, rows after the cursor, a GPU left out of its host's
newest report, GPUs stamped apart within a second, a GPU and a slice with two sources
(two series) whose newest row is in the other one, unplaced hosts and unnamed GPUs."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from storage.batch import make_batch
from storage.store import Store
from storage.views import fleet_totals, rack_grid
from storage.views.latest import GPU_LATEST, SLICE_LATEST, gpu_latest
from storage.views.query import run
from storage.views.rack import rack_sql

AT = datetime(2026, 1, 5, 12, 0, 0)
TS = pa.timestamp("us")
STALE_S = 30.0


def s(seconds: float) -> datetime:
    return AT + timedelta(seconds=seconds)


# (ts offset, host, gpu, source, util): what each GPU reported
GPU_ROWS = [
    (-5.0, "a-1", "GPU-a0", "x", 10.0),
    (-1.0, "a-1", "GPU-a0", "x", 11.0),  # a-1's newest report: -1 s
    (-1.5, "a-1", "GPU-a1", "x", 20.0),  # stamped apart, within a second: counts
    (-3.0, "a-1", "GPU-a2", "x", 30.0),  # not in a-1's newest report: missing
    (2.0, "a-1", "GPU-a0", "x", 99.0),  # after the cursor
    (-20.0, "b-1", "GPU-b0", "x", 40.0),  # b-1 silent 20 s: still within 30 s
    (-40.0, "c-1", "GPU-c0", "x", 50.0),  # c-1 silent 40 s: beyond the window
    (-2.0, "d-1", "GPU-d0", "x", 60.0),
    (-1.2, "d-1", "GPU-d0", "y", 61.0),  # the other source has the newest row
    (-2.0, "n-1", "GPU-n0", "x", 70.0),  # unplaced host, unnamed GPUs
    (-2.0, "n-1", "GPU-n1", "x", 71.0),
]
HOSTS = {  # host -> (cluster, rack, slot)
    "a-1": ("c2", "r10", 1),
    "b-1": ("c2", "r9", 1),
    "c-1": ("c10", "r1", 2),
    "d-1": ("c10", "r1", 1),
}
GPUS = {  # gpu -> (host, index)
    "GPU-a0": ("a-1", 2),  # indexes against the uuids' order
    "GPU-a1": ("a-1", 1),
    "GPU-a2": ("a-1", 0),
    "GPU-b0": ("b-1", 0),
    "GPU-c0": ("c-1", 0),
    "GPU-d0": ("d-1", 0),
    "GPU-n0": ("n-1", None),  # after its host's indexed GPU
    "GPU-n1": ("n-1", 0),
    "GPU-z0": ("z-1", 0),  # no hosts row, never reported
}
# (ts offset, slice, its GPU, source, util)
SLICE_ROWS = [
    (-1.0, "GPU-d0/1", "GPU-d0", "x", 5.0),
    (-1.5, "GPU-d0/2", "GPU-d0", "x", 6.0),
    (-4.0, "GPU-d0/2", "GPU-d0", "x", 7.0),
    (-4.0, "GPU-d0/3", "GPU-d0", "x", 4.0),  # not in its GPU's newest report: missing
    (-3.0, "GPU-b0/1", "GPU-b0", "x", 8.0),
    (-2.5, "GPU-b0/1", "GPU-b0", "y", 9.0),
    (1.0, "GPU-b0/1", "GPU-b0", "y", 90.0),  # after the cursor
]


@pytest.fixture(scope="module")
def con():
    store = Store.open(":memory:")
    hosts = sorted(HOSTS)
    store.write(
        [
            make_batch(
                "hosts",
                {
                    "host": hosts,
                    "cluster": [HOSTS[h][0] for h in hosts],
                    "rack": [HOSTS[h][1] for h in hosts],
                    "rack_slot": pa.array([HOSTS[h][2] for h in hosts], pa.int32()),
                    "first_seen": pa.array([s(-60)] * len(hosts), TS),
                },
            ),
            make_batch(
                "gpus",
                {
                    "gpu_uuid": list(GPUS),
                    "host": [h for h, _ in GPUS.values()],
                    "gpu_index": pa.array([i for _, i in GPUS.values()], pa.int32()),
                },
            ),
            make_batch(
                "slices",
                {
                    "slice_id": sorted({r[1] for r in SLICE_ROWS}),
                    "gpu_uuid": [x.split("/")[0] for x in sorted({r[1] for r in SLICE_ROWS})],
                    "kind": ["mig"] * 4,
                },
            ),
            make_batch(
                "gpu_samples",
                {
                    "ts": pa.array([s(r[0]) for r in GPU_ROWS], TS),
                    "host": [r[1] for r in GPU_ROWS],
                    "gpu_uuid": [r[2] for r in GPU_ROWS],
                    "source": [r[3] for r in GPU_ROWS],
                    "util_pct": pa.array([r[4] for r in GPU_ROWS], pa.float64()),
                    "mem_used_bytes": pa.array([int(r[4]) << 20 for r in GPU_ROWS], pa.int64()),
                },
            ),
            make_batch(
                "slice_samples",
                {
                    "ts": pa.array([s(r[0]) for r in SLICE_ROWS], TS),
                    "slice_id": [r[1] for r in SLICE_ROWS],
                    "gpu_uuid": [r[2] for r in SLICE_ROWS],
                    "source": [r[3] for r in SLICE_ROWS],
                    "util_pct": pa.array([r[4] for r in SLICE_ROWS], pa.float64()),
                },
            ),
        ]
    )
    cur = store.cursor()
    yield cur
    cur.close()
    store.close()


# The statements replaced: each host's (each sliced GPU's) newest time grouped from
# the view's rows.
GPU_LATEST_BEFORE = (
    GPU_LATEST[: GPU_LATEST.index("WITH")]
    + (
        """WITH newest AS (
        SELECT host, max(ts) AS host_ts FROM gpu_samples
        WHERE ts > $at - to_seconds($stale_s) AND ts <= $at
        GROUP BY host
    )
"""
    )
    + GPU_LATEST[GPU_LATEST.index("    SELECT s.gpu_uuid,") :]
)
SLICE_LATEST_BEFORE = """WITH newest AS (
        SELECT gpu_uuid, max(ts) AS gpu_ts FROM slice_samples
        WHERE ts > $at - to_seconds($stale_s) AND ts <= $at
        GROUP BY gpu_uuid
    )
""" + SLICE_LATEST[SLICE_LATEST.index("    SELECT s.slice_id,") :]
RACK_ORDER_BEFORE = """
ORDER BY rack IS NULL, cluster IS NULL,
         regexp_replace(coalesce(cluster, ''), '[0-9]+$', ''),
         TRY_CAST(regexp_extract(cluster, '([0-9]+)$', 1) AS BIGINT), cluster,
         regexp_replace(rack, '[0-9]+$', ''),
         TRY_CAST(regexp_extract(rack, '([0-9]+)$', 1) AS BIGINT), rack, rack_slot, host,
         gpu_index NULLS LAST, gpu_uuid
"""

CURSORS = [s(0), s(-1.1), s(-1.0), s(-25.0), s(5.0), s(-100.0)]


def _rows(con, sql: str, at: datetime, key: str) -> list[dict]:
    t = run(con, f"SELECT * FROM ({sql}) ORDER BY {key}", {"at": at, "stale_s": STALE_S})
    return t.to_pylist()


@pytest.mark.parametrize("at", CURSORS)
def test_gpu_latest_is_the_per_host_statement(con, at):
    assert _rows(con, GPU_LATEST, at, "gpu_uuid") == _rows(con, GPU_LATEST_BEFORE, at, "gpu_uuid")


@pytest.mark.parametrize("at", CURSORS)
def test_slice_latest_is_the_per_gpu_statement(con, at):
    got = _rows(con, SLICE_LATEST, at, "slice_id")
    assert got == _rows(con, SLICE_LATEST_BEFORE, at, "slice_id")


def test_gpu_latest_at_the_cursor(con):
    got = {r["gpu_uuid"]: (r["ts"], r["util_pct"]) for r in _rows(con, GPU_LATEST, AT, "1")}
    assert got == {
        "GPU-a0": (s(-1.0), 11.0),
        "GPU-a1": (s(-1.5), 20.0),
        "GPU-b0": (s(-20.0), 40.0),
        "GPU-d0": (s(-1.2), 61.0),
        "GPU-n0": (s(-2.0), 70.0),
        "GPU-n1": (s(-2.0), 71.0),
    }
    one = {r["gpu_uuid"] for r in _rows(con, gpu_latest("host = 'a-1'"), AT, "1")}
    assert one == {"GPU-a0", "GPU-a1"}


def test_slice_latest_at_the_cursor(con):
    got = {r["slice_id"]: (r["ts"], r["util_pct"]) for r in _rows(con, SLICE_LATEST, AT, "1")}
    assert got == {
        "GPU-d0/1": (s(-1.0), 5.0),
        "GPU-d0/2": (s(-1.5), 6.0),
        "GPU-b0/1": (s(-2.5), 9.0),
    }


@pytest.mark.parametrize("at", CURSORS)
def test_rack_grid_history_in_every_keys_order(con, at):
    got = rack_grid(con, at, live=False)
    sql = rack_sql(con)
    whole = sql[: sql.index("ORDER BY host_ord")] + RACK_ORDER_BEFORE
    before = run(
        con, whole.replace("SELECT * EXCLUDE (host_ord)", "SELECT *"), {"at": at, "stale_s": 30.0}
    )
    assert got.to_pylist() == before.drop_columns(["host_ord"]).to_pylist()


def test_rack_grid_order(con):
    got = rack_grid(con, AT, live=False)
    assert got.column("gpu_uuid").to_pylist() == [
        "GPU-b0",  # c2 before c10, r9 before r10
        "GPU-a2",  # by index
        "GPU-a1",
        "GPU-a0",
        "GPU-d0",  # c10 r1: slot 1, then 2
        "GPU-c0",
        "GPU-n1",  # unplaced, by host, then index (none last)
        "GPU-n0",
        "GPU-z0",
    ]


def test_totals_newest_time(con):
    assert fleet_totals(con, AT)["newest_ts"] == s(-1.0)
    assert fleet_totals(con, s(-1.1))["newest_ts"] == s(-1.2)
    assert fleet_totals(con, s(5.0))["newest_ts"] == s(2.0)
