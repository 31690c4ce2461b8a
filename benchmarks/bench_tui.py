"""TUI benchmark at the simulated fleet scaled to 10,032 GPUs (SimSource scale=33).

Prints, per view, the CPU time of one refresh: the view's query (in the worker
thread) plus handing the result to the screen and rendering the frame
(headless Textual at the given terminal size); with the app's DuckDB setting
(one thread: less CPU, a little more wall time) and with DuckDB's default
threads, in the same run; beside it, for the fabric, tenants and drill-down, the
refresh when the data changed since the last one (a live fleet's every second: the
newest second and the one before shown in turn). Targets: rack view < 100 ms CPU,
app start-up < 2 s (import in a fresh interpreter + first frame with data).
With a `--store` file, also the cold start: fresh processes that open the file
(as the app collecting opens it, and read-only as `fleettui --db FILE`) and paint
the first frame, nothing cached (the warm start-up figure follows the queries,
which build the rack layout).

First, the writer's CPU spent on the live snapshot (storage/live.py) against
its CPU writing the samples, and the rack query from the snapshot against the
same rows from history, in the same run (`--queries-only` stops there).

    .venv/bin/python benchmarks/bench_tui.py [--scale 33] [--seconds 120] [--repeat 10]
        [--queries-only] [--store FILE [--cold-runs 3]]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from fleettui.tui.launch import APP_DUCKDB_THREADS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleettui.tui.app import FleetApp  # noqa: E402
from fleettui.tui.demo import fixed_store  # noqa: E402


def queries(store, last, repeat: int) -> None:
    """Each view's query CPU: the live snapshot path against the history path where a
    view has both, same cursor, same run."""
    import storage.views.tenants as tenants_mod
    from storage.reader import LocalReader
    from storage.views import (
        fabric,
        fleet_totals,
        gpu_history,
        host_events,
        host_gpus,
        host_processes,
        host_slices,
        rack_grid,
        tenant_history,
        tenant_summary,
    )

    store.con.execute(f"SET threads = {int(APP_DUCKDB_THREADS)}")
    reader = LocalReader(store.con)
    host = store.con.execute(
        "SELECT g.host FROM slices s JOIN gpus g USING (gpu_uuid) ORDER BY 1 LIMIT 1"
    ).fetchone()[0]

    tenant = store.con.execute("SELECT min(tenant) FROM assignments").fetchone()[0]

    def drill(live: bool) -> None:  # what the drill-down screen reads per refresh
        host_gpus(reader, host, last, live=live)
        host_slices(reader, host, last, live=live)
        gpu_history(reader, host, last, window_s=3600.0, buckets=120)
        host_events(reader, host, last)
        host_processes(reader, host, last)

    def totals(live: bool) -> None:
        if live:
            fleet_totals(reader, last)
        else:  # the history path's statement (fleet_totals picks the live one)
            from storage.views.fleet import TOTALS_SQL
            from storage.views.query import run

            run(reader, TOTALS_SQL, {"at": last, "stale_s": 30.0})

    cases = [
        ("rack", lambda live: rack_grid(reader, last, live=live)),
        ("drill-down (host)", drill),
        ("drill-down GPUs only", lambda live: host_gpus(reader, host, last, live=live)),
        (
            "drill-down history only",  # live: recent raw + 1-minute rollups; history: raw hour
            lambda live: gpu_history(
                reader, host, last, window_s=3600.0, buckets=120, bounded=live
            ),
        ),
        ("fleet totals (header)", totals),
        ("fabric", lambda live: fabric(reader, last, live=live)),
        ("fabric, screen's 10 s", lambda live: fabric(reader, last, window_s=10.0, live=live)),
        ("tenants summary", lambda live: tenant_summary(reader, last, live=live)),
        (  # the history path when the assignments or keys changed (its placement read again)
            "tenants hist., new layout (no live)",
            lambda live: (
                tenants_mod._placements.clear(),
                tenant_summary(reader, last, live=False),
            ),
        ),
        (  # a lake's path: everything in one statement
            "tenants 1 statement (no live)",
            lambda live: tenant_summary(reader, last, live=False, one_statement=True),
        ),
        (  # what the tenants screen draws beside its table (30 days, 120 buckets)
            "tenant chart 30 d (no live)",
            lambda live: tenant_history(reader, tenant, last, window_s=30 * 86400.0, buckets=120),
        ),
    ]
    print(f"query CPU ms, DuckDB threads {APP_DUCKDB_THREADS}, median of {repeat}:")
    print(f"  {'view':<36}{'live':>10}{'history':>10}")
    for label, fn in cases:
        out = []
        for live in (True, False):
            fn(live)  # warm (the rack layout is cached)
            cpu = []
            for _ in range(repeat):
                c0 = time.process_time()
                fn(live)
                cpu.append(time.process_time() - c0)
            out.append(statistics.median(cpu) * 1e3)
            if "no live" in label:
                break
        print(f"  {label:<36}" + "".join(f"{v:>10.1f}" for v in out))
    store.con.execute("RESET threads")


def roll_minutes(store, last) -> None:
    """The 1-minute rollups of the GPU samples up to the cursor, as the daemon's
    rollups task keeps them (the drill-down's older sparkline minutes read them)."""
    from storage.rollups import SPECS, RollupOptions, roll_tier

    c0 = time.process_time()
    with store.writer() as cur:
        roll_tier(cur, SPECS["gpu_samples"], "1m", last, RollupOptions(max_span_h=1000))
    print(f"1-minute rollup of gpu_samples: {time.process_time() - c0:.2f} s CPU")


# A fresh interpreter opening the store file and painting the app's first frame with
# data (the real cold start: nothing cached, the rack layout built from the store).
# argv: path, newest sample time (the app's clock), "app" (the store as the app
# collecting opens it: writable, the live snapshot filled from the file's recent
# history in a thread, the first frame from history meanwhile) or "read-only"
# (`fleettui --db FILE` without a daemon: no snapshot). In the launch's order
# (`fleettui.tui.launch.start_app`): the store opened, the rack view's first query
# started in a thread, then Textual imported and the app built beside it, so "import"
# is the store's modules and "first frame" includes Textual's import; a main without
# `start_app` is timed in its own order (Textual first), so one script times both.
COLD_START = """
import asyncio, json, sys, time
from datetime import datetime
t0 = time.perf_counter()
from storage.views import live
try:  # the launch's order: the store opened and the rack query started, then Textual
    from fleettui.tui.launch import start_app
except ImportError:  # a main before start_app: its run_app imported the app first
    start_app = None
    from fleettui.tui.app import FleetApp
t1 = time.perf_counter()
path, last, mode = sys.argv[1], datetime.fromisoformat(sys.argv[2]), sys.argv[3]
if mode == "app":
    from fleettui.tui.launch import open_app_store
    store = open_app_store(path)
    con = store.con
else:
    from fleettui.tui.launch import APP_DUCKDB_THREADS
    from storage.store import Store
    store = Store.open(path, read_only=True)
    con = store.con
    con.execute(f"SET threads = {APP_DUCKDB_THREADS}")
t2 = time.perf_counter()
spent = {"layout": 0.0, "positions": 0.0}
def timed(name, fn):
    def wrapper(*a, **k):
        w = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += time.perf_counter() - w
    return wrapper
live.rack_layout = timed("layout", live.rack_layout)
live.rack_positions = timed("positions", live.rack_positions)
async def first_frame(app):
    # the end: the refresh after the first data was shown (pilot.pause() would wait
    # for the process to go idle, up to 1 s: any work after the frame counted)
    painted = []
    async with app.run_test(size=(200, 60)) as pilot:
        while app.screen.loaded == 0:
            await pilot.pause(0.005)
        app.screen.call_after_refresh(lambda: painted.append(time.perf_counter()))
        while not painted:
            await asyncio.sleep(0.002)
        return painted[0]
# as the collecting app: with its store (its first frame starts the snapshot's fill)
kwargs = dict(refresh_s=3600.0, store=store if mode == "app" else None)
if start_app is None:
    app = FleetApp(con, clock=lambda: last, **kwargs)
    t3 = asyncio.run(first_frame(app))
else:
    from storage.reader import LocalReader
    got = []
    start_app(
        LocalReader(con), clock=lambda: last, run=lambda app: got.append(asyncio.run(first_frame(app))),
        **kwargs,
    )
    t3 = got[0]
# the app's snapshot fills in a thread (the first frame read history): when it published
if store.live is not None:
    store.live.wait_filled()
    spent["filled"] = time.perf_counter() - t2
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "frame": t3 - t2, **spent}))
"""


def cold_start(path: str, last, mode: str, runs: int) -> None:
    """Median wall seconds over `runs` fresh processes (COLD_START)."""
    import json

    got = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", COLD_START, path, last.isoformat(), mode],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        got.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(g[k] for g in got) for k in got[0]}
    total = med["import"] + med["open"] + med["frame"]
    print(
        f"cold start ({mode}), fresh process, median of {runs}: import {med['import']:.2f} s "
        f"+ open {med['open']:.2f} s + first frame with data {med['frame']:.2f} s "
        f"(of which rack layout {med['layout']:.2f} s, positions {med['positions']:.2f} s) "
        f"= {total:.2f} s (target < 2 s)"
        + (
            f"; the live snapshot published {med['filled']:.2f} s after the open"
            if "filled" in med
            else ""
        )
    )


def import_time_s() -> float:
    code = (
        "import time; t=time.perf_counter(); import fleettui.tui.app; print(time.perf_counter()-t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return float(out.stdout.strip())


async def measure(
    store, last, size: tuple[int, int], repeat: int
) -> list[tuple[str, float, float, float | None]]:
    app = FleetApp(store.con, clock=lambda: last, refresh_s=3600.0)
    t0 = time.perf_counter()
    results: list[tuple[str, float, float, float | None]] = []
    async with app.run_test(size=size) as pilot:
        while app.screen.loaded == 0:
            await pilot.pause(0.005)
        await pilot.pause()
        results.append(("first frame with data (s, wall)", time.perf_counter() - t0, 0.0, None))

        async def timed(changing: bool) -> tuple[float, float]:
            screen = app.screen
            at = app.effective_at()
            # a live fleet's data changes every second: each refresh then shows the
            # newest second or the one before, in turn (both fetched beforehand; the
            # timed query is the newest's, the live path a running app takes)
            before = screen.fetch(app.reader, at - timedelta(seconds=1)) if changing else None
            total, query = [], []
            for i in range(repeat):
                c0 = time.process_time()
                data = screen.fetch(app.reader, at)
                c1 = time.process_time()
                screen.show(before if changing and i % 2 == 0 else data)
                await pilot.pause()  # compositor renders the frame
                c2 = time.process_time()
                query.append(c1 - c0)
                total.append(c2 - c0)
            return statistics.median(total) * 1e3, statistics.median(query) * 1e3

        async def refresh_cpu(label: str, changing: bool = False) -> None:
            total, query = await timed(False)
            moved = (await timed(True))[0] if changing else None
            results.append((label, total, query, moved))

        await refresh_cpu("rack (1-char cells)")
        await pilot.press("z")
        await refresh_cpu("rack (wide cells)")
        await pilot.press("z")
        for key, label in (("2", "fabric"), ("3", "tenants"), ("4", "alerts")):
            await pilot.press(key)
            while app.screen.loaded == 0:
                await pilot.pause(0.005)
            await refresh_cpu(label, changing=key != "4")
        await pilot.press("1", "enter")
        while app.screen.loaded == 0:
            await pilot.pause(0.005)
        await refresh_cpu("drill-down (host)", changing=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=33)
    ap.add_argument("--seconds", type=float, default=120.0, help="history to fill (1 s samples)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--step", type=float, default=1.0, help="seconds between filled samples")
    ap.add_argument("--queries-only", action="store_true", help="no app: writer and queries")
    ap.add_argument(
        "--app-runs",
        type=int,
        default=3,
        help="app configurations to time (1: 200x60, app threads)",
    )
    ap.add_argument(
        "--cold-runs",
        type=int,
        default=3,
        help="fresh processes timed opening a --store file and painting the first frame (0: none)",
    )
    ap.add_argument(
        "--store",
        default=":memory:",
        help="store file: filled when absent, opened as it is when present (the snapshot "
        "is then built from its history on open, as for the app opening a file)",
    )
    args = ap.parse_args()

    from storage.store import Store

    write_cpu = [0.0]
    plain_write = Store.write

    def timed_write(self, batches):
        # each write is one second of the fleet: publish after each, as a daemon
        # taking 1 Hz reports does (the fill runs faster than real time)
        c0 = time.process_time()
        try:
            rows = plain_write(self, batches)
            if self.live is not None:
                self.live.publish()
            return rows
        finally:
            write_cpu[0] += time.process_time() - c0

    Store.write = timed_write  # type: ignore[method-assign]
    t = time.perf_counter()
    reused = args.store != ":memory:" and Path(args.store).exists()
    if reused:
        c0 = time.process_time()
        store = Store.open(args.store)
        last = store.con.execute("SELECT max(ts) FROM gpu_samples").fetchone()[0]
        print(
            f"opened {args.store} (live snapshot built from history): "
            f"{time.process_time() - c0:.2f} s CPU"
        )
    else:
        store, last = fixed_store(args.seconds, args.step, scale=args.scale, path=args.store)
    Store.write = plain_write  # type: ignore[method-assign]
    roll_minutes(store, last)
    n_gpus = store.cursor().execute("SELECT count(*) FROM gpus").fetchone()[0]
    rows, span = (
        store.cursor().execute("SELECT count(*), max(ts) - min(ts) FROM gpu_samples").fetchone()
    )
    print(
        f"store: {n_gpus:,} GPUs, {rows:,} GPU samples ({span} of history), "
        f"{'opened' if reused else 'filled'} in {time.perf_counter() - t:.1f} s"
    )
    pub = store.live.publish_cpu_s if store.live else 0.0
    print(
        ""
        if reused
        else f"writer CPU: {write_cpu[0]:.2f} s in Store.write, of which live snapshot {pub:.2f} s "
        f"(+{100 * pub / max(write_cpu[0] - pub, 1e-9):.1f} % over the writes alone)",
    )
    queries(store, last, args.repeat)
    if args.queries_only:
        store.close()
        return
    imp = import_time_s()
    default_threads = store.con.execute("SELECT current_setting('threads')").fetchone()[0]
    # the app's own setting first (fleettui.tui.launch.APP_DUCKDB_THREADS), then DuckDB's default
    for size, threads in (
        ((200, 60), APP_DUCKDB_THREADS),
        ((80, 24), APP_DUCKDB_THREADS),
        ((200, 60), default_threads),
    )[: args.app_runs]:
        store.con.execute(f"SET threads = {int(threads)}")
        results = asyncio.run(measure(store, last, size, args.repeat))
        print(
            f"\nterminal {size[0]}x{size[1]}, DuckDB threads {threads}, "
            f"median of {args.repeat} refreshes"
        )
        print(f"{'view':<34}{'refresh CPU ms':>16}{'of which query':>16}{'data changing ms':>18}")
        first = results[0][1]
        for label, total, query, moved in results[1:]:
            flag = "  (target < 100 ms)" if label.startswith("rack") else ""
            changed = "" if moved is None else f"{moved:>18.1f}"
            print(f"{label:<34}{total:>16.1f}{query:>16.1f}{changed:>18}{flag}")
        print(
            f"start-up: import {imp:.2f} s + first frame with data {first:.2f} s = "
            f"{imp + first:.2f} s (target < 2 s; warm: the queries above built the layout)"
        )
    store.close()
    if args.store != ":memory:" and args.cold_runs > 0:
        # after close: a second process cannot open a file this one holds
        for mode in ("app", "read-only"):
            cold_start(args.store, last, mode, args.cold_runs)


if __name__ == "__main__":
    main()
