"""`fleettui demo`: the simulated fleet, collected in-process, shown in the app.

With --headless (no terminal UI): collect for a while with a progress line,
then print the fleet summary through the same SQL `fleettui sql` runs.
"""

from __future__ import annotations

import asyncio
import sys
import time

from collectors.sim.source import SimSource
from fleettui.formats import as_table
from fleettui.paths import demo_db_path, fresh_db
from fleettui.runtime import Runtime
from storage import summary
from storage.store import Store


async def collect_for(store: Store, source: SimSource, seconds: float) -> Runtime:
    runtime = Runtime(store, [source])
    stop = asyncio.Event()
    run = asyncio.create_task(runtime.run(stop))
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        await asyncio.sleep(min(1.0, seconds - elapsed))
        print(
            f"\rcollecting the simulated fleet: {min(elapsed + 1, seconds):4.0f}/{seconds:.0f} s, "
            f"{runtime.stats.rows_written:,} rows",
            end="",
            file=sys.stderr,
            flush=True,
        )
    stop.set()
    await run
    print(file=sys.stderr)
    return runtime


def run_headless(args) -> int:
    path = fresh_db(demo_db_path(args.db))
    store = Store.open(path)
    try:
        asyncio.run(collect_for(store, SimSource(seed=args.seed, scale=args.scale), args.seconds))
        cur = store.cursor()
        for title, sql in (
            ("Fleet", summary.FLEET_TOTALS),
            ("Tenants", summary.TENANT_USAGE),
            ("Recent events", summary.RECENT_EVENTS),
        ):
            res = cur.execute(sql)
            print(
                f"\n{title}\n" + as_table([d[0] for d in res.description], res.fetchall()), end=""
            )
        print(f'\nstore: {path}\nask more with: fleettui sql --db {path} "SELECT ..."')
    finally:
        store.close()
    return 0


def run_demo(args) -> int:
    if args.headless:
        return run_headless(args)
    try:
        from fleettui.tui.launch import run_demo_app
    except ImportError:
        print(
            "fleettui demo: the terminal app is not available in this build; "
            "showing the headless demo",
            file=sys.stderr,
        )
        return run_headless(args)
    return run_demo_app(args)
