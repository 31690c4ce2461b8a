"""What the demo shows is consistent: down links carry nothing, each fault event is
stored once, busy GPUs have processes, and quitting early leaves no thread in DuckDB."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta

import numpy as np

from collectors.sim.faults import REFERENCE_FAULTS
from collectors.sim.model import SimModel
from collectors.sim.source import SimSource, to_epoch
from fleettui.tui.demo import fill_history
from fleettui.tui.launch import BACKFILL_S, demo_sources
from storage.store import Store

START = datetime(2026, 11, 26, 12, 0, 0)


def test_a_down_link_carries_no_traffic():
    model = SimModel(faults=REFERENCE_FAULTS, period_s=None, start=to_epoch(START))
    f = model.fleet
    s = model.state(to_epoch(START) + 250)  # xid79 (NVLink) and ib_link_down both active
    down = ~s.link_up
    nvlink_down = down & (f.link_gpu_idx >= 0)
    assert nvlink_down.any() and (down & (f.link_gpu_idx < 0)).any()
    assert (s.link_tx_bytes_per_s[down] == 0).all() and (s.link_rx_bytes_per_s[down] == 0).all()
    assert (s.link_tx_bytes_per_s[s.link_up] > 0).mean() > 0.9  # up links still carry load


def test_demo_stores_each_fault_event_once(tmp_path):
    store = Store.open(tmp_path / "demo.duckdb")
    now = datetime(2026, 11, 26, 12, 10, 0, 400_000)
    demo = demo_sources(now)
    fill_history(store, demo.history, demo.start, BACKFILL_S, step_s=demo.step_s)
    for k in range(3):  # live samples from now on, as the runtime takes them
        store.write(demo.live.sample(now + timedelta(seconds=k)).batches)
    rows = (
        store.cursor()
        .execute(
            "SELECT ts, host, gpu_uuid, kind, code, detail, count(*) AS n FROM events GROUP BY ALL"
        )
        .fetchall()
    )
    assert len(rows) == 6  # the five faults that raise events (ECC: two) in the ten minutes
    assert [r for r in rows if r[-1] != 1] == []
    store.close()


def test_live_source_after_backfill_still_reports_events_after_the_history():
    demo = demo_sources(datetime(2026, 11, 26, 12, 0, 37))  # start 11:50:37, history to 12:00:32
    live = demo.live
    live.ensure_model(demo.start)
    # a fault at start+5 s is history's; nothing between history's last sample and now is lost
    got = live.sample(demo.start + timedelta(seconds=BACKFILL_S)).batches
    assert [b for b in got if b.table == "events"] == []
    later = SimSource(start=demo.start, events_after=demo.start + timedelta(seconds=4))
    events = [
        b for b in later.sample(demo.start + timedelta(seconds=6)).batches if b.table == "events"
    ]
    assert events and events[0].rows == 1  # the thermal fault at +5 s


def test_busy_gpus_and_slices_have_processes_idle_ones_none():
    src = SimSource(start=START, faults=REFERENCE_FAULTS, period_s=None)
    batches = {b.table: b for b in src.sample(START + timedelta(seconds=10)).batches}
    procs = batches["processes"].data
    gpus = batches["gpu_samples"].data
    assert procs.num_rows > 100
    util = dict(
        zip(gpus.column("gpu_uuid").to_pylist(), gpus.column("util_pct").to_pylist(), strict=True)
    )
    whole = [
        u
        for u, sl in zip(
            procs.column("gpu_uuid").to_pylist(), procs.column("slice_id").to_pylist(), strict=True
        )
        if sl is None
    ]
    assert whole and all(util[u] >= 5 for u in whole)
    idle = {u for u, v in util.items() if v is not None and v < 1}
    assert idle and not idle & set(whole)
    sliced = [s for s in procs.column("slice_id").to_pylist() if s]
    assert any("/gi" in s for s in sliced) and any("/f" in s for s in sliced)
    tenants = set(procs.column("tenant_guess").to_pylist()) - {None}
    assert "acme-llm" in tenants
    pids = procs.column("pid").to_numpy()
    assert len(np.unique(pids)) == len(pids)
    # listed every 5th gather, as the agent lists processes every few polls
    nxt = {b.table for b in src.sample(START + timedelta(seconds=11)).batches}
    assert "processes" not in nxt


def test_quitting_while_the_demo_back_fills_exits_cleanly(tmp_path):
    """The app quits while the back-fill and live collection write: both threads are
    stopped and joined before the store closes (a daemon thread left inside DuckDB at
    interpreter exit aborted the process, exit 134)."""
    script = textwrap.dedent(f"""
        import time
        from datetime import datetime
        from fleettui.background import BackgroundRuntime
        from fleettui.tui.demo import fill_history
        from fleettui.tui.launch import BACKFILL_S, demo_sources, open_app_store
        store = open_app_store({str(tmp_path / "q.duckdb")!r})
        demo = demo_sources(datetime(2026, 11, 26, 12, 0, 0), scale=4)
        def backfill(stop):
            fill_history(store, demo.history, demo.start, BACKFILL_S, step_s=1.0, stop=stop)
        c = BackgroundRuntime(store, [demo.live], backfill=backfill)
        c.start()
        time.sleep(0.5)
        c.stop()
        import threading
        alive = [t.name for t in threading.enumerate() if t.name.startswith("fleettui-")]
        store.close()
        print("alive", alive)
    """)
    for _ in range(3):
        res = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr[-500:]
        assert "alive []" in res.stdout


def test_demo_backfill_evaluates_alerts_so_the_past_shows_what_was_firing(tmp_path):
    import threading

    from fleettui.alerts.engine import AlertEngine
    from fleettui.config import Config
    from fleettui.daemon import build_tasks
    from fleettui.tui.launch import demo_backfill
    from storage.views import fleet_totals

    store = Store.open(tmp_path / "demo.duckdb")
    now = datetime(2026, 11, 26, 12, 10, 0)
    demo = demo_sources(now)
    engine = next(t for t in build_tasks(Config(), store) if isinstance(t, AlertEngine))
    done = threading.Event()
    demo_backfill(store, demo, engine, done)(threading.Event())
    assert done.is_set()
    past = demo.start + timedelta(minutes=9)
    firing = fleet_totals(store.con, past)["alerts_firing"]
    assert firing >= 3  # the Xid 79, the link down, the thermal throttle at least
    assert fleet_totals(store.con, demo.start + timedelta(seconds=5))["alerts_firing"] == 0
    store.close()
