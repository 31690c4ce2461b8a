"""The tenants view's history path (storage/views/tenants.py `_alloc_history`: where no
window state covers the question) returns the rows of its one statement (TENANTS_SQL):
a GPU and a slice with two keys (sources), memory reported only before the last
MEM_RECENT_S of the window, a key with no memory; its cached placement follows
assignment changes, in a store with a writer and in a read-only file."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import storage.views.tenants as tenants_mod
from fleettui.tui.demo import fixed_store
from storage import views
from storage.batch import Batch, make_batch
from storage.store import Store
from storage.views.query import run
from tests.test_views_windows import _approx

TS = pa.timestamp("us")
QUIET = "GPU-quiet-0000"


def _same(cur, at, window_s: float = 30.0) -> list[dict]:
    """The history path and the one statement agree (and the history path is taken)."""
    assert tenants_mod._alloc_history(cur, at, window_s) is not None
    a = views.tenant_summary(cur, at, util_window_s=window_s, live=False)
    b = views.tenant_summary(cur, at, util_window_s=window_s, one_statement=True)
    assert a.schema == b.schema
    assert _approx(a.to_pylist()) == b.to_pylist()
    return b.to_pylist()


def _tenant_of(cur, gpu: str) -> str:
    return cur.execute(
        "SELECT tenant FROM assignments WHERE gpu_uuid = ? AND valid_to IS NULL", [gpu]
    ).fetchone()[0]


def _valid_from(cur, gpu: str):
    return cur.execute(
        "SELECT valid_from FROM assignments WHERE gpu_uuid = ? AND valid_to IS NULL", [gpu]
    ).fetchone()[0]


def _whole_gpu(tenant: str, gpu: str, fraction: float, valid_from) -> Batch:
    """An assignment of a whole GPU (it replaces the one of the same tenant, GPU and start)."""
    return make_batch(
        "assignments",
        {
            "tenant": [tenant],
            "gpu_uuid": [gpu],
            "slice_id": pa.array([None], pa.string()),
            "fraction": [fraction],
            "valid_from": pa.array([valid_from], TS),
        },
    )


@pytest.fixture()
def stored(tmp_path):
    path = tmp_path / "fleet.duckdb"
    store, last = fixed_store(40.0, 1.0, path=str(path))
    cur = store.cursor()
    # whole GPUs held: one gets a second source; a new one reports memory only early
    g2, h2, tenant = cur.execute(
        "SELECT a.gpu_uuid, g.host, a.tenant FROM assignments a JOIN gpus g USING (gpu_uuid) "
        "WHERE a.slice_id IS NULL AND a.valid_to IS NULL ORDER BY a.gpu_uuid LIMIT 1"
    ).fetchone()
    gm, hm = QUIET, h2
    sl, sg = cur.execute(
        "SELECT slice_id, gpu_uuid FROM assignments WHERE slice_id IS NOT NULL "
        "AND valid_to IS NULL ORDER BY slice_id LIMIT 1"
    ).fetchone()
    store.write([_whole_gpu(tenant, gm, 1.0, last - timedelta(seconds=60))])
    times = [last - timedelta(seconds=s) for s in (25.5, 12.25, 3.5, 0.5)]
    four = pa.array(times, TS)
    store.write(
        [
            # a second key (source) of one GPU: newer memory than the first's at 0.5 s,
            # older at 3.5 s; other utilisation
            make_batch(
                "gpu_samples",
                {
                    "ts": four,
                    "host": [h2] * 4,
                    "gpu_uuid": [g2] * 4,
                    "source": ["dcgm"] * 4,
                    "util_pct": pa.array([1.0, 2.0, None, 4.0], pa.float64()),
                    "mem_used_bytes": pa.array([11, None, 13, None], pa.int64()),
                },
            ),
            # a key whose newest memory is older than MEM_RECENT_S: the window's newest
            # non-NULL memory still (the recent span has none of it)
            make_batch(
                "gpu_samples",
                {
                    "ts": four,
                    "host": [hm] * 4,
                    "gpu_uuid": [gm] * 4,
                    "source": ["bmc"] * 4,
                    "util_pct": pa.array([50.0, 60.0, 70.0, 80.0], pa.float64()),
                    "mem_used_bytes": pa.array([2**40, 2**41, None, None], pa.int64()),
                },
            ),
            make_batch(
                "slice_samples",
                {
                    "ts": four,
                    "slice_id": [sl] * 4,
                    "gpu_uuid": [sg] * 4,
                    "source": ["dcgm"] * 4,
                    "util_pct": pa.array([9.0, None, 7.0, 6.0], pa.float64()),
                    "mem_used_bytes": pa.array([None, 5, None, None], pa.int64()),
                },
            ),
        ]
    )
    store.publish_live()
    cur.close()
    yield store, path, last, (g2, gm)
    store.close()


def test_several_keys_and_old_memory(stored):
    store, _, last, (g2, gm) = stored
    cur = store.cursor()
    # the window reaches back over the early memory, the recent span does not
    for dt in (0.0, -0.2, -1.0, -4.0, -13.0, 2.0, 29.0):
        _same(cur, last + timedelta(seconds=dt))
    _same(cur, last, 10.0)
    _same(cur, last, 1.5)  # a window shorter than MEM_RECENT_S
    # the quiet GPU's memory is its newest non-NULL sample in the window (12.25 s old),
    # then none once that sample left the window
    asg = run(cur, tenants_mod.ASG_LIVE_SQL, {"at": last}).to_pylist()
    i = next(i for i, r in enumerate(asg) if r["gpu_uuid"] == QUIET)
    for dt, mem, util in ((0.0, 2**41, 65.0), (12.0, 2**41, 70.0), (26.0, None, 75.0)):
        row = tenants_mod._alloc_history(cur, last + timedelta(seconds=dt), 30.0).to_pylist()[i]
        assert (row["mem_used_bytes"], row["util_pct"]) == (mem, pytest.approx(util))
    cur.close()


def test_placement_follows_assignment_changes(stored):
    store, _, last, (g2, _) = stored
    cur = store.cursor()
    past = last - timedelta(seconds=2.0)  # a cursor in the past: history
    tenant = _tenant_of(cur, g2)
    before = {r["tenant"]: r["gpus"] for r in _same(cur, past)}
    vf = _valid_from(cur, g2)
    store.write([_whole_gpu(tenant, g2, 0.25, vf)])
    store.publish_live()
    after = {r["tenant"]: r["gpus"] for r in _same(cur, past)}
    assert after[tenant] == pytest.approx(before[tenant] - 0.75)
    cur.close()


def test_a_read_only_file(stored):
    store, path, last, (g2, _) = stored
    cur = store.cursor()
    tenant = _tenant_of(cur, g2)
    vf = _valid_from(cur, g2)
    cur.close()
    store.close()
    ro = Store.open(path, read_only=True)
    assert ro.live is None  # no window state: every cursor reads history
    first = {r["tenant"]: r["gpus"] for r in _same(ro.con, last)}
    _same(ro.con, last - timedelta(seconds=7.0))
    ro.close()
    # the file changed between two read-only opens: the placement is read again
    rw = Store.open(path)
    rw.write([_whole_gpu(tenant, g2, 0.5, vf)])
    rw.close()
    ro = Store.open(path, read_only=True)
    again = {r["tenant"]: r["gpus"] for r in _same(ro.con, last)}
    assert again[tenant] == pytest.approx(first[tenant] - 0.5)
    ro.close()


def test_dense_ids_setting_only_on_the_tenants_cursor(stored):
    """perfect_ht_threshold is raised for the tenants' per-id sums on a cursor of their
    own, never for the store's connection (the drill-down's queries paid for it)."""
    from storage.reader import LocalReader

    store, _, last, _ = stored
    setting = "SELECT current_setting('perfect_ht_threshold') AS v"
    default = store.cursor().execute(setting).fetchone()[0]
    assert default < tenants_mod.DENSE_HT_BITS
    reader = LocalReader(store.con)
    with tenants_mod._dense(reader) as cur:
        assert cur.execute(setting).fetchone()[0] == tenants_mod.DENSE_HT_BITS
    _same(store.cursor(), last)
    assert reader.arrow(setting).column("v")[0].as_py() == default
    assert store.con.execute(setting).fetchone()[0] == default


class _Remote:
    """A reader that is not a DuckDB connection (as a daemon's, through Quack): no
    cursor of the tenants' own, no registered ids for the older memory."""

    def __init__(self, con):
        from storage.reader import LocalReader

        self._local = LocalReader(con)

    def arrow(self, sql, params=None):
        return self._local.arrow(sql, params)


def test_older_memory_only_for_the_keys_without_recent_memory(stored):
    """The keys without memory in the window's last MEM_RECENT_S get their newest from
    the rest of the window, whatever the reader; the others keep their recent one."""
    store, _, last, (g2, gm) = stored
    cur = store.cursor()
    for src in (cur, _Remote(store.con)):
        sums, mem = tenants_mod._window_sums(src, "gpu_samples", last, 30.0)
        ids = mem.column("id").to_pylist()
        assert len(ids) == len(set(ids))  # one row per key
        sql = "SELECT series_id FROM gpu_series WHERE gpu_uuid = ?"
        quiet = cur.execute(sql, [gm]).fetchone()[0]
        assert mem.filter(pc.equal(mem.column("id"), quiet)).column("mem").to_pylist() == [2**41]
        assert set(ids) <= set(sums.column("id").to_pylist())
        for dt in (0.0, -4.0, 13.0):
            _same(src, last + timedelta(seconds=dt))
    cur.close()


def test_newest_memory_per_key_in_numpy():
    """`_newest` picks each key's newest row whatever the rows' order (as
    `_NEWEST_MEM`'s arg_max), one row per key (of two as new, the first)."""
    rows = pa.table(
        {
            "id": pa.array([7, 3, 7, 3, 9, 7, 9], pa.int64()),
            "mem": pa.array([70, 31, 72, 30, 90, 71, 91], pa.int64()),
            "mem_ts": pa.array([1, 5, 3, 4, 2, 2, 2], pa.int64()).cast(TS),
        }
    )
    got = tenants_mod._newest(rows)
    assert got.schema == rows.schema
    assert sorted(
        zip(got.column("id").to_pylist(), got.column("mem").to_pylist(), strict=True)
    ) == [
        (3, 31),
        (7, 72),
        (9, 90),
    ]


def test_a_source_without_memory_turns_the_memory_count_on_and_off(stored):
    """A key that reports no memory at all: the first window reads the older span for it
    and finds none, so the next windows count memory values in the sums (and read the
    older span only for keys that have some); a window without such keys turns it off.
    Every mode returns the one statement's rows."""
    store, _, last, (g2, _) = stored
    host = store.cursor().execute("SELECT host FROM gpus WHERE gpu_uuid = ?", [g2]).fetchone()[0]
    times = [last - timedelta(seconds=s) for s in (20.0, 10.0, 0.5)]
    store.write(
        [
            make_batch(
                "gpu_samples",
                {
                    "ts": pa.array(times, TS),
                    "host": [host] * 3,
                    "gpu_uuid": [g2] * 3,
                    "source": ["bmc"] * 3,
                    "util_pct": pa.array([5.0, 6.0, 7.0], pa.float64()),
                    "mem_used_bytes": pa.array([None, None, None], pa.int64()),
                },
            )
        ]
    )
    store.publish_live()
    cur = store.cursor()
    tenants_mod._count_mem.discard("gpu_samples")
    _same(cur, last)
    assert "gpu_samples" in tenants_mod._count_mem
    sums, _ = tenants_mod._window_sums(cur, "gpu_samples", last, 30.0)
    assert "mem_n" in sums.column_names
    _same(cur, last)
    _same(cur, last - timedelta(seconds=4.0))
    _same(cur, last + timedelta(seconds=25.0))  # only the early memory of other keys left
    _same(cur, last + timedelta(seconds=40.0))  # nothing in the window
    assert "gpu_samples" not in tenants_mod._count_mem
    cur.close()
