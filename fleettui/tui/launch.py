"""Entry points the CLI calls: `fleettui demo` and `fleettui` (no subcommand).

Light on import (Textual loads only when the app runs), so the CLI can add the
app's options without slowing `fleettui sql` or the daemon.

`run_demo_app(args)`: the simulated fleet collected in-process (the shared
runtime on a background thread, with the daemon's tasks: retention, and the
alert engine when present) into a fresh local DuckDB file; the last ten
minutes are back-filled beside it, so history and time travel have data within
seconds while the app opens at once.

`run_app(args)` (`fleettui` alone): attach to the daemon named by `--connect`,
else the daemon found beside the database; else collect the configured sources
in-process (`--config`); else show the database file read-only.

Each opens its store before it imports Textual (`start_app`): the rack view's first
query runs in a thread while Textual loads and the app is built.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

BACKFILL_S = 600.0


APP_DUCKDB_THREADS = 1


def open_app_store(path: str | Path):  # -> storage.store.Store
    """The store when the app collects for itself. DuckDB runs on one thread: the
    views' refreshes are small queries where a second thread adds CPU (measured at
    10,032 GPUs: rack refresh 89 ms CPU on one thread, 103-137 ms on two) and
    a 2-core operator laptop has the UI and the collection to run too. The live
    snapshot fills in a thread: the first frame does not wait for it (it reads
    history until the snapshot publishes)."""
    from storage.store import Store

    return Store.open(path, live_background=True, threads=APP_DUCKDB_THREADS)


def start_app(
    reader,  # storage.reader.Reader
    *,
    clock=None,  # fleettui.tui.clock.Clock; None: utc_now
    collector: Callable[[], Any] | None = None,
    run: Callable[[Any], object] | None = None,
    **app_kwargs: Any,
) -> None:
    """The app on `reader`, in this order: the rack view's first query started in a
    thread (DuckDB runs it without the GIL), then Textual imported and the app built
    beside it (~0.4-0.5 s of the start), then `run(app)` (default `app.run()`). The
    rack screen's first refresh takes that query's result. `collector()` builds the
    in-process collection after the query started. The query's thread has ended
    when this returns or raises."""
    from fleettui.tui.clock import utc_now
    from fleettui.tui.early_rack import start_rack_query

    clock = clock or utc_now
    early = start_rack_query(reader, clock())
    try:
        from fleettui.tui.app import FleetApp

        app = FleetApp(
            reader,
            clock=clock,
            collector=collector() if collector is not None else None,
            early_rack=early,
            **app_kwargs,
        )
        if run is None:
            app.run()
        else:
            run(app)
    finally:
        early.close()


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `fleettui` with no COMMAND (the app)."""
    g = parser.add_argument_group("the app (no COMMAND)")
    g.add_argument(
        "--connect",
        dest="app_connect",
        metavar="quack:HOST:PORT",
        help="a daemon's Quack endpoint (default: the local daemon, found beside --db)",
    )
    g.add_argument(
        "--token",
        dest="app_token",
        metavar="TOKEN",
        help="access token for --connect (default: $FLEETTUI_TOKEN or the daemon file)",
    )
    g.add_argument(
        "--config",
        dest="app_config",
        metavar="FILE",
        help="no daemon running: collect these sources in the app (TOML, as the daemon); "
        "with a DuckLake [store]: show the whole lake the daemons write",
    )
    g.add_argument(
        "--db",
        dest="app_db",
        metavar="FILE",
        help="database file (default: $FLEETTUI_DB or the user data dir)",
    )


def run_app(args: argparse.Namespace) -> int:
    from fleettui.paths import default_db_path, read_operator_token
    from fleettui.sql_cli import find_daemon, open_reader
    from storage.reader import QuackReader

    db = getattr(args, "app_db", None)
    connect = getattr(args, "app_connect", None)
    config_path = getattr(args, "app_config", None)
    token = getattr(args, "app_token", None) or os.environ.get("FLEETTUI_TOKEN")
    path = Path(db).expanduser() if db else default_db_path()
    if config_path and not connect and _is_lake(config_path):
        # the daemons write the lake; the app reads all of it, whichever daemon wrote it
        from fleettui.sql_cli import open_config_reader

        reader = open_config_reader(config_path)
        try:
            start_app(reader)
        finally:
            reader.close()
        return 0
    info = None if connect else find_daemon(db)
    if connect or info is not None or not config_path:
        if not connect and info is None and not path.exists():
            print(
                f"fleettui: no daemon runs for {path} and there is no such database; "
                "start `fleettui daemon`, pass --config FILE, or try `fleettui demo`",
                file=sys.stderr,
            )
            return 1
        if info is not None:  # the daemon's own user also holds its operator token
            reader = QuackReader(
                info.endpoint,
                info.token,
                operator_token=read_operator_token(Path(info.db), info.pid),
            )
        else:
            reader = open_reader(db, connect, token)
        try:
            start_app(reader)
        finally:
            reader.close()
        return 0
    return _run_collecting(config_path, db)


