"""The live rack grid (newest-sample snapshot + cached layout, storage/views/live.py)
returns exactly the rows of the one-statement history path on the same data: a
fleet with a silent host, a missing GPU and sliced GPUs, every filter, rows whose
dimensions are NULL or that have no host, and after the layout changed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from collectors.sim.faults import REFERENCE_FAULTS
from fleettui.tui.demo import fixed_store
from storage import views
from storage.batch import make_batch
from storage.live import FILL_WINDOW_S
from storage.store import Store
from storage.views import RackFilter
from storage.views import fleet as fleet_view
from storage.views.live import snapshot_state
from storage.views.query import run
from storage.views.rack import STATES, UNPLACED
from tests.test_views_nulls import AT, null_store

TABLES = ("gpu_samples", "slice_samples")


def _same(src, at, flt=None):
    live = views.rack_grid(src, at, flt)
    hist = views.rack_grid(src, at, flt, live=False)
    assert live.schema == hist.schema
    _close(live.to_pylist(), hist.to_pylist())
    return live


def _close(a: list[dict], b: list[dict]) -> None:
    """Equal rows; a float may differ in its last bits (a mean summed in another order:
    a sliced GPU's mean slice utilisation, the fleet's mean)."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k, v in ra.items():
            assert v == (pytest.approx(rb[k], rel=1e-12) if isinstance(v, float) else rb[k]), k


@pytest.fixture(scope="module")
def fleet():
    # 2 s samples: the stale window holds many samples per GPU
    store, last = fixed_store(270.0, 2.0, faults=REFERENCE_FAULTS)
    yield store, last
    store.close()


def test_live_grid_equals_history_with_silent_host_and_missing_gpu(fleet):
    store, last = fleet
    cur = store.cursor()
    assert snapshot_state(cur, last, 30.0, *TABLES) is not None  # the live path is taken
    t = _same(cur, last)
    assert t.num_rows > 0
    assert any(t.column("host_stale").to_pylist())
    stale = t.column("host_stale").to_pylist()
    assert any(m and not s for m, s in zip(t.column("gpu_missing").to_pylist(), stale, strict=True))
    assert any(n > 0 for n in t.column("n_slices").to_pylist())
    for state in STATES:
        _same(cur, last, RackFilter(state=state))
    for spec in ("rack:nvl", "tenant:a", "model:h100", f"rack:{UNPLACED}", "n3", "host:zz"):
        _same(cur, last, RackFilter.parse(spec))
    # filled from an empty store, the snapshot covers any window; a cursor before its
    # newest sample reads history
    wide = views.rack_grid(cur, last, stale_s=600.0)
    _close(wide.to_pylist(), views.rack_grid(cur, last, stale_s=600.0, live=False).to_pylist())
    assert snapshot_state(cur, last - timedelta(seconds=5), 30.0, *TABLES) is None
    cur.close()


def test_live_drilldown_and_totals_equal_history(fleet):
    store, last = fleet
    cur = store.cursor()
    sliced = cur.execute(
        "SELECT g.host FROM slices s JOIN gpus g USING (gpu_uuid) ORDER BY 1 LIMIT 1"
    ).fetchone()[0]
    silent = views.rack_grid(cur, last, RackFilter(state="stale")).column("host")[0].as_py()
    for host in (sliced, silent, "nvl72-02-t03", "no-such-host"):
        live, hist = views.host_gpus(cur, host, last), views.host_gpus(cur, host, last, live=False)
        assert live.schema == hist.schema and live.to_pylist() == hist.to_pylist()
        live = views.host_slices(cur, host, last)
        hist = views.host_slices(cur, host, last, live=False)
        assert live.schema == hist.schema and live.to_pylist() == hist.to_pylist()
    assert views.host_slices(cur, sliced, last).num_rows > 0
    params = {"at": last, "stale_s": 30.0}
    live = run(cur, fleet_view.TOTALS_SQL_LIVE, params).to_pylist()
    _close(live, run(cur, fleet_view.TOTALS_SQL, params).to_pylist())
    assert live[0]["silent"] > 0 and live[0]["newest_ts"] == last
    cur.close()


