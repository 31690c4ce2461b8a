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
from storage.views import RackFilter
from storage.views.live import snapshot_state
from storage.views.rack import STATES, UNPLACED
from tests.test_views_nulls import AT, null_store

TABLES = ("gpu_samples", "slice_samples")


def _same(src, at, flt=None):
    live = views.rack_grid(src, at, flt)
    hist = views.rack_grid(src, at, flt, live=False)
    assert live.schema == hist.schema
    assert live.to_pylist() == hist.to_pylist()
    return live


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
    assert wide.to_pylist() == views.rack_grid(cur, last, stale_s=600.0, live=False).to_pylist()
    assert snapshot_state(cur, last - timedelta(seconds=5), 30.0, *TABLES) is None
    cur.close()


def test_live_grid_on_null_and_hostless_rows():
    store = null_store()
    cur = store.cursor()
    assert snapshot_state(cur, AT, 30.0, *TABLES) is not None
    t = _same(cur, AT)
    assert [r["gpu_uuid"] for r in t.to_pylist()][-1] == "GPU-g0"
    _same(cur, AT, RackFilter.parse(f"rack:{UNPLACED}"))
    _same(cur, AT, RackFilter(state="stale"))
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