def _is_lake(config_path: str) -> bool:
    from fleettui.config import load_config

    return load_config(config_path).store.is_lake


def _run_collecting(config_path: str, db: str | None) -> int:
    """No daemon: the app collects the configured sources itself, into the store."""
    from dataclasses import replace

    from fleettui.background import BackgroundRuntime
    from fleettui.config import load_config
    from fleettui.daemon import build_enrichment_from, build_sources, build_tasks
    from storage.reader import LocalReader

    config = load_config(config_path)
    if db:
        config = replace(config, daemon=replace(config.daemon, db=db))
    # the sources first: a config they refuse creates no store
    sources = build_sources(config)
    enrichment = build_enrichment_from(config)
    store = open_app_store(config.db_path)
    try:
        start_app(
            LocalReader(store.con),
            collector=lambda: BackgroundRuntime(
                store, sources, tuple(build_tasks(config, store)), enrich=enrichment
            ),
            store=store,
        )
    finally:
        store.close()
    return 0


@dataclass(frozen=True, slots=True)
class DemoSources:
    live: Any  # collectors.sim.source.SimSource
    history: Any
    start: datetime
    step_s: float


def demo_sources(now: datetime, *, seed: int = 7, scale: int = 1) -> DemoSources:
    """The demo's two views of one simulated fleet started BACKFILL_S ago: `history`
    samples the past every 5 s (30 s at large scales) on a thread beside live
    collection, so the app opens at once and history fills in; `live` samples from
    now on. Each fault event is written once: the live source leaves out the events
    the history wrote (up to its last sample)."""
    from collectors.sim.source import SimSource
    from fleettui.tui.demo import history_times

    now = now.replace(microsecond=0)
    start = now - timedelta(seconds=BACKFILL_S)
    step_s = 5.0 if scale <= 4 else 30.0
    history_end = history_times(start, BACKFILL_S, step_s)[-1]
    return DemoSources(
        live=SimSource(seed=seed, scale=scale, start=start, events_after=history_end),
        history=SimSource(seed=seed, scale=scale, start=start),
        start=start,
        step_s=step_s,
    )


def demo_backfill(store, demo: DemoSources, engine, done) -> Callable[[Any], None]:
    """The back-fill thread's body: the history written, the alert engine (when there
    is one) evaluating it as it goes, `done` set at the end (then the engine goes live)."""
    from fleettui.tui.demo import fill_history

    def backfill(stop) -> None:
        try:
            fill_history(
                store,
                demo.history,
                demo.start,
                BACKFILL_S,
                step_s=demo.step_s,
                stop=stop,
                evaluate=engine.evaluate if engine else None,
                evaluate_every_s=engine.interval_s if engine else 15.0,
            )
        finally:
            done.set()

    return backfill


def run_demo_app(args: argparse.Namespace) -> int:
    import threading

    from fleettui.alerts.engine import AlertEngine
    from fleettui.background import AfterEvent, BackgroundRuntime
    from fleettui.config import Config
    from fleettui.daemon import build_tasks
    from fleettui.paths import demo_db_path, fresh_db
    from fleettui.tui.clock import utc_now
    from storage.reader import LocalReader

    path = fresh_db(demo_db_path(getattr(args, "db", None)))
    store = open_app_store(path)
    demo = demo_sources(
        utc_now(), seed=getattr(args, "seed", 7), scale=getattr(args, "scale", 1) or 1
    )
    live = demo.live

    try:
        tasks = tuple(build_tasks(Config(), store))
        engine = next((t for t in tasks if isinstance(t, AlertEngine)), None)
        history_done = threading.Event()
        backfill = demo_backfill(store, demo, engine, history_done)
        tasks = tuple(AfterEvent(t, history_done) if t is engine else t for t in tasks)
        collector = BackgroundRuntime(store, [live], tasks, backfill=backfill)
        start_app(LocalReader(store.con), collector=lambda: collector, store=store)
    finally:
        store.close()
    return 0
