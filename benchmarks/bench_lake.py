"""The app on a DuckLake written by two daemons: 2 x 10,032 simulated GPUs.

Starts a real PostgreSQL (the catalog, tests/services/postgres.py) and two
`fleettui daemon` processes, each simulating its own share of one fleet (`sim`
with `scale` units from `first_unit`: factory-1..33 and factory-34..66), both
writing the same lake; daemon a is the lake's one evaluator. After `--seconds`
it opens the lake as the app does (`fleettui --config lake.toml`) and prints:
GPUs and hosts the app sees, the time to attach the lake, the rack view's query
and the time until the app's first frame with data (headless Textual), then the
daemons' own counts (rows, redelivered rows skipped, commits retried).

    flock bench.lock .venv/bin/python benchmarks/bench_lake.py [--scale 33] [--seconds 90]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.sim.topology import build_fleet  # noqa: E402
from fleettui.sql_cli import open_config_reader  # noqa: E402
from fleettui.tui.app import FleetApp  # noqa: E402
from storage.views.rack import rack_grid  # noqa: E402
from tests.services.postgres import Postgres, find_bindir  # noqa: E402


def write_config(d: Path, name: str, pg: Postgres, dsn: str, scale: int, unit: int) -> Path:
    pw = d / "catalog.password"
    pw.write_text(pg.password + "\n")
    pw.chmod(0o600)
    path = d / f"{name}.toml"
    path.write_text(
        f'[daemon]\ndb = "{d / name}.duckdb"\nstatus_interval_s = 15\nmetrics_listen = ""\n'
        f'[store]\nbackend = "ducklake"\ncatalog = "{dsn}"\npassword_file = "{pw}"\n'
        f'data_path = "{d / "lake"}"\nevaluator = {"true" if name == "a" else "false"}\n'
        f'[[sources]]\nkind = "sim"\nname = "sim-{name}"\nscale = {scale}\n'
        f"first_unit = {unit}\nfaults = false\ninterval_s = 5.0\n"
    )
    return path


def start_daemon(config: Path, log: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleettui.cli", "daemon", "--config", str(config), "--no-serve"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)

    threading.Thread(target=read, daemon=True).start()
    return proc


async def first_frame_s(reader, last) -> tuple[float, int]:
    app = FleetApp(reader, clock=lambda: last, refresh_s=3600.0)
    t0 = time.perf_counter()
    async with app.run_test(size=(160, 50)) as pilot:
        while app.screen.loaded == 0:
            await pilot.pause(0.005)
        await pilot.pause()
        return time.perf_counter() - t0, int(app.totals["gpus"])


def lake_files(path: Path) -> int:
    return sum(1 for _ in path.rglob("*.parquet"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=33, help="units per daemon (33: 10,032 GPUs)")
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bindir = find_bindir()
    if bindir is None:
        sys.exit("bench_lake: PostgreSQL is not installed (Debian package postgresql)")
    work = Path(tempfile.mkdtemp(prefix="fleettui-lake-bench-"))
    work.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    pg = Postgres(work / "pg", bindir)
    pg.start()
    daemons: list[tuple[subprocess.Popen[str], list[str]]] = []
    try:
        dsn = pg.create_database("fleet")
        for i, name in enumerate(("a", "b")):
            log: list[str] = []
            config = write_config(work, name, pg, dsn, args.scale, i * args.scale)
            daemons.append((start_daemon(config, log), log))
        time.sleep(args.seconds)
        want = 2 * len(build_fleet(scale=args.scale).gpu_uuid)
        app_config = work / "a.toml"
        while True:  # both daemons' shares in the lake (start-up is slow on a busy machine)
            probe = open_config_reader(str(app_config))
            try:
                (n,) = probe.rows("SELECT count(DISTINCT gpu_uuid) FROM gpu_samples")[1][0]
            finally:
                probe.close()
            if n >= want or any(p.poll() is not None for p, _ in daemons):
                break
            time.sleep(5)
        t = time.perf_counter()
        reader = open_config_reader(str(app_config))
        attach_s = time.perf_counter() - t
        try:
            _, [(gpus, hosts, last)] = reader.rows(
                "SELECT count(DISTINCT gpu_uuid), count(DISTINCT host), max(ts) FROM gpu_samples"
            )
            rack_ms = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                grid = rack_grid(reader, last)
                rack_ms.append((time.perf_counter() - t) * 1000)
            frame_s, app_gpus = asyncio.run(first_frame_s(reader, last))
            print(f"lake written by 2 daemons x scale {args.scale}, {args.seconds:.0f} s")
            print(
                f"GPUs in gpu_samples: {gpus:,}; hosts: {hosts:,}; rack grid rows: {grid.num_rows:,}"
            )
            print(f"lake: {lake_files(work / 'lake')} Parquet files")
            print(f"attach the lake (open_config_reader): {attach_s:.2f} s")
            print(
                f"rack view query: median {statistics.median(rack_ms):.0f} ms "
                f"(min {min(rack_ms):.0f}, max {max(rack_ms):.0f}, {args.repeat} repeats)"
            )
            print(f"app first frame with data: {frame_s:.2f} s; app totals GPUs: {app_gpus:,}")
        finally:
            reader.close()
    finally:
        for proc, _ in daemons:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, (proc, log) in enumerate(daemons):
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            stopped = [line for line in log if "stopped" in line]
            print(f"daemon {'ab'[i]}: {(stopped or log[-1:] or ['(no output)'])[-1].strip()}")
        pg.stop()


if __name__ == "__main__":
    main()
