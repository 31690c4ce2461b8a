"""Cost of one steady-state rollup tick, and write latency while it runs.

Fills a store with `--history-min` minutes of the simulated fleet at 1 Hz
(scale 4 = 1,216 GPUs, 33 = 10,032 GPUs), rolls it all up, then per repeat:
pre-samples the next minute, writes it while the rollup task is idle (write
latency alone), then writes the following minute's first seconds from a
second thread at 1 Hz while `RollupTask.run_once` rolls up the new minute
(write latency during a tick). Reports the tick's wall and CPU seconds
(process CPU, DuckDB's threads included), the slowest table/tier steps, and
the writes' latencies. `--explain` prints DuckDB's EXPLAIN ANALYZE of the
gpu_samples 1-minute step's SELECT for the last minute.

    python benchmarks/bench_rollup_tick.py --scale 33 --history-min 16 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import datetime, timedelta

from collectors.sim.source import SimSource
from storage.rollups import (
    SPECS,
    TIERS,
    RollupOptions,
    RollupTask,
    from_raw_sql,
    roll_tier,
    rollup_table,
)
from storage.store import Store

START = datetime(2026, 11, 2, 0, 0, 0)


def sample_minute(src: SimSource, t0: datetime, seconds: int = 60) -> list[list]:
    return [src.sample(t0 + timedelta(seconds=k)).batches for k in range(seconds)]


def fill(store: Store, src: SimSource, minutes: int) -> None:
    chunk: list = []
    for k in range(minutes * 60):
        chunk += src.sample(START + timedelta(seconds=k)).batches
        if len(chunk) >= 50:  # 10 s of samples per transaction
            store.write(chunk)
            chunk = []
    if chunk:
        store.write(chunk)


class TimedTask(RollupTask):
    """RollupTask whose roll-up steps are timed one by one."""

    def run_once(self, now: datetime) -> None:
        self.steps: dict[str, float] = {}
        for spec in self.tables:
            for tier in TIERS:
                name = rollup_table(spec.table, tier)
                t0 = time.perf_counter()
                with self._rollup_cursor() as cur:
                    self.last_written[name] = roll_tier(cur, spec, tier, now, self.opts)
                self.steps[name] = time.perf_counter() - t0


def write_paced(store: Store, seconds: list[list], out: list[float], stop: threading.Event):
    for batches in seconds:
        t0 = time.perf_counter()
        store.write(batches)
        dt = time.perf_counter() - t0
        out.append(dt)
        if stop.is_set():
            break
        time.sleep(max(0.0, 1.0 - dt))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--history-min", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--explain", action="store_true")
    ap.add_argument("--store", help="database file (default: a new one in a temporary folder)")
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="bench_rollup_tick_")
    # a database file with the daemon's default memory limit, as a daemon runs
    store = Store.open(a.store or f"{tmp.name}/fleet.duckdb")
    src = SimSource(scale=a.scale, start=START)
    t0 = time.perf_counter()
    fill(store, src, a.history_min)
    gpus = store.con.execute("SELECT count(*) FROM gpus").fetchone()[0]
    print(f"{gpus} GPUs, {a.history_min} min filled in {time.perf_counter() - t0:.0f} s")
    opts = RollupOptions()
    minute = a.history_min
    task = TimedTask(store, opts=opts)
    task.run_once(START + timedelta(minutes=minute, seconds=opts.grace_s))  # catch up
    rows = []
    for r in range(a.repeats):
        # the next minute, written with no tick running
        nxt = sample_minute(src, START + timedelta(minutes=minute))
        alone = []
        for batches in nxt:
            t1 = time.perf_counter()
            store.write(batches)
            alone.append(time.perf_counter() - t1)
        minute += 1
        # the following minute's writes at 1 Hz while the tick rolls the minute just written
        follow = sample_minute(src, START + timedelta(minutes=minute), 45)
        during: list[float] = []
        stop = threading.Event()
        w = threading.Thread(target=write_paced, args=(store, follow, during, stop))
        w.start()
        time.sleep(1.5)
        now = START + timedelta(minutes=minute, seconds=opts.grace_s)
        c0, t1 = time.process_time(), time.perf_counter()
        task.run_once(now)
        wall, cpu = time.perf_counter() - t1, time.process_time() - c0
        stop.set()
        w.join()
        # the rest of that minute, so the next repeat starts from a whole minute
        for batches in sample_minute(src, START + timedelta(minutes=minute), 60)[len(during) :]:
            store.write(batches)
        minute += 1
        task.run_once(START + timedelta(minutes=minute, seconds=opts.grace_s))
        top = sorted(task.steps.items(), key=lambda kv: -kv[1])[:2]
        rows.append((wall, cpu, statistics.median(alone), max(alone), during))
        print(
            f"repeat {r}: tick wall {wall:.2f} s cpu {cpu:.2f} s; writes alone median"
            f" {statistics.median(alone) * 1e3:.0f} ms max {max(alone) * 1e3:.0f} ms;"
            f" during tick n={len(during)} median {statistics.median(during) * 1e3:.0f} ms"
            f" p95 {pct(during, 0.95) * 1e3:.0f} ms max {max(during) * 1e3:.0f} ms;"
            f" slowest steps (last tick) {', '.join(f'{k} {v:.2f}s' for k, v in top)}"
        )
    med = lambda i: statistics.median(x[i] for x in rows)  # noqa: E731
    print(
        f"SUMMARY gpus={gpus} repeats={a.repeats} tick_wall_s={med(0):.2f} tick_cpu_s={med(1):.2f}"
        f" write_alone_median_ms={med(2) * 1e3:.0f} write_alone_max_ms={med(3) * 1e3:.0f}"
        f" write_during_max_ms={statistics.median(max(x[4]) for x in rows) * 1e3:.0f}"
    )
    if a.explain:
        spec = SPECS["gpu_samples"]
        lo = START + timedelta(minutes=minute - 1)
        sql = from_raw_sql(spec, "1m")
        sql = sql.replace("$lo", "$lo::TIMESTAMP").replace("$hi", "$hi::TIMESTAMP")
        cur = store.cursor()
        cur.execute("PRAGMA explain_output = 'all'")
        plan = cur.execute(
            "EXPLAIN ANALYZE " + sql, {"lo": lo, "hi": lo + timedelta(minutes=1)}
        ).fetchall()
        print(plan[-1][1])
    store.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
