"""Entry points the CLI calls: `fleettui demo` and `fleettui` (no subcommand).

`run_demo_app(args)`: the simulated fleet collected in-process (the shared
runtime on a background thread) into a fresh local DuckDB file, with the last
ten minutes back-filled so history and time travel have data at once.

`run_app(db=None, connect=None, token=None)`: the app over the store as
`fleettui sql` finds it: the daemon named by `connect` (quack:HOST:PORT), else
the local daemon found beside the database, else the database file read-only.
"""

from __future__ import annotations

import os
from datetime import timedelta

from fleettui.tui.app import FleetApp, utc_now
from fleettui.tui.demo import BackgroundRuntime, fill_history

BACKFILL_S = 600.0


def run_demo_app(args) -> int:
    from collectors.sim.source import SimSource
    from fleettui.demo import demo_db_path, fresh_db
    from storage.store import Store

    path = fresh_db(demo_db_path(getattr(args, "db", None)))
    store = Store.open(path)
    scale = getattr(args, "scale", 1) or 1
    seed = getattr(args, "seed", 7)
    now = utc_now().replace(microsecond=0)
    start = now - timedelta(seconds=BACKFILL_S)
    history = SimSource(seed=seed, scale=scale, start=start)
    # back-fill every 5 s (every 30 s at large scales, to start in a few seconds)
    fill_history(store, history, start, BACKFILL_S, step_s=5.0 if scale <= 4 else 30.0)
    live = SimSource(seed=seed, scale=scale, start=start)
    try:
        FleetApp(store.con, clock=utc_now, collector=BackgroundRuntime(store, [live])).run()
    finally:
        store.close()
    return 0


def run_app(db: str | None = None, connect: str | None = None, token: str | None = None) -> int:
    from fleettui.sql_cli import open_reader

    reader = open_reader(db, connect, token or os.environ.get("FLEETTUI_TOKEN"))
    try:
        FleetApp(reader, clock=utc_now).run()
    finally:
        reader.close()
    return 0
