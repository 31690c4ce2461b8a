"""TUI benchmark at the simulated fleet scaled to 10,032 GPUs (SimSource scale=33).

Prints, per view, the CPU time of one refresh: the view's query (in the worker
thread) plus handing the result to the screen and rendering the frame
(headless Textual at the given terminal size); with the app's DuckDB setting
(one thread: less CPU, a little more wall time) and with DuckDB's default
threads, in the same run. Targets: rack view < 100 ms CPU,
app start-up < 2 s (import in a fresh interpreter + first frame with data).

First, the writer's CPU spent on the live snapshot (storage/live.py) against
its CPU writing the samples, and the rack query from the snapshot against the
same rows from history, in the same run (`--queries-only` stops there).

    .venv/bin/python benchmarks/bench_tui.py [--scale 33] [--seconds 120] [--repeat 10]
        [--queries-only]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fleettui.tui.launch import APP_DUCKDB_THREADS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleettui.tui.app import FleetApp  # noqa: E402
from fleettui.tui.demo import fixed_store  # noqa: E402


def queries(store, last, repeat: int) -> None:
    """Rack view query CPU: live snapshot vs history path, same cursor, same run."""
    from storage.reader import LocalReader
    from storage.views import rack_grid

    store.con.execute(f"SET threads = {int(APP_DUCKDB_THREADS)}")
    reader = LocalReader(store.con)
    print(f"query CPU ms, DuckDB threads {APP_DUCKDB_THREADS}, median of {repeat}:")
    for label, live in (("rack, live snapshot", True), ("rack, history path", False)):
        rack_grid(reader, last, live=live)  # warm (layout cached)
        cpu = []
        for _ in range(repeat):
            c0 = time.process_time()
            rack_grid(reader, last, live=live)
            cpu.append(time.process_time() - c0)
        print(f"  {label:<24}{statistics.median(cpu) * 1e3:>10.1f}")
    store.con.execute("RESET threads")


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
) -> list[tuple[str, float, float]]:
    app = FleetApp(store.con, clock=lambda: last, refresh_s=3600.0)
    t0 = time.perf_counter()
    results: list[tuple[str, float, float]] = []
    async with app.run_test(size=size) as pilot:
        while app.screen.loaded == 0:
            await pilot.pause(0.005)
        await pilot.pause()
        results.append(("first frame with data (s, wall)", time.perf_counter() - t0, 0.0))

        async def refresh_cpu(label: str) -> None:
            screen = app.screen
            at = app.effective_at()
            total, query = [], []
            for _ in range(repeat):
                c0 = time.process_time()
                data = screen.fetch(app.reader, at)
                c1 = time.process_time()
                screen.show(data)
                await pilot.pause()  # compositor renders the frame
                c2 = time.process_time()
                query.append(c1 - c0)
                total.append(c2 - c0)
            results.append((label, statistics.median(total) * 1e3, statistics.median(query) * 1e3))

        await refresh_cpu("rack (1-char cells)")
        await pilot.press("z")
        await refresh_cpu("rack (wide cells)")
        await pilot.press("z")
        for key, label in (("2", "fabric"), ("3", "tenants"), ("4", "alerts")):
            await pilot.press(key)
            while app.screen.loaded == 0:
                await pilot.pause(0.005)
            await refresh_cpu(label)
        await pilot.press("1", "enter")
        while app.screen.loaded == 0:
            await pilot.pause(0.005)
        await refresh_cpu("drill-down (host)")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=33)
    ap.add_argument("--seconds", type=float, default=120.0, help="history to fill (1 s samples)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--queries-only", action="store_true", help="no app: writer and queries")
    args = ap.parse_args()

    from storage.store import Store

    write_cpu = [0.0]
    plain_write = Store.write

    def timed_write(self, batches):
        c0 = time.process_time()
        try:
            return plain_write(self, batches)
        finally:
            write_cpu[0] += time.process_time() - c0

    Store.write = timed_write  # type: ignore[method-assign]
    t = time.perf_counter()
    store, last = fixed_store(args.seconds, 1.0, scale=args.scale)
    Store.write = plain_write  # type: ignore[method-assign]
    n_gpus = store.cursor().execute("SELECT count(*) FROM gpus").fetchone()[0]
    rows = store.cursor().execute("SELECT count(*) FROM gpu_samples").fetchone()[0]
    print(
        f"store: {n_gpus:,} GPUs, {rows:,} GPU samples ({args.seconds:.0f} s), "
        f"filled in {time.perf_counter() - t:.1f} s"
    )
    pub = store.live.publish_cpu_s if store.live else 0.0
    print(
        f"writer CPU: {write_cpu[0]:.2f} s in Store.write, of which live snapshot {pub:.2f} s "
        f"(+{100 * pub / max(write_cpu[0] - pub, 1e-9):.1f} % over the writes alone)"
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
    ):
        store.con.execute(f"SET threads = {int(threads)}")
        results = asyncio.run(measure(store, last, size, args.repeat))
        print(
            f"\nterminal {size[0]}x{size[1]}, DuckDB threads {threads}, "
            f"median of {args.repeat} refreshes"
        )
        print(f"{'view':<34}{'refresh CPU ms':>16}{'of which query':>16}")
        first = results[0][1]
        for label, total, query in results[1:]:
            flag = "  (target < 100 ms)" if label.startswith("rack") else ""
            print(f"{label:<34}{total:>16.1f}{query:>16.1f}{flag}")
        print(
            f"start-up: import {imp:.2f} s + first frame with data {first:.2f} s = "
            f"{imp + first:.2f} s (target < 2 s)"
        )
    store.close()


if __name__ == "__main__":
    main()
