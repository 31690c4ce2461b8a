"""Alert evaluation cost per cycle on a large simulated fleet, and its share of the interval.

Fills a store with `--minutes` of the simulated fleet at `--scale` (33 -> 10,032
GPUs) sampled every `--step` seconds, the last `--dense-minutes` of it every
`--dense-step` seconds (so the rules' windows see the density a 1 Hz collector
leaves), with the demo's faults injected once so some alerts are open. Then it
alternates: one more sample written (not timed), one engine evaluation (timed),
`--cycles` times. Prints the median and worst cycle, each rule's median query
time, and the median as a share of the evaluation interval.

`--compare` times, in the same run and on the same store, the engine with
shared scans (fleettui/alerts/shared.py) and the engine running each rule's
own query; `--before FILE` adds an older `engine.py` (e.g. from `git show
BASE:fleettui/alerts/engine.py`), loaded beside this one, and `--before DIR` an
older `fleettui/alerts` folder (e.g. from `git archive BASE fleettui/alerts`):
its engine.py with its own shared.py and, if there, its default_rules.toml. All evaluate every
cycle, in rotating order, and their open alerts must agree.

    .venv/bin/python benchmarks/bench_alerts.py --scale 33 --minutes 20 --step 10
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.sim.faults import DEFAULT_FAULTS  # noqa: E402
from collectors.sim.source import SimSource  # noqa: E402
from fleettui.alerts.engine import AlertEngine  # noqa: E402
from fleettui.alerts.rules import default_rules, load_rules_text  # noqa: E402
from storage.batch import make_batch  # noqa: E402
from storage.store import Store  # noqa: E402


def run_row(now: datetime, interval_s: float, rows: int) -> object:
    return make_batch(
        "collector_runs",
        {
            "ts": [now],
            "collector": ["sim"],
            "duration_ms": [50.0],
            "ok": [True],
            "rows": [rows],
            "skipped": [0],
            "interval_s": [interval_s],
        },
    )


def load_before(path: Path, rules: list) -> tuple[ModuleType, list]:
    """The older engine module at `path` and the rules it evaluates. A folder's engine.py
    imports that folder's shared.py (else the one here), and its default_rules.toml
    replaces the current default pack."""
    if not path.is_dir():
        spec = importlib.util.spec_from_file_location("engine_before", path)
        module = sys.modules["engine_before"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module, rules
    spec = importlib.util.spec_from_file_location("shared_before", path / "shared.py")
    shared = sys.modules["shared_before"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shared)
    text = (path / "engine.py").read_text()
    text = text.replace("from fleettui.alerts.shared import", "from shared_before import")
    module = sys.modules["engine_before"] = ModuleType("engine_before")
    exec(compile(text, str(path / "engine.py"), "exec"), module.__dict__)
    pack = path / "default_rules.toml"
    if pack.exists():
        rules = load_rules_text(pack.read_text(), f"{pack}")
    return module, rules


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=33)
    ap.add_argument("--minutes", type=float, default=20.0, help="history to fill")
    ap.add_argument("--step", type=float, default=10.0, help="seconds between filled samples")
    ap.add_argument(
        "--dense-minutes",
        type=float,
        default=0.0,
        help="fill the last N minutes at --dense-step instead",
    )
    ap.add_argument("--dense-step", type=float, default=1.0)
    ap.add_argument("--cycles", type=int, default=12)
    ap.add_argument("--interval", type=float, default=15.0, help="evaluation interval (s)")
    ap.add_argument("--memory", action="store_true", help="in-memory store instead of a file")
    ap.add_argument(
        "--query-workers",
        type=int,
        default=None,
        help="queries run at a time (default: the engine's QUERY_WORKERS)",
    )
    ap.add_argument(
        "--compare", action="store_true", help="also time each rule's own query, same run"
    )
    ap.add_argument(
        "--before",
        type=Path,
        help="an older engine.py, or fleettui/alerts folder, to time in the same run",
    )
    ap.add_argument(
        "--store",
        type=Path,
        help="keep the filled store here and reuse it when it exists (a copy is evaluated;"
        " same arguments as the run that filled it)",
    )
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    path = Path(tmp.name) / "bench.duckdb"
    filled = bool(args.store and args.store.exists())
    if filled:
        shutil.copyfile(args.store, path)
    store = Store.open(":memory:" if args.memory else path)
    start = datetime(2026, 11, 26, 3, 0, 0)
    src = SimSource(scale=args.scale, faults=DEFAULT_FAULTS, period_s=None, start=start)
    total_s = args.minutes * 60
    dense_from = total_s - args.dense_minutes * 60
    t_fill = time.perf_counter()
    rel, n_samples = 0.0, 0
    while rel <= total_s:
        now = start + timedelta(seconds=rel)
        step = args.dense_step if rel >= dense_from else args.step
        if not filled:
            batches = src.sample(now).batches
            batches.append(run_row(now, step, sum(b.rows for b in batches)))
            store.write(batches)
        n_samples += 1
        rel += step
    fill_s = time.perf_counter() - t_fill
    if args.store and not filled and not args.memory:
        store.checkpoint()
        shutil.copyfile(path, args.store)
    cur = store.cursor()
    counts = {
        t: cur.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
        for t in ("gpu_samples", "slice_samples", "link_samples")
    }
    cur.close()

    rules = default_rules()
    workers = {} if args.query_workers is None else {"query_workers": args.query_workers}
    engines = {"shared scans": AlertEngine(store, rules, interval_s=args.interval, **workers)}
    if args.compare:
        engines["own query per rule"] = AlertEngine(
            store, rules, interval_s=args.interval, shared=False, **workers
        )
    if args.before:
        before, before_rules = load_before(args.before, rules)
        engines[f"before ({args.before})"] = before.AlertEngine(
            store, before_rules, interval_s=args.interval
        )
    cycles: dict[str, list] = {k: [] for k in engines}
    cpu_ms: dict[str, list[float]] = {k: [] for k in engines}
    step = args.dense_step if args.dense_minutes else args.step
    mismatches = 0
    for i in range(args.cycles):
        now = start + timedelta(seconds=rel + i * step)
        batches = src.sample(now).batches
        batches.append(run_row(now, step, sum(b.rows for b in batches)))
        store.write(batches)
        # The daemon's writer publishes the live snapshot within the second (storage/live.py);
        # here the next write would, which is the engine's: its cost is the intake's.
        store.publish_live()
        names = list(engines)
        for name in names[i % len(names) :] + names[: i % len(names)]:
            cpu0 = time.process_time()  # this process's CPU, DuckDB's threads included
            cycles[name].append(engines[name].evaluate(now))
            cpu_ms[name].append((time.process_time() - cpu0) * 1000)
        keys = [{(a.rule, a.scope_key, a.state) for a in e.open_alerts()} for e in engines.values()]
        mismatches += any(k != keys[0] for k in keys)
    n_gpus = src.model.fleet.n_gpus
    print(
        f"fleet: {n_gpus:,} GPUs (scale {args.scale}); store: "
        f"{'memory' if args.memory else 'file'}; filled {n_samples} samples "
        f"({args.minutes:g} min, step {args.step:g} s"
        + (
            f", last {args.dense_minutes:g} min at {args.dense_step:g} s"
            if args.dense_minutes
            else ""
        )
        + f") in {fill_s:.0f} s"
    )
    print("rows: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    budget_ms = args.interval * 1000
    for name, engine in engines.items():
        cs = cycles[name]
        warm = cs[1:] if len(cs) > 1 else cs  # the first cycle also writes new alerts
        med = statistics.median(c.total_ms for c in warm)
        q_med = statistics.median(c.query_ms for c in warm)
        w_med = statistics.median(getattr(c, "write_ms", float("nan")) for c in warm)
        rows_med = statistics.median(getattr(c, "rows_written", -1) for c in warm)
        worst = max(c.total_ms for c in cs)
        print(f"== {name}: {len(engine.rules)} rules; open alerts {len(engine.open_alerts())}")
        print(
            f"evaluation per cycle: median {med:.1f} ms (queries {q_med:.1f} ms, write "
            f"{w_med:.1f} ms for {rows_med:g} rows), "
            f"first {cs[0].total_ms:.1f} ms, worst {worst:.1f} ms over {len(cs)} cycles"
        )
        first = cs[0]
        print(
            f"first cycle: {first.total_ms:.1f} ms = queries {first.query_ms:.1f} + write "
            f"{getattr(first, 'write_ms', float('nan')):.1f} ms for "
            f"{getattr(first, 'rows_written', -1)} rows + the rest (stepping) "
            f"{first.total_ms - first.query_ms - getattr(first, 'write_ms', 0.0):.1f} ms"
        )
        print(
            f"process CPU per cycle: median {statistics.median(cpu_ms[name][1:] or cpu_ms[name]):.1f}"
            f" ms, first {cpu_ms[name][0]:.1f} ms (wall above; queries run"
            f" {getattr(engine, 'query_workers', 1)} at a time)"
        )
        print(
            f"share of the {args.interval:g} s interval: median {100 * med / budget_ms:.2f}%, "
            f"worst {100 * worst / budget_ms:.2f}%"
        )
        print("per shared scan and rule (median ms):")
        names = sorted({n for c in warm for n in (*getattr(c, "scan_ms", {}), *c.rule_ms)})
        per = {
            n: statistics.median(
                getattr(c, "scan_ms", {}).get(n, c.rule_ms.get(n, 0.0)) for c in warm
            )
            for n in names
        }
        for n, ms in sorted(per.items(), key=lambda kv: -kv[1]):
            print(f"  {n:32s} {ms:8.1f}")
    if len(engines) > 1:
        print(f"cycles whose open alerts differ between engines: {mismatches} of {args.cycles}")
    store.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
