"""The fabric and tenants views from the writer's window state (storage/live_window.py)
return the rows of their one-statement history path on the same data: the faulted
simulated fleet (NVLink CRC errors, an InfiniBand port down, a silent host) sampled
off the second, at cursors from the newest sample to past the window, with late
rows and NULL values, a store reopened from its file, and a
cursor in the past (history)."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

import storage.live as live_mod
from collectors.sim.faults import REFERENCE_FAULTS
from fleettui.tui.demo import fixed_store
from storage import views
from storage.batch import make_batch
from storage.store import Store
from storage.views.fabric import ALL_LINKS_SQL, _links_live, links_live
from storage.views.query import run
from storage.views.tenants import _alloc_history, _alloc_live
from tests.test_views_nulls import AT, null_store

TS = pa.timestamp("us")
# from the newest sample to past the 10 s and 30 s windows, off the slot boundaries
OFFSETS_S = (0.0, 0.35, 1.0, 4.2, 9.99, 10.0, 17.5, 29.9, 30.5)


def _approx(rows: list[dict]) -> list[dict]:
    """Floats to the last bits: a mean summed in another order (cumulative sums, a
    rack's links in another order)."""
    return [
        {k: pytest.approx(v, rel=1e-9) if isinstance(v, float) else v for k, v in r.items()}
        for r in _nan(rows)
    ]


def _nan(rows: list[dict]) -> list[dict]:
    """NaN as a word: NaN equals nothing, itself included."""
    return [{k: "NaN" if v != v else v for k, v in r.items()} for r in rows]


def _key(r: dict) -> tuple:
    return (r["host"], r["kind"], r["port"])


def _same_fabric(cur, at, window_s: float) -> pa.Table:
    live = links_live(cur, at, window_s)
    assert live is not None  # the live path is taken
    hist = run(cur, ALL_LINKS_SQL, {"at": at, "window_s": window_s})
    assert live.schema == hist.schema
    assert _nan(sorted(live.to_pylist(), key=_key)) == _nan(sorted(hist.to_pylist(), key=_key))
    a = views.fabric(cur, at, window_s=window_s, limit=40, rack_limit=50)
    b = views.fabric(cur, at, window_s=window_s, limit=40, rack_limit=50, live=False)
    assert (a.links_total, a.links_down) == (b.links_total, b.links_down)
    assert a.links.schema == b.links.schema and a.racks.schema == b.racks.schema
    assert _nan(a.links.to_pylist()) == _nan(b.links.to_pylist())
    assert _approx(a.racks.to_pylist()) == _nan(b.racks.to_pylist())
    for kind in ("ib", "nvlink"):  # the screen's link kind filter
        a = views.fabric(cur, at, window_s=window_s, kind=kind, limit=25)
        b = views.fabric(cur, at, window_s=window_s, kind=kind, limit=25, live=False)
        assert _nan(a.links.to_pylist()) == _nan(b.links.to_pylist())
    return live


def _same_tenants(cur, at) -> pa.Table:
    assert _alloc_live(cur, at, 30.0) is not None  # the live path is taken
    a = views.tenant_summary(cur, at)
    # the history path (per-key sums, cached placement) and the one statement
    assert _alloc_history(cur, at, 30.0) is not None
    b = views.tenant_summary(cur, at, live=False)
    c = views.tenant_summary(cur, at, one_statement=True)
    assert a.schema == b.schema == c.schema
    assert _approx(a.to_pylist()) == c.to_pylist()
    assert _approx(b.to_pylist()) == c.to_pylist()
    return a


@pytest.fixture(scope="module")
def fleet():
    # 0.7 s samples: several rows of a key in one 1 s slot, times off the second
    store, last = fixed_store(150.0, 0.7, faults=REFERENCE_FAULTS)
    yield store, last
    store.close()


def test_fabric_from_the_window_state_equals_history(fleet):
    store, last = fleet
    cur = store.cursor()
    seen_err = seen_down = 0
    for dt in OFFSETS_S:
        at = last + timedelta(seconds=dt)
        for window_s in (10.0, 30.0):
            links = _same_fabric(cur, at, window_s).to_pylist()
            seen_err += sum(1 for r in links if r["errors_per_s"])
            seen_down += sum(r["down_samples"] for r in links)
    assert seen_err and seen_down  # the faults were compared
    cur.close()


def test_fabric_with_every_link_reporting_and_nan_rates():
    """Every link in the window (as at 100k GPUs): the rack codes come with the link
    layout, computed once per layout. A NaN rate makes NaN utilisation, which DuckDB
    orders above every number (worst links and racks), and a NaN rack maximum."""
    store, last = fixed_store(30.0, 1.0, faults=())
    cur = store.cursor()
    got = _links_live(cur, last, 10.0)
    assert got is not None and got[1] is not None  # the layout's codes
    _same_fabric(cur, last, 10.0)
    newer = (
        cur.execute(
            "SELECT * EXCLUDE (ts), ts + INTERVAL 1 SECOND AS ts FROM link_samples WHERE ts = $t "
            "ORDER BY host, kind, port",
            {"t": last},
        )
        .to_arrow_table()
        .to_pydict()
    )
    # quiet links (no NaN anywhere would rank first): one NVLink and one NIC of
    # another rack with a NaN rate
    for i in (len(newer["host"]) // 3, 2 * len(newer["host"]) // 3):
        newer["tx_bytes_per_s"][i] = float("nan")
    store.write([make_batch("link_samples", newer)])
    store.publish_live()
    at = last + timedelta(seconds=1)
    got = _links_live(cur, at, 10.0)
    assert got is not None and got[1] is not None
    _same_fabric(cur, at, 10.0)
    worst = views.fabric(cur, at, window_s=10.0, limit=5, rack_limit=5)
    assert sum(1 for r in worst.links.to_pylist() if r["util_pct"] != r["util_pct"]) == 2
    assert any(r["max_util_pct"] != r["max_util_pct"] for r in worst.racks.to_pylist())
    # a host moved to a new rack: a new layout, its codes computed again
    host = newer["host"][0]
    store.write([make_batch("hosts", {"host": [host], "rack": ["moved-rack"]})])
    newer["ts"] = [t + timedelta(seconds=1) for t in newer["ts"]]
    store.write([make_batch("link_samples", newer)])
    store.publish_live()
    at += timedelta(seconds=1)
    got = _links_live(cur, at, 10.0)
    assert got is not None and got[1] is not None
    _same_fabric(cur, at, 10.0)
    racks = views.fabric(cur, at, window_s=10.0).racks.column("rack").to_pylist()
    assert "moved-rack" in racks
    cur.close()
    store.close()


def test_tenants_from_the_window_sums_equal_history(fleet):
    store, last = fleet
    cur = store.cursor()
    for dt in OFFSETS_S:
        rows = _same_tenants(cur, last + timedelta(seconds=dt)).to_pylist()
        assert rows and any(r["util_mean_pct"] is not None for r in rows) == (dt < 30.0)
    cur.close()


def test_late_rows_and_null_values(fleet):
    store, last = fleet
    cur = store.cursor()
    host, port = cur.execute(
        "SELECT host, port FROM link_samples WHERE kind = 'ib' ORDER BY host, port LIMIT 1"
    ).fetchone()
    gpu, ghost = cur.execute(
        "SELECT gpu_uuid, host FROM assignments JOIN gpus USING (gpu_uuid) "
        "WHERE slice_id IS NULL ORDER BY gpu_uuid LIMIT 1"
    ).fetchone()
    late = last - timedelta(seconds=6.3)
    store.write(
        [
            make_batch(
                "link_samples",
                {
                    # a late row with errors and down; a newer row with every value NULL
                    "ts": pa.array([late, last], TS),
                    "host": [host, host],
                    "kind": ["ib", "ib"],
                    "port": [port, port],
                    "errors": pa.array([7, None], pa.int64()),
                    "link_up": pa.array([False, None]),
                    "tx_bytes_per_s": pa.array([1e9, None], pa.float64()),
                },
            ),
            make_batch(
                "gpu_samples",
                {
                    "ts": pa.array([late, last - timedelta(seconds=29.5)], TS),
                    "host": [ghost, ghost],
                    "gpu_uuid": [gpu, gpu],
                    "util_pct": pa.array([0.0, 100.0], pa.float64()),
                    "mem_used_bytes": pa.array([None, 5], pa.int64()),
                },
            ),
        ]
    )
    store.publish_live()
    for dt in (0.0, 0.4, 5.0, 23.8):
        at = last + timedelta(seconds=dt)
        links = {_key(r): r for r in _same_fabric(cur, at, 10.0).to_pylist()}
        _same_fabric(cur, at, 30.0)
        _same_tenants(cur, at)
        if dt == 0.0:  # the newest row is all NULL: each column's newest non-NULL value
            assert links[(host, "ib", port)]["link_up"] is not None
    cur.close()


def test_null_rows_a_reopened_file_and_a_cursor_in_the_past(tmp_path, monkeypatch):
    store = null_store()
    cur = store.cursor()
    assert _same_fabric(cur, AT, 10.0).num_rows == 2
    _same_tenants(cur, AT)
    store.close()
    path = tmp_path / "fleet.duckdb"
    store, last = fixed_store(90.0, 2.0, faults=REFERENCE_FAULTS, path=str(path))
    store.close()
    # the state claims only the span of history it read on open: a short span (the
    # default, FILL_SPAN_S) leaves 30 s windows to history until time covers them
    store = Store.open(path)
    cur = store.cursor()
    assert links_live(cur, last, 10.0) is not None
    assert _alloc_live(cur, last, live_mod.FILL_SPAN_S - 1.0) is not None
    assert _alloc_live(cur, last, 30.0) is None
    assert _approx(views.tenant_summary(cur, last).to_pylist()) == _approx(
        views.tenant_summary(cur, last, live=False).to_pylist()
    )
    cur.close()
    store.close()
    monkeypatch.setattr(live_mod, "FILL_SPAN_S", 60.0)
    store = Store.open(path)  # the window state rebuilt from 60 s of the file's history
    cur = store.cursor()
    # and folds what comes next into it (the state built from history is writable)
    newer = cur.execute(
        "SELECT * EXCLUDE (ts), ts + INTERVAL 1 SECOND AS ts FROM link_samples WHERE ts = $t",
        {"t": last},
    ).to_arrow_table()
    more = cur.execute(
        "SELECT * EXCLUDE (ts), ts + INTERVAL 1 SECOND AS ts FROM gpu_samples WHERE ts = $t",
        {"t": last},
    ).to_arrow_table()
    store.write(
        [
            make_batch("link_samples", newer.to_pydict()),
            make_batch("gpu_samples", more.to_pydict()),
        ]
    )
    store.publish_live()
    assert store.live is not None
    last += timedelta(seconds=1)
    for dt in (0.0, 3.0, 12.0):
        _same_fabric(cur, last + timedelta(seconds=dt), 10.0)
        _same_tenants(cur, last + timedelta(seconds=dt))
    # before the newest sample, or a window the state does not keep: history
    past = last - timedelta(seconds=5)
    assert links_live(cur, past, 10.0) is None and _alloc_live(cur, past, 30.0) is None
    assert _alloc_live(cur, last, 60.0) is None
    a = views.tenant_summary(cur, past).to_pylist()
    assert _approx(a) == views.tenant_summary(cur, past, one_statement=True).to_pylist()
    racks = views.fabric(cur, past).racks.to_pylist()  # (history both: sums in any order)
    assert _approx(racks) == views.fabric(cur, past, live=False).racks.to_pylist()
    cur.close()
    store.close()


# The tenants' alert count as it was (one join on OR over every assignment's host).
_ALERTS_OR_JOIN = """
SELECT t.tenant, count(DISTINCT (f.rule, f.scope_key)) AS firing
FROM ({firing}) f
JOIN (
    SELECT tenant, tenant AS key FROM tenants
    UNION ALL SELECT tenant, endpoint FROM endpoints
    UNION ALL SELECT DISTINCT a.tenant, g.host FROM assignments a JOIN gpus g USING (gpu_uuid)
        WHERE a.valid_from <= $at AND (a.valid_to IS NULL OR a.valid_to > $at)
) t ON t.key = f.scope_key OR t.key = f.host
GROUP BY t.tenant
"""


def test_tenant_alert_counts_equal_the_join_on_or(fleet):
    import json

    from storage.views.alerts import firing_sql
    from storage.views.tenants import _TENANT_ALERTS

    store, last = fleet
    cur = store.cursor()
    (tenant,) = cur.execute("SELECT min(tenant) FROM tenants").fetchone()
    (endpoint,) = cur.execute("SELECT min(endpoint) FROM endpoints").fetchone()
    host, gpu = cur.execute(
        "SELECT g.host, g.gpu_uuid FROM assignments JOIN gpus g USING (gpu_uuid) ORDER BY 1 LIMIT 1"
    ).fetchone()
    alerts = [
        ("host", host),
        ("host", host),
        ("gpu", gpu),
        ("tenant", tenant),
        ("endpoint", endpoint),
        ("host", "no-such-host"),
    ]
    rows = [
        {
            "alert_id": f"a{i}",
            "rule": f"r{i % 5}",
            "scope": scope,
            "scope_key": key,
            "severity": "warning",
            "state": "firing",
            "started_at": last - timedelta(seconds=60),
            "fired_at": last - timedelta(seconds=30),
            "resolved_at": None,
            "last_active_at": last,
            "evaluated_at": last,
            "peak_value": None,
            "last_value": None,
            "threshold": None,
            "labels": json.dumps({"host": host} if scope == "gpu" else {}),
            "annotations": json.dumps({}),
        }
        for i, (scope, key) in enumerate(alerts)
    ]
    store.write([make_batch("alerts", {k: [r[k] for r in rows] for k in rows[0]})])
    firing = firing_sql(cur)
    sort = " ORDER BY tenant"
    new = run(cur, _TENANT_ALERTS.format(firing=firing) + sort, {"at": last}).to_pylist()
    old = run(cur, _ALERTS_OR_JOIN.format(firing=firing) + sort, {"at": last}).to_pylist()
    assert new == old and sum(r["firing"] for r in new) >= 3
    _same_tenants(cur, last)

    # The summary skips the count while nothing fires (its own cheaper count): at,
    # just before and after each bound (fired, resolved), both paths equal the join.
    resolved = {
        **rows[3],
        "alert_id": "gone",
        "rule": "r9",
        "resolved_at": last - timedelta(seconds=10),
    }
    store.write([make_batch("alerts", {k: [resolved[k]] for k in resolved})])

    def join_counts(at):
        got = run(cur, _TENANT_ALERTS.format(firing=firing), {"at": at}).to_pylist()
        return {r["tenant"]: r["firing"] for r in got}

    eps = timedelta(microseconds=1)
    fired, gone = last - timedelta(seconds=30), last - timedelta(seconds=10)
    for at in (fired - eps, fired, gone - eps, gone, last):
        want = join_counts(at)
        for live in (True, False):
            got = views.tenant_summary(cur, at, live=live).to_pylist()
            assert {r["tenant"]: r["alerts_firing"] for r in got if r["alerts_firing"]} == want
    assert not join_counts(fired - eps) and join_counts(fired)
    assert join_counts(gone - eps)[tenant] == join_counts(gone)[tenant] + 1
    cur.close()


@pytest.mark.integration
@pytest.mark.slow
def test_fabric_and_tenants_through_the_daemon_equal_history(sim_daemon):
    """Over Quack, the window state the daemon publishes gives the history path's rows."""
    import time

    from fleettui.sql_cli import open_reader
    from storage.reader import QuackReader

    reader = open_reader(str(sim_daemon.db), None, None)
    assert isinstance(reader, QuackReader)
    state = "SELECT sample_table, through, keys_version, gen FROM fleettui_live.snapshot ORDER BY 1"
    try:
        deadline = time.monotonic() + 90
        compared = 0
        while time.monotonic() < deadline and compared < 2:
            before = reader.arrow(state).to_pylist()
            through = {r["sample_table"]: r["through"] for r in before}
            if None in through.values() or len(through) < 3:
                time.sleep(0.3)
                continue
            at = max(through.values())
            links = links_live(reader, at, 10.0)
            alloc = _alloc_live(reader, at, 30.0)
            fab = views.fabric(reader, at, window_s=10.0)
            fab_h = views.fabric(reader, at, window_s=10.0, live=False)
            ten = views.tenant_summary(reader, at)
            ten_h = views.tenant_summary(reader, at, live=False)
            if reader.arrow(state).to_pylist() != before or links is None or alloc is None:
                time.sleep(0.3)  # published meanwhile: not the same data
                continue
            assert fab.links_total > 0 and fab.links_total == fab_h.links_total
            assert fab.links.to_pylist() == fab_h.links.to_pylist()
            assert _approx(fab.racks.to_pylist()) == fab_h.racks.to_pylist()
            assert ten.num_rows > 0 and _approx(ten.to_pylist()) == ten_h.to_pylist()
            compared += 1
            time.sleep(1.5)
        assert compared == 2, "the daemon's window state was never readable over Quack"
    finally:
        reader.close()


def test_tenant_chart_is_read_again_after_a_bucket_or_a_minute(fleet):
    from fleettui.tui.screens.tenants import CHART_BUCKETS, CHART_REREAD_S, TenantsScreen
    from storage.reader import LocalReader

    store, last = fleet
    reader = LocalReader(store.con)
    screen = TenantsScreen()
    _, tenant, _, first = screen.fetch(reader, last)
    assert first.num_rows > 0
    assert screen.fetch(reader, last + timedelta(seconds=20))[3] is first  # within a minute
    at = last + timedelta(seconds=CHART_REREAD_S + 1)
    later = screen.fetch(reader, at)[3]
    assert later is not first
    assert later.equals(
        views.tenant_history(reader, tenant, at, window_s=30 * 86400.0, buckets=CHART_BUCKETS)[1]
    )
    assert screen.fetch(reader, last)[3] is not later  # the cursor went back
    screen.chart = 0  # one hour: 30 s buckets
    hour = screen.fetch(reader, last)[3]
    assert screen.fetch(reader, last + timedelta(seconds=29))[3] is hour
    assert screen.fetch(reader, last + timedelta(seconds=31))[3] is not hour
