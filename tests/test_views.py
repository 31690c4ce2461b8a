"""The view queries (storage/views) over the simulated fleet at a fixed seed and clock.

Expected values come from the simulation's own topology and fault schedule, so
each check would fail if a query miscounted, mis-joined or ignored the cursor.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import numpy as np
import pytest

from collectors.sim.topology import TENANTS, build_fleet
from fleettui.tui.demo import FIXED_START
from storage import views
from storage.views import RackFilter
from tests.tui_support import FAULTS, START_S, fleet_store, write_alerts

FLEET = build_fleet(seed=7, scale=1)


@pytest.fixture(scope="module")
def db():
    store, last = fleet_store()
    cur = store.cursor()
    yield cur, last
    cur.close()


def at_s(seconds: float):
    return FIXED_START + timedelta(seconds=seconds)


def test_rack_grid_has_every_gpu_in_rack_order(db):
    cur, last = db
    t = views.rack_grid(cur, last)
    assert t.num_rows == FLEET.n_gpus
    keys = list(
        zip(
            t.column("rack").to_pylist(),
            t.column("rack_slot").to_pylist(),
            t.column("host").to_pylist(),
            t.column("gpu_index").to_pylist(),
            strict=True,
        )
    )
    assert keys == sorted(keys)
    assert set(t.column("gpu_uuid").to_pylist()) == set(FLEET.gpu_uuid)


def test_rack_grid_marks_silent_host_and_missing_gpu(db):
    cur, last = db
    rows = views.rack_grid(cur, last).to_pylist()
    stale = {r["host"] for r in rows if r["host_stale"]}
    assert stale == {"hgx-04-n3"}  # host_silent fault
    missing = {
        (r["host"], r["gpu_index"]) for r in rows if r["gpu_missing"] and not r["host_stale"]
    }
    assert missing == {("nvl72-02-t03", 1)}  # Xid 79
    # before the faults started, nothing was stale or missing
    early = views.rack_grid(cur, at_s(START_S["xid79"] - 5)).to_pylist()
    assert not any(r["gpu_missing"] for r in early)


def test_rack_grid_slices_and_errors(db):
    cur, last = db
    rows = {r["gpu_uuid"]: r for r in views.rack_grid(cur, last).to_pylist()}
    per_gpu = np.bincount(FLEET.slice_gpu_idx, minlength=FLEET.n_gpus)
    for g, uuid in enumerate(FLEET.gpu_uuid):
        assert rows[uuid]["n_slices"] == per_gpu[g]
    ecc_gpu = next(r for r in rows.values() if r["host"] == "hgx-03-n4" and r["gpu_index"] == 6)
    assert ecc_gpu["errors"] > 0
    errors = views.rack_grid(cur, last, RackFilter(state="error"))
    assert ecc_gpu["gpu_uuid"] in errors.column("gpu_uuid").to_pylist()
    before = views.rack_grid(cur, at_s(START_S["ecc_dbe"] - 5), RackFilter(state="error"))
    assert ecc_gpu["gpu_uuid"] not in before.column("gpu_uuid").to_pylist()


def test_rack_filters_run_in_sql(db):
    cur, last = db
    acme = views.rack_grid(cur, last, RackFilter.parse("tenant:acme"))
    assert acme.num_rows == int((FLEET.gpu_tenant == FLEET.tenant_index("acme-llm")).sum())
    hgx5 = views.rack_grid(cur, last, RackFilter.parse("rack:hgx-05 state:busy"))
    assert set(hgx5.column("rack").to_pylist()) == {"hgx-05"}
    stale = views.rack_grid(cur, last, RackFilter.parse("state:stale"))
    assert set(stale.column("host").to_pylist()) == {"hgx-04-n3"}
    free = views.rack_grid(cur, last, RackFilter.parse("state:free"))
    assert all(a == 0 for a in free.column("allocated").to_pylist())
    with pytest.raises(ValueError, match="state filter"):
        views.rack_grid(cur, last, RackFilter(state="bogus"))


def test_fleet_totals_add_up_and_follow_the_cursor(db):
    cur, last = db
    tot = views.fleet_totals(cur, last)
    assert tot["gpus"] == FLEET.n_gpus
    assert tot["silent"] == 8 + 1  # the silent host's 8 GPUs and the Xid 79 GPU
    assert tot["busy"] + tot["idle"] + tot["silent"] == tot["gpus"]
    assert tot["data_age_s"] == 0
    assert tot["alerts_firing"] == 0  # the alert engine's table, empty here
    later = views.fleet_totals(cur, last + timedelta(seconds=45))
    assert later["data_age_s"] == 45 and later["silent"] == FLEET.n_gpus


def test_fabric_links_worst_first(db):
    cur, last = db
    links = views.fabric_links(cur, last).to_pylist()
    down = [(r["host"], r["port"]) for r in links if not r["link_up"]]
    assert ("hgx-04-n1", "mlx5_3/1") in down  # ib_link_down
    assert all(not r["link_up"] for r in links[: len(down)])
    erroring = links[len(down)]
    assert (erroring["host"], erroring["port"]) == ("nvl72-01-t05", "nvlink-gpu2")
    assert erroring["errors_per_s"] > 0 and erroring["tenants"] == "acme-llm"
    utils = [r["util_pct"] for r in links[len(down) + 1 :] if r["errors_per_s"] == 0]
    assert utils == sorted(utils, reverse=True)
    ib_down = views.fabric_links(cur, last, kind="ib").to_pylist()[0]
    assert ib_down["kind"] == "ib" and not ib_down["link_up"]
    assert ib_down["tenants"] == "nimbus-search"
    before = views.fabric_links(cur, at_s(START_S["ib_link_down"] - 5)).to_pylist()
    assert ("hgx-04-n1", "mlx5_3/1") not in [
        (r["host"], r["port"]) for r in before if not r["link_up"]
    ]
    racks = {r["rack"]: r for r in views.fabric_racks(cur, last).to_pylist()}
    assert racks["hgx-04"]["links_down"] == 1 and racks["nvl72-01"]["errors_per_s"] > 0


def test_tenant_summary_counts_fractions_and_hours(db):
    cur, last = db
    summary = views.tenant_summary(cur, last, hours_window_s=3600)
    rows = {r["tenant"]: r for r in summary.to_pylist()}
    assert set(rows) == {t[0] for t in TENANTS}
    for tenant in rows:
        ti = FLEET.tenant_index(tenant)
        whole = int((FLEET.gpu_tenant == ti).sum())
        frac = float(FLEET.slice_fraction[FLEET.slice_tenant == ti].sum())
        assert rows[tenant]["gpus"] == pytest.approx(whole + frac)
        assert rows[tenant]["slices"] == int((FLEET.slice_tenant == ti).sum())
        # assignments start with the fleet at FIXED_START: held for `last - start` seconds
        held_h = (last - FIXED_START).total_seconds() / 3600
        assert rows[tenant]["gpu_hours"] == pytest.approx((whole + frac) * held_h)
    # idle_allocation fault on internal-eval: its allocations sit idle
    assert rows["internal-eval"]["idle_allocations"] > 0
    assert rows["acme-llm"]["idle_allocations"] == 0
    # traffic surge on quanta-risk pushes ITL p99 past its target
    q = rows["quanta-trade"]
    assert q["itl_p99_ms"] > q["itl_target_ms"] and q["endpoints_over_target"] == 1
    assert rows["nimbus-search"]["itl_p99_ms"] < rows["nimbus-search"]["itl_target_ms"]
    assert rows["acme-llm"]["util_p95_pct"] >= rows["acme-llm"]["util_mean_pct"] - 5


def test_drilldown_queries(db):
    cur, last = db
    gpus = views.host_gpus(cur, "hgx-03-n4", last)
    assert gpus.column("gpu_index").to_pylist() == list(range(8))
    hist = views.gpu_history(cur, "hgx-03-n4", last, window_s=300, buckets=10)
    assert set(hist.column("bucket").to_pylist()) <= set(range(10))
    assert len(set(hist.column("gpu_uuid").to_pylist())) == 8
    events = views.host_events(cur, "hgx-03-n4", last).to_pylist()
    assert events and events[0]["gpu_index"] == 6
    assert views.host_events(cur, "hgx-03-n4", at_s(START_S["ecc_dbe"] - 5)).num_rows == 0
    slices = views.host_slices(cur, "rtx-07-n3", last)
    assert slices.num_rows == int(
        np.isin(
            FLEET.slice_gpu_idx,
            np.flatnonzero(np.array(FLEET.gpu_host_idx) == FLEET.host.index("rtx-07-n3")),
        ).sum()
    )
    assert all(t is not None for t in slices.column("tenant").to_pylist())
    procs = views.host_processes(cur, "hgx-03-n4", last)  # the simulated agent's listing
    assert procs.num_rows == 8 and set(procs.column("source").to_pylist()) == {"sim"}


def test_processes_and_alerts_at_the_cursor():
    from fleettui.tui.demo import fixed_store
    from storage.batch import make_batch

    store, last = fixed_store(60.0, 10.0, faults=FAULTS)
    cur = store.cursor()
    cur.execute("DELETE FROM process_listings")  # only the listings written below
    assert views.alert_list(cur, last).num_rows == 0 and views.alerts_available(cur)
    uuid = cur.execute(
        "SELECT gpu_uuid FROM gpus WHERE host = 'hgx-03-n1' AND gpu_index = 0"
    ).fetchone()[0]
    s = timedelta(seconds=1)
    store.write(
        [
            make_batch(
                "processes",
                {
                    "ts": [last, last - 5 * s],
                    "host": ["hgx-03-n1"] * 2,
                    "gpu_uuid": [uuid] * 2,
                    "pid": [4242, 17],
                    "used_mem_bytes": [1000, 5],
                },
            )
        ]
    )
    procs = views.host_processes(cur, "hgx-03-n1", last)
    assert procs.column("pid").to_pylist() == [4242]  # only the newest listing
    write_alerts(
        store,
        [
            {
                "rule": "gpu_xid",
                "scope": "gpu",
                "scope_key": uuid,
                "severity": "critical",
                "started_at": last - 30 * s,
                "fired_at": last - 20 * s,
                "last_value": 79.0,
                "summary": "Xid 79",
            },
            {
                "rule": "host_stale",
                "scope": "host",
                "scope_key": "hgx-04-n3",
                "severity": "warning",
                "state": "resolved",
                "started_at": last - 50 * s,
                "fired_at": last - 40 * s,
                "resolved_at": last - 10 * s,
                "peak_value": 40.0,
            },
            {
                "rule": "itl_p99",
                "scope": "endpoint",
                "scope_key": "quanta-risk",
                "severity": "warning",
                "started_at": last - 5 * s,
            },
            # pending, then back to inactive before firing: never listed
            {
                "rule": "blip",
                "scope": "host",
                "scope_key": "hgx-03-n2",
                "severity": "warning",
                "state": "inactive",
                "started_at": last - 45 * s,
                "resolved_at": last - 44 * s,
            },
        ],
    )
    alerts = views.alert_list(cur, last).to_pylist()
    assert [a["state"] for a in alerts] == ["firing", "pending", "resolved"]
    assert alerts[0]["host"] == "hgx-03-n1" and alerts[0]["gpu_index"] == 0
    assert alerts[0]["duration_s"] == 20 and alerts[0]["summary"] == "Xid 79"
    assert alerts[0]["value"] == 79.0 and alerts[0]["muted_by"] is None
    # at an earlier cursor the resolved alert was still firing and the others not yet started
    earlier = views.alert_list(cur, last - 35 * s).to_pylist()
    assert [(a["rule"], a["state"]) for a in earlier] == [("host_stale", "firing")]
    blip = views.alert_list(cur, last - 44.5 * s).to_pylist()
    assert [(a["rule"], a["state"], a["duration_s"]) for a in blip] == [
        ("blip", "pending", 0),
        ("host_stale", "pending", 5),
    ]
    assert views.firing_by_host(cur, last).to_pylist() == [{"host": "hgx-03-n1", "firing": 1}]
    assert views.fleet_totals(cur, last)["alerts_firing"] == 1
    # the header's count (firing_count_sql, no host joins) is the list's firing rows, at
    # cursors where each alert is pending, firing, resolved or inactive
    for back_s in (0, 10, 30, 35, 44.5, 60):
        at = last - back_s * s
        firing = [a for a in views.alert_list(cur, at).to_pylist() if a["state"] == "firing"]
        assert views.fleet_totals(cur, at)["alerts_firing"] == len(firing), back_s
    # an acknowledgement, as the engine's API stores it, shows who and until when
    from fleettui.alerts.silences import acknowledge

    acknowledge(store, alerts[0]["alert_id"], by="alice", until=last + 3600 * s, now=last - s)
    muted = views.alert_list(cur, last).to_pylist()[0]
    assert (muted["muted_kind"], muted["muted_by"]) == ("ack", "alice")
    grid = views.rack_grid(cur, last, RackFilter(state="alert"))
    assert set(grid.column("host").to_pylist()) == {"hgx-03-n1"}
    tenants = {r["tenant"]: r["alerts_firing"] for r in views.tenant_summary(cur, last).to_pylist()}
    assert tenants["nimbus-search"] == 1 and tenants["acme-llm"] == 0
    cur.close()
    store.close()


def test_views_do_not_import_textual():
    code = (
        "import sys, storage.views; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_view_reads_the_same_through_a_quack_reader():
    """The views' SQL runs unchanged on a daemon (positional parameters, inlined)."""
    from fleettui.tui.demo import fixed_store
    from storage import quack
    from storage.reader import LocalReader, QuackReader

    store, last = fixed_store(300.0, 20.0, faults=FAULTS)
    endpoint = quack.serve(store.con, "127.0.0.1", 0, "test-token")
    remote = QuackReader(endpoint, "test-token")
    local = LocalReader(store.con, "local")
    calls = {
        "rack": lambda r: views.rack_grid(r, last, RackFilter.parse("rack:hgx state:busy")),
        "fabric": lambda r: views.fabric_links(r, last, kind="ib", limit=50),
        "fabric_racks": lambda r: views.fabric_racks(r, last),
        "tenants": lambda r: views.tenant_summary(r, last),
        "alerts": lambda r: views.alert_list(r, last),
        "gpus": lambda r: views.host_gpus(r, "hgx-03-n1", last),
        "history": lambda r: views.gpu_history(r, "hgx-03-n1", last),
        "slices": lambda r: views.host_slices(r, "rtx-07-n1", last),
        "events": lambda r: views.host_events(r, "nvl72-02-t03", last),
    }
    try:
        for name, call in calls.items():
            here, there = call(local), call(remote)
            assert there.num_rows == here.num_rows > 0 or name == "alerts", name
            assert _rounded(there.to_pylist()) == _rounded(here.to_pylist()), name
        assert _rounded(views.fleet_totals(remote, last)) == _rounded(
            views.fleet_totals(local, last)
        )
    finally:
        remote.close()
        store.close()


def _rounded(value):
    """Floats to 9 significant digits: parallel sums differ in the last bits."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def test_racks_come_in_natural_order():
    from storage.batch import make_batch
    from storage.store import Store

    store = Store.open(":memory:")
    racks = ["r-10", "r-9", "r-100", "a-2"]
    store.write(
        [
            make_batch(
                "hosts",
                {
                    "host": [f"{r}-n1" for r in racks],
                    "rack": racks,
                    "rack_slot": [1] * 4,
                    "first_seen": [FIXED_START] * 4,
                },
            ),
            make_batch(
                "gpus",
                {
                    "gpu_uuid": [f"GPU-{r}" for r in racks],
                    "host": [f"{r}-n1" for r in racks],
                    "gpu_index": [0] * 4,
                },
            ),
        ]
    )
    grid = views.rack_grid(store.cursor(), at_s(10))
    assert grid.column("rack").to_pylist() == ["a-2", "r-9", "r-10", "r-100"]
    assert "rack_key" not in grid.column_names
    store.close()
