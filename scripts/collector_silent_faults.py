"""CollectorSilent under faults, as evidence (not a test): run from a checkout's root.

    python scripts/collector_silent_faults.py

1. Live: a real Mosquitto, one agent at 1 Hz (fake NVML) and the mqtt source into an
   in-memory store; 60 s healthy, 90 s broker down, 30 s broker back; the rule is
   evaluated every second (engine interval 15 s). Prints the transitions per phase.
2. Replayed on a controlled clock: a healthy hour at 1 Hz, evaluated every 15 s at a
   random phase. 3. Replayed: 60 s of good runs, then a 10-minute outage in which
   the source records a failing run (ok = false, NULL interval, as the runtime does for
   a crashing push source) every N seconds, then recovery; evaluated every 15 s.

Works against older checkouts too (their mqtt source declared its flush interval).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, ".")

from collectors.mqtt_source import MqttOptions, MqttSource  # noqa: E402
from collectors.nvml.collector import NvmlCollector  # noqa: E402
from collectors.nvml.fake import SimStates  # noqa: E402
from collectors.nvml.library import open_library  # noqa: E402
from collectors.sim.model import SimModel  # noqa: E402
from fleettui.agent import Agent, AgentOptions  # noqa: E402
from fleettui.alerts.engine import AlertEngine  # noqa: E402
from fleettui.alerts.rules import default_rules  # noqa: E402
from storage.batch import make_batch  # noqa: E402
from storage.store import Store  # noqa: E402
from tests.services.mosquitto import Broker  # noqa: E402

HOST = "hgx-03-n1"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def silent_engine(store: Store) -> AlertEngine:
    rules = [r for r in default_rules() if r.name == "CollectorSilent"]
    return AlertEngine(store, rules, interval_s=15)


async def live() -> None:
    broker = Broker(Path(tempfile.mkdtemp()) / "mosquitto")
    broker.start()
    store = Store.open(":memory:")
    engine = silent_engine(store)
    src = MqttSource(MqttOptions(broker=broker.address, reconnect_max_s=2.0))

    async def sink(batches):
        store.write(batches)

    src_task = asyncio.create_task(src.run(sink))
    states = SimStates(SimModel(start=time.time()))
    lib = open_library("fake", host=HOST, states=states)
    agent = Agent(
        AgentOptions(broker=broker.address, interval_s=1.0),
        NvmlCollector(lib, events=False),
        host=HOST,
    )
    stop = asyncio.Event()
    agent_task = asyncio.create_task(agent.run(stop, drain_s=0.1))
    log: list[tuple[str, float, str]] = []
    t0 = time.monotonic()

    async def evaluate_for(seconds: float, phase: str) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(1.0)
            for _, _, to in engine.evaluate(utcnow()).transitions:
                log.append((phase, round(time.monotonic() - t0, 1), to))

    await evaluate_for(60, "healthy 1 Hz")
    broker.stop()
    await evaluate_for(90, "broker down")
    broker.start()
    await evaluate_for(30, "broker back")
    stop.set()
    await agent_task
    src_task.cancel()
    await asyncio.gather(src_task, return_exceptions=True)
    broker.stop()
    print("live:", dict(Counter((phase, to) for phase, _, to in log)))
    for entry in log:
        print("  ", entry)


def replay_healthy() -> None:
    """One agent at 1 Hz for an hour (a run per report), evaluated every 15 s at a random
    phase, as a daemon's engine is."""
    o = MqttOptions()
    declared = getattr(o, "report_interval_s", o.flush_interval_s)
    t0 = datetime(2026, 11, 26, 12)
    store = Store.open(":memory:")
    engine = silent_engine(store)
    n = 3600
    store.write(
        [
            make_batch(
                "collector_runs",
                {
                    "ts": [t0 + timedelta(seconds=i) for i in range(n)],
                    "collector": ["mqtt"] * n,
                    "duration_ms": [1.0] * n,
                    "ok": [True] * n,
                    "rows": [1] * n,
                    "error": [None] * n,
                    "skipped": [0] * n,
                    "interval_s": [declared] * n,
                },
            )
        ]
    )
    rnd = random.Random(1)
    moves = Counter()
    for k in range(1, 240):
        for _, _, to in engine.evaluate(t0 + timedelta(seconds=15 * k + rnd.random())).transitions:
            moves[to] += 1
    print(
        f"replay: a healthy hour at 1 Hz, declared interval {declared} s, 239 evaluations: "
        f"{moves['firing']} fired, {moves['resolved']} resolved"
    )


def replay_outage() -> None:
    o = MqttOptions()
    declared = getattr(o, "report_interval_s", o.flush_interval_s)
    t0 = datetime(2026, 11, 26, 12)
    for every in (1, 5, 10, 16, 30):
        store = Store.open(":memory:")
        engine = silent_engine(store)
        rnd = random.Random(every)

        def run(t: datetime, ok: bool, interval: float | None, store: Store = store) -> None:
            store.write(
                [
                    make_batch(
                        "collector_runs",
                        {
                            "ts": [t],
                            "collector": ["mqtt"],
                            "duration_ms": [1.0],
                            "ok": [ok],
                            "rows": [1],
                            "error": [None if ok else "down"],
                            "skipped": [0],
                            "interval_s": [interval],
                        },
                    )
                ]
            )

        fired: list[tuple[int, str]] = []
        for sec in range(0, 60 + 600 + 60):
            t = t0 + timedelta(seconds=sec)
            if sec < 60 or sec >= 660:
                for k in range(4):
                    run(t + timedelta(seconds=k / 4), True, declared)
            elif sec % every == 0:
                run(t + timedelta(seconds=rnd.random()), False, None)
            if sec % 15 == 14:
                for _, _, to in engine.evaluate(t + timedelta(seconds=0.9)).transitions:
                    if to in ("firing", "resolved"):
                        fired.append((sec, to))
        during = [x for x in fired if 60 <= x[0] < 660]
        print(
            f"replay: a failing run every {every} s, declared interval {declared} s: "
            f"healthy minute {sum(1 for x in fired if x[0] < 60)} transitions; outage "
            f"{sum(1 for _, to in during if to == 'firing')} fired, "
            f"{sum(1 for _, to in during if to == 'resolved')} resolved (first at "
            f"{during[0][0] if during else None} s); after recovery "
            f"{[x for x in fired if x[0] >= 660]}"
        )


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    asyncio.run(live())
    replay_healthy()
    replay_outage()
