"""The live snapshot filled in a thread on open (`Store.open(live_background=True)`,
the app's store): until it publishes, every view reads history; rows written while
it reads history reach the snapshot once (neither missed nor counted twice), and
when it publishes, each live view returns the rows of its history path."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import storage.live as live_mod
from collectors.sim.faults import REFERENCE_FAULTS
from fleettui.tui.demo import fixed_store
from storage import views
from storage.batch import make_batch
from storage.store import Store
from storage.views.live import snapshot_state
from storage.views.tenants import _alloc_live
from tests.test_views_live import _same
from tests.test_views_windows import _approx, _same_fabric

TABLES = ("gpu_samples", "slice_samples")
STEP_S = 0.7


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    path = tmp_path_factory.mktemp("fill") / "fleet.duckdb"
    store, last = fixed_store(60.0, STEP_S, faults=REFERENCE_FAULTS, path=str(path))
    store.close()
    return path, last


def _next_rows(cur, last) -> list:
    """The newest sample of every GPU, slice and link again, STEP_S later, with other
    values (a row counted twice or missed changes a window's sums and means)."""
    batches = []
    for table, change in (
        ("gpu_samples", "util_pct * 0.5 + 7 AS util_pct"),
        ("slice_samples", "util_pct * 0.5 + 3 AS util_pct"),
        ("link_samples", "errors + 5 AS errors"),
    ):
        col = change.rsplit(" AS ", 1)[1]
        t = cur.execute(
            f"SELECT * EXCLUDE (ts, {col}), ts + to_seconds($step) AS ts, {change} "
            f"FROM {table} WHERE ts = $t",
            {"t": last, "step": STEP_S},
        ).to_arrow_table()
        assert t.num_rows
        batches.append(make_batch(table, t.to_pydict()))
    return batches


def _gated(monkeypatch) -> threading.Event:
    """The background fill waits for the returned event before it starts."""
    gate = threading.Event()
    run = live_mod.LiveSnapshot._fill_behind

    def gated(self, newest):
        assert gate.wait(30.0)
        run(self, newest)

    monkeypatch.setattr(live_mod.LiveSnapshot, "_fill_behind", gated)
    return gate


def test_views_read_history_during_the_fill_and_the_snapshot_after(stored, monkeypatch):
    path, last = stored
    gate = _gated(monkeypatch)
    store = Store.open(path, live_background=True)
    try:
        cur = store.cursor()
        assert store.live is not None and store.live.filling
        # rows committed while the fill has not read history yet
        store.write(_next_rows(cur, last))
        now = last + timedelta(seconds=STEP_S)
        # no snapshot yet: every view takes the history path
        assert snapshot_state(cur, now, 30.0, *TABLES) is None
        assert views.fleet_totals(cur, now)["gpus"] > 0
        _same(cur, now)
        gate.set()
        assert store.live.wait_filled(60.0)
        # published once, with the rows written meanwhile folded in: no publish since
        assert snapshot_state(cur, now, 30.0, *TABLES) is not None
        seen_err = 0
        for dt in (0.0, 0.4, 3.0, 8.9):
            at = now + timedelta(seconds=dt)
            _same(cur, at)
            links = _same_fabric(cur, at, 10.0).to_pylist()
            seen_err += sum(1 for r in links if r["errors_per_s"])
        assert seen_err  # the written link errors were compared
        # the utilisation window sums: a fill in a thread reads every slot kept, so
        # the tenants' own 30 s window (the longest kept) reads them at once
        for window_s in (live_mod.FILL_SPAN_S - 2.0, 30.0):
            for dt in (0.0, 0.4, 1.2):
                at = now + timedelta(seconds=dt)
                assert _alloc_live(cur, at, window_s) is not None
                a = views.tenant_summary(cur, at, util_window_s=window_s)
                b = views.tenant_summary(cur, at, util_window_s=window_s, live=False)
                assert _approx(a.to_pylist()) == b.to_pylist()
                assert any(r["util_mean_pct"] is not None for r in a.to_pylist())
        # a window longer than the slots kept reads history
        assert _alloc_live(cur, now, 31.5) is None
        # and later writes go on through the writer's publishes
        store.write(_next_rows(cur, now))
        store.publish_live()
        _same(cur, now + timedelta(seconds=STEP_S))
        cur.close()
    finally:
        gate.set()
        store.close()


def test_a_store_closed_while_it_fills(stored):
    path, _ = stored
    store = Store.open(path, live_background=True)
    store.close()  # stops the fill (or waits for its end): the file stays usable
    store = Store.open(path)  # filled before it returns
    assert store.live is not None and not store.live.filling
    cur = store.cursor()
    (newest,) = cur.execute("SELECT max(ts) FROM gpu_samples").fetchone()
    assert snapshot_state(cur, newest, 30.0, *TABLES) is not None
    cur.close()
    store.close()


def test_the_apps_first_frame_starts_the_fill(stored):
    import asyncio

    from fleettui.tui.app import FleetApp

    path, _ = stored
    store = Store.open(path, live_background=True)
    cur = store.cursor()
    (newest,) = cur.execute("SELECT max(ts) FROM gpu_samples").fetchone()
    cur.close()
    live = store.live
    assert live is not None and live.filling and not live._go.is_set()  # it waits

    async def scenario():
        app = FleetApp(store.con, clock=lambda: newest, refresh_s=3600.0, store=store)
        async with app.run_test(size=(120, 40)) as pilot:
            while app.screen.loaded == 0:
                await pilot.pause(0.01)
            for _ in range(100):  # the hook runs after the frame's refresh
                if live._go.is_set():
                    break
                await pilot.pause(0.01)
            assert live._go.is_set()

    try:
        asyncio.run(scenario())
        assert live.wait_filled(60.0)
    finally:
        store.close()


def test_the_apps_fill_builds_the_rack_layout_behind_the_first_frame(stored, monkeypatch):
    """Once the fill published, its thread builds the live rack grid's layout and row
    positions, so the first refresh from the snapshot reuses them instead."""
    import asyncio

    import storage.views.live as live_views
    from fleettui.tui.app import FleetApp

    path, _ = stored
    store = Store.open(path, live_background=True)
    cur = store.cursor()
    (newest,) = cur.execute("SELECT max(ts) FROM gpu_samples").fetchone()
    live = store.live
    assert live is not None and live.filling

    async def first_frame():
        app = FleetApp(store.con, clock=lambda: newest, refresh_s=3600.0, store=store)
        async with app.run_test(size=(120, 40)) as pilot:
            while app.screen.loaded == 0:
                await pilot.pause(0.01)
            for _ in range(100):
                if live._go.is_set():
                    break
                await pilot.pause(0.01)

    try:
        asyncio.run(first_frame())
        assert live.wait_filled(60.0)
        assert live._fill_thread is not None
        live._fill_thread.join(60.0)  # the layout is built in it, after the publish
        assert not live._fill_thread.is_alive()
        version = snapshot_state(cur, newest, 30.0, *TABLES)
        assert version is not None

        def built_again(*_a, **_k):
            raise AssertionError("the rack layout or positions were built on refresh")

        monkeypatch.setattr(live_views, "_layout_in_order", built_again)
        monkeypatch.setattr(live_views, "_Positions", built_again)
        grid = views.rack_grid(cur, newest)  # from the snapshot: the cached layout
        assert grid.equals(views.rack_grid(cur, newest, live=False))
    finally:
        cur.close()
        store.close()


def test_after_fill_runs_once_in_the_fill_thread_after_the_publish(stored):
    path, _ = stored
    store = Store.open(path, live_background=True)
    live = store.live
    assert live is not None
    cur = store.cursor()
    (newest,) = cur.execute("SELECT max(ts) FROM gpu_samples").fetchone()
    seen: list[tuple[str, bool]] = []
    late = threading.Event()

    def record() -> None:
        published = snapshot_state(cur, newest, 30.0, *TABLES) is not None
        seen.append((threading.current_thread().name, published))

    try:
        live.after_fill(record)
        assert live.wait_filled(60.0)
        assert live._fill_thread is not None
        live._fill_thread.join(60.0)
        assert seen == [("fleettui-live-fill", True)]
        live.after_fill(late.set)  # the fill ended: run in a thread of its own
        assert late.wait(10.0)
        assert len(seen) == 1
    finally:
        cur.close()
        store.close()