def test_live_grid_on_null_and_hostless_rows():
    store = null_store()
    cur = store.cursor()
    assert snapshot_state(cur, AT, 30.0, *TABLES) is not None
    t = _same(cur, AT)
    assert [r["gpu_uuid"] for r in t.to_pylist()][-1] == "GPU-g0"
    _same(cur, AT, RackFilter.parse(f"rack:{UNPLACED}"))
    _same(cur, AT, RackFilter(state="stale"))
    params = {"at": AT, "stale_s": 30.0}
    live = run(cur, fleet_view.TOTALS_SQL_LIVE, params).to_pylist()
    _close(live, run(cur, fleet_view.TOTALS_SQL, params).to_pylist())
    for host in ("placed-1", "bare-1", "ghost-1"):
        assert views.host_gpus(cur, host, AT).to_pylist() == (
            views.host_gpus(cur, host, AT, live=False).to_pylist()
        )
    store.close()


def test_layout_change_is_seen_by_the_next_refresh(fleet):
    store, last = fleet
    cur = store.cursor()
    before = views.rack_grid(cur, last)
    host = before.column("host")[0].as_py()
    store.write([make_batch("hosts", {"host": [host], "rack": ["zz-rack-99"]})])
    store.publish_live()
    after = _same(cur, last)
    assert "zz-rack-99" in after.column("rack").to_pylist()
    cur.close()


def test_late_sample_never_replaces_a_newer_one():
    store = null_store()
    uuid = "GPU-p0"
    newest = views.rack_grid(store.cursor(), AT).to_pylist()[0]
    assert newest["gpu_uuid"] == uuid
    late = newest["sample_ts"] - timedelta(seconds=5)
    store.write(
        [
            make_batch(
                "gpu_samples",
                {"ts": [late], "host": ["placed-1"], "gpu_uuid": [uuid], "util_pct": [1.0]},
            )
        ]
    )
    store.publish_live()
    _same(store.cursor(), AT)
    assert views.rack_grid(store.cursor(), AT).to_pylist()[0]["util_pct"] == newest["util_pct"]
    store.close()


def test_empty_store_and_a_reopened_file(tmp_path):
    empty = Store.open(":memory:")
    assert snapshot_state(empty.cursor(), AT, 30.0, *TABLES) is not None
    assert _same(empty.cursor(), AT).num_rows == 0
    empty.close()
    path = tmp_path / "fleet.duckdb"
    store, last = fixed_store(200.0, 5.0, faults=REFERENCE_FAULTS, path=str(path))
    store.close()
    store = Store.open(path)  # the snapshot is rebuilt from the file's recent history
    cur = store.cursor()
    assert snapshot_state(cur, last, 30.0, *TABLES) is not None
    t = _same(cur, last)
    assert any(t.column("host_stale").to_pylist())
    # a stale window beyond what the snapshot was filled from reads history
    assert snapshot_state(cur, last, FILL_WINDOW_S + 60.0, *TABLES) is None
    cur.close()
    store.close()


def test_drilldown_rereads_history_once_the_cursor_moved_by_a_bucket(fleet):
    from fleettui.tui.screens.drilldown import DrilldownScreen
    from storage.reader import LocalReader

    store, last = fleet
    reader = LocalReader(store.con)
    host = views.rack_grid(reader, last).column("host")[0].as_py()
    screen = DrilldownScreen(host)
    at = last - timedelta(seconds=60)
    first = screen.fetch(reader, at).history
    assert first.num_rows > 0
    assert screen.fetch(reader, at + timedelta(seconds=10)).history is first  # same bucket
    later = screen.fetch(reader, at + timedelta(seconds=31)).history
    assert later is not first
    assert later.equals(views.gpu_history(reader, host, at + timedelta(seconds=31), buckets=120))
    assert screen.fetch(reader, at).history is not later  # the cursor went back


def test_rack_positions_give_each_hosts_layout_rows(fleet):
    """The alert badge's rows per host (a slice of one array, taken when asked)."""
    import numpy as np

    from storage.views.live import rack_layout, rack_positions

    store, last = fleet
    cur = store.cursor()
    version = snapshot_state(cur, last, 30.0, *TABLES)
    layout = rack_layout(cur, last, version.split("/", 1)[0])
    pos = rack_positions(cur, layout, version)
    hosts = np.array(layout.column("host").to_pylist(), dtype=object)
    assert len(set(hosts)) > 3
    for host in set(hosts):
        assert pos.host_rows(host).tolist() == np.flatnonzero(hosts == host).tolist()
    assert pos.host_rows("no-such-host") is None
    cur.close()
