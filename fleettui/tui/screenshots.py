"""Write SVG screenshots of every view (for the README and docs/tui.md).

    python -m fleettui.tui.screenshots docs/screenshots [--width 160 --height 48]

The simulated fleet at seed 7 and a fixed clock, as in the snapshot tests, with
an `alerts` table written the way the alert engine does (so the alerts view
and badges show), driven by keys through the Pilot.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from pathlib import Path

from fleettui.tui.app import FleetApp
from fleettui.tui.demo import fixed_store
from storage.store import Store

# (file, keys pressed from the rack view, theme)
SHOTS = (
    ("rack", (), "textual-dark"),
    ("rack-power-wide", ("m", "m", "z"), "textual-dark"),
    ("rack-filter-tenant", ("slash", *"tenant:kestrel", "enter"), "textual-dark"),
    ("fabric", ("2",), "textual-dark"),
    ("tenants", ("3",), "textual-dark"),
    ("alerts", ("4",), "textual-dark"),
    (
        "drilldown",
        ("down", "down", "down", "down", "right", "right", "right", "enter"),
        "textual-dark",
    ),
    # a second Enter opens the GPU: its processes (the simulated agent lists them)
    (
        "drilldown-gpu",
        ("down", "down", "down", "down", "right", "right", "right", "enter", "enter"),
        "textual-dark",
    ),
    ("rack-filter-bar", ("slash",), "textual-dark"),
    ("time-travel", ("left_square_bracket",) * 4, "textual-dark"),
    ("sql", ("5", "ctrl+r"), "textual-dark"),
    ("sql-editing", ("5",), "textual-dark"),
    ("rack-light", (), "textual-light"),
)


def example_alerts(store: Store, at) -> None:
    """Alert instances as the alert engine writes them for these faults, one acknowledged."""
    import json

    from fleettui.alerts.silences import acknowledge
    from storage.batch import make_batch

    cur = store.cursor()
    gpu = cur.execute(
        "SELECT gpu_uuid FROM gpus WHERE host = 'nvl72-02-t03' AND gpu_index = 1"
    ).fetchone()[0]
    cur.close()
    s = timedelta(seconds=1)
    rows = [  # rule, scope, key, severity, started, fired, resolved, value, peak, summary
        (
            "gpu_xid_critical",
            "gpu",
            gpu,
            "critical",
            at - 235 * s,
            at - 235 * s,
            None,
            79,
            79,
            "Xid 79: GPU fell off the bus",
        ),
        (
            "host_stale",
            "host",
            "hgx-04-n3",
            "warning",
            at - 205 * s,
            at - 175 * s,
            None,
            205,
            205,
            "hgx-04-n3 silent for 205 s (limit 30 s)",
        ),
        (
            "itl_p99_over_target",
            "endpoint",
            "quanta-risk",
            "warning",
            at - 175 * s,
            at - 55 * s,
            None,
            167.7,
            171.2,
            "quanta-risk: inter-token latency p99 167.7 ms, target 21 ms",
        ),
        (
            "link_down",
            "link",
            "hgx-04-n1:mlx5_3/1",
            "critical",
            at - 55 * s,
            at - 55 * s,
            None,
            1,
            1,
            "InfiniBand port down",
        ),
        (
            "gpu_allocated_idle",
            "gpu",
            gpu,
            "warning",
            at - 145 * s,
            None,
            None,
            0.9,
            1.4,
            "allocated but idle (at most 0.9%)",
        ),
        (
            "thermal_throttle",
            "gpu",
            gpu,
            "warning",
            at - 275 * s,
            at - 215 * s,
            at - 95 * s,
            88,
            91,
            "HW thermal slowdown",
        ),
    ]
    cols = {
        c: []
        for c in (
            "alert_id",
            "rule",
            "scope",
            "scope_key",
            "severity",
            "state",
            "started_at",
            "fired_at",
            "resolved_at",
            "last_active_at",
            "evaluated_at",
            "last_value",
            "peak_value",
            "annotations",
        )
    }
    for rule, scope, key, sev, started, fired, resolved, value, peak, summary in rows:
        state = "resolved" if resolved else ("firing" if fired else "pending")
        for c, v in (
            ("alert_id", f"{rule}|{key}|{int(started.timestamp())}"),
            ("rule", rule),
            ("scope", scope),
            ("scope_key", key),
            ("severity", sev),
            ("state", state),
            ("started_at", started),
            ("fired_at", fired),
            ("resolved_at", resolved),
            ("last_active_at", resolved or at),
            ("evaluated_at", at),
            ("last_value", float(value)),
            ("peak_value", float(peak)),
            ("annotations", json.dumps({"summary": summary})),
        ):
            cols[c].append(v)
    store.write([make_batch("alerts", cols)])
    acknowledge(
        store,
        cols["alert_id"][1],
        by="alice",
        until=at + 3600 * s,
        now=at - 60 * s,
        comment="reseating the NIC",
    )


async def _shoot(out: Path, size: tuple[int, int], faults) -> list[Path]:
    store, last = fixed_store(300.0, 5.0, faults=faults)
    example_alerts(store, last)
    written = []
    for name, keys, theme in SHOTS:
        app = FleetApp(
            store.con, clock=lambda: last, refresh_s=3600.0, theme=theme, show_timings=False
        )
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            for key in keys:
                await pilot.press(key)
                await settle(pilot)
            path = out / f"{name}.svg"
            app.save_screenshot(filename=path.name, path=str(out))
            written.append(path)
    # the same store seven minutes after its last sample: a stopped daemon's file
    app = FleetApp(
        store.con, clock=lambda: last + timedelta(minutes=7), refresh_s=3600.0, show_timings=False
    )
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        app.save_screenshot(filename="rack-stopped.svg", path=str(out))
        written.append(out / "rack-stopped.svg")
    store.close()
    # the same fleet scaled to 10,032 GPUs: how thousands of cells look
    big, big_last = fixed_store(60.0, 10.0, scale=33, faults=faults)
    app = FleetApp(big.con, clock=lambda: big_last, refresh_s=3600.0, show_timings=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        path = out / "rack-10k.svg"
        app.save_screenshot(filename=path.name, path=str(out))
        written.append(path)
    big.close()
    return written


async def _drain(pilot, rounds: int) -> None:
    """Let the workers finish and their results reach the screen, `rounds` times."""
    from textual.worker import WorkerCancelled

    for _ in range(rounds):
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerCancelled:
            pass  # a refresh superseded by a newer one
        await pilot.pause()


async def settle(pilot, rounds: int = 6) -> None:
    """Let workers finish and their results reach the screen."""
    await _drain(pilot, rounds)
    # then one more refresh, as the running app's tick would do (tests stop the tick):
    # on a loaded machine the first show's table widths and a table just made visible
    # were at times not laid out yet (the snapshot tests caught it under load)
    reload = getattr(pilot.app.screen, "reload", None)
    if reload is not None:
        reload()
        await _drain(pilot, rounds)
    # and until two pictures agree
    shot = pilot.app.export_screenshot()
    for _ in range(20):
        await pilot.pause(0.05)
        again = pilot.app.export_screenshot()
        if again == shot:
            return
        shot = again


# The fault schedule of the pictures (the demo's own may change): every fault
# has started by 240 s and is active at 295 s, the last sample.
def picture_faults():
    from collectors.sim.faults import REFERENCE_FAULTS

    return REFERENCE_FAULTS


def main() -> None:
    ap = argparse.ArgumentParser(description="SVG screenshots of every view")
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=48)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for p in asyncio.run(_shoot(args.out, (args.width, args.height), picture_faults())):
        print(p)


if __name__ == "__main__":
    main()
