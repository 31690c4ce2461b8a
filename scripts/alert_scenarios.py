"""Print the default rule pack's behaviour on the simulated fleet, as a Markdown table.

For every injected fault (the demo's schedule, run once, no repeat): which rules
fired for which scope keys, how long after the fault started they fired and how
long after it cleared they resolved; then the collector scenarios (the runtime's
`collector_runs` stop, or report runs longer than the interval); then a healthy
simulated day with no faults, counting alerts that fired (false positives) and
near misses (went pending, never fired).

    .venv/bin/python scripts/alert_scenarios.py [--step 15] [--day-step 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.sim.faults import DEFAULT_FAULTS  # noqa: E402
from fleettui.alerts.replay import SimReplay, expected_alerts  # noqa: E402


def spread(values: list[float | None]) -> str:
    vals = sorted(v for v in values if v is not None)
    if len(vals) < len(values) or not vals:
        return "never"
    lo, hi = vals[0], vals[-1]
    return f"{lo:.0f}" if lo == hi else f"{lo:.0f}–{hi:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", type=float, default=15.0, help="evaluation step of fault runs (s)")
    ap.add_argument("--day-step", type=float, default=60.0, help="step of the healthy day (s)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    start = datetime(2026, 11, 26, 3, 0, 0)
    faulted = SimReplay(DEFAULT_FAULTS, start=start, step_s=args.step)
    faulted.run(max(f.start_s + f.duration_s for f in DEFAULT_FAULTS) + 600)
    by_key = {(t.rule, t.scope_key): t for t in faulted.fired()}
    rows: list[tuple[str, str, str, str, str, str]] = []
    accounted: set[tuple[str, str]] = set()
    for f in DEFAULT_FAULTS:
        groups: dict[str, list[str]] = defaultdict(list)
        for rule, key in sorted(expected_alerts(faulted, f)):
            groups[rule].append(key)
        end = f.start_s + f.duration_s
        for rule, keys in groups.items():
            tls = [by_key.get((rule, k)) for k in keys]
            accounted |= {(rule, k) for k in keys}
            fired = [None if t is None else t.fired_s - f.start_s for t in tls]
            resolved = [None if t is None or t.ended_s is None else t.ended_s - end for t in tls]
            scope = keys[0] if len(keys) == 1 else f"{len(keys)} keys"
            fault = f"{f.kind} {f.target} ({f.start_s:.0f}+{f.duration_s:.0f} s)"
            rows.append((rule, fault, scope, spread(fired), spread(resolved), ""))
    unexpected = sorted(set(by_key) - accounted)

    collectors = SimReplay((), start=start, step_s=args.step)

    def feed(now: datetime, rel: float) -> bool:
        collectors.run_ms = 20_000.0 if 700 <= rel < 1100 else 40.0
        return not 300 <= rel < 600

    collectors.run(1500, feed=feed)
    cby = {t.rule: t for t in collectors.fired()}
    for rule, what, a, b in (
        ("CollectorSilent", "collector_runs stop (300+300 s)", 300, 600),
        ("CollectorSlow", f"runs take 20 s, interval {args.step:.0f} s (700+400 s)", 700, 1100),
    ):
        t = cby.get(rule)
        rows.append(
            (
                rule,
                what,
                "sim",
                "never" if t is None else f"{t.fired_s - a:.0f}",
                "never" if t is None or t.ended_s is None else f"{t.ended_s - b:.0f}",
                "",
            )
        )

    day = SimReplay((), start=datetime(2026, 11, 26, 0, 0, 0), step_s=args.day_step)
    day.run(24 * 3600)
    fp: dict[str, int] = defaultdict(int)
    near: dict[str, int] = defaultdict(int)
    for t in day.timelines:
        (fp if t.fired_s is not None else near)[t.rule] += 1
    rows = [
        (
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            f"{fp[r[0]]}" + (f" ({near[r[0]]} pending)" if near[r[0]] else ""),
        )
        for r in rows
    ]

    print(
        f"Fault runs: step {args.step:.0f} s, start {start:%H:%M} UTC; healthy day: "
        f"24 h at {args.day_step:.0f} s steps; 304 GPUs (scale 1)\n"
    )
    head = (
        "rule",
        "fault injected",
        "scope",
        "fired after (s)",
        "resolved after (s)",
        "false positives, healthy day",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\nunexpected alerts during the fault runs: {unexpected or 'none'}")
    print(
        f"healthy day: {sum(fp.values())} fired, {sum(near.values())} pending that never fired "
        f"({', '.join(f'{k} x{v}' for k, v in near.items() if v) or 'none'})"
    )
    print(f"evaluation errors: {sum(len(c.errors) for c in faulted.cycles + day.cycles)}")
    print(f"(ran in {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
