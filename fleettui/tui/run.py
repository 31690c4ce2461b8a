"""Entry points the CLI calls: `fleettui demo` and `fleettui` (no subcommand)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import duckdb

from fleettui.tui.app import FleetApp, utc_now
from fleettui.tui.demo import fill_history, sim_collector


def demo_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("fleettui")) / "demo.duckdb"


def run_demo(
    path: str | Path | None = None, *, scale: int = 1, seed: int = 7, backfill_s: float = 600.0
) -> None:
    """`fleettui demo`: the simulated fleet collected in-process into a local DuckDB file.

    The file is started afresh each run; the last `backfill_s` simulated seconds
    are written first (every 5 s) so history and time travel have data at once.
    """
    from collectors.sim.source import SimSource
    from storage.store import Store

    path = Path(path) if path else demo_path()
    for p in (path, Path(f"{path}.wal")):
        p.unlink(missing_ok=True)
    store = Store.open(path)
    now = utc_now().replace(microsecond=0)
    source = SimSource(seed=seed, scale=scale, start=now - timedelta(seconds=backfill_s))
    fill_history(store, source, now - timedelta(seconds=backfill_s), backfill_s, step_s=5.0)
    try:
        FleetApp(store.cursor, clock=utc_now, collect=sim_collector(store, source, utc_now)).run()
    finally:
        store.close()


def run_app(
    cursor: Callable[[], duckdb.DuckDBPyConnection] | None = None,
    *,
    path: str | Path | None = None,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> None:
    """`fleettui`: the app over any DuckDB reads.

    Give a cursor factory, or a connection (e.g. `storage.quack.connect_quack(...)`
    attached to a running daemon), or the path of a store file no daemon holds.
    """
    if cursor is None and connection is not None:
        cursor = connection.cursor
    store = None
    if cursor is None:
        from storage.store import Store

        if path is None:
            raise ValueError("run_app needs a cursor factory, a connection or a store path")
        store = Store.open(path, read_only=True)
        cursor = store.cursor
    try:
        FleetApp(cursor, clock=utc_now).run()
    finally:
        if store is not None:
            store.close()
