"""`fleettui daemon`: the headless collector.

Opens (and migrates) the store, serves it live over Quack on loopback with a
fresh token, runs the configured sources and tasks through the Runtime, logs a
progress line now and then, and on SIGTERM/SIGINT stops the sources, flushes
what was gathered, checkpoints and exits 0. Never imports Textual.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from collectors.base import PullSource, PushSource, build_source
from collectors.options import OptionsError
from fleettui.alerts.wiring import tasks_from_config
from fleettui.config import Config, ConfigError
from fleettui.paths import DaemonInfo, remove_daemon_info, write_daemon_info
from fleettui.runtime import Runtime, Task, utcnow
from storage import quack
from storage.retention import RetentionTask
from storage.store import Store

log = logging.getLogger("fleettui.daemon")


def build_sources(config: Config) -> list[PullSource | PushSource]:
    """Every configured source, validated; a bad section is a ConfigError."""
    out = []
    for spec in config.sources:
        try:
            out.append(build_source(spec.kind, spec.options, spec.where))
        except OptionsError as exc:
            raise ConfigError(str(exc)) from exc
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{config.path}: two sources are named {dup[0]!r}; give each a unique name")
    return out


def build_tasks(config: Config, store: Store) -> list[Task]:
    """Periodic tasks beside collection: retention, and the alert engine when configured."""
    tasks: list[Task] = [RetentionTask(store, config.daemon.retention_h)]
    base_dir = Path(config.path).parent if config.sources_from_file else Path.cwd()
    return tasks + list(tasks_from_config(config.alerts, store, where=f"{config.path} [alerts]",
                                          base_dir=base_dir))


def check_tasks(config: Config) -> None:
    """Validate the [alerts] section and its rule files before anything is written:
    the rules are built against an empty in-memory store."""
    scratch = Store.open(":memory:")
    try:
        build_tasks(config, scratch)
    except OptionsError as exc:
        raise ConfigError(str(exc)) from exc
    finally:
        scratch.close()


def _serve(store: Store, config: Config, db: Path) -> DaemonInfo | None:
    if not config.daemon.serve_enabled:
        return None
    host, port = quack.parse_endpoint(config.daemon.serve)
    token = quack.new_token()
    endpoint = quack.serve(store.con, host, port, token)
    info = DaemonInfo(os.getpid(), endpoint, token, str(db), utcnow().isoformat())
    write_daemon_info(db, info)

    def reserve(s: Store) -> None:  # a reopened store is a new connection: serve it again
        h, p = quack.parse_endpoint(info.endpoint)
        quack.serve(s.con, h, p, info.token)
        write_daemon_info(db, info)

    store.on_reopen.append(reserve)
    return info


def _store_state(runtime: Runtime, db: Path, info: DaemonInfo | None,
                 written: list[str | None]) -> None:
    """Keep the info file's `store_error` true, so `fleettui sql` can say the store
    failed instead of a puzzling Quack error."""
    failure = runtime.store.failure
    if info is None or failure == written[0]:
        return
    written[0] = failure
    write_daemon_info(db, dataclasses.replace(info, store_error=failure))


def _status_line(runtime: Runtime) -> str:
    s = runtime.stats
    tables = ", ".join(f"{t} {n:,}" for t, n in sorted(s.rows_by_table.items()) if n)
    return (f"{s.rows_written:,} rows written ({tables}); {s.gathers} gathers, "
            f"{s.gather_failures} failed; {s.batches_refused} batches refused")


async def run_daemon(config: Config, sources: Sequence[PullSource | PushSource],
                     stop: asyncio.Event | None = None) -> int:
    db = config.db_path
    store = Store.open(db, memory_limit=config.daemon.memory_limit or None)
    info = None
    try:
        info = _serve(store, config, db)
        tasks = build_tasks(config, store)
        names = ", ".join(f"{s.name}" for s in sources) or "none"
        print(f"fleettui daemon: store {db}; sources: {names}"
              + (f"; serving {info.endpoint} (token in {db.name}.daemon.json)" if info else ""),
              file=sys.stderr, flush=True)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests): the caller sets `stop`
        seed_known_hosts(store, sources)
        runtime = Runtime(store, sources, tasks,
                          store_failure_max_s=config.daemon.store_failure_max_s)
        status = asyncio.create_task(_report(runtime, config.daemon.status_interval_s, stop))
        written: list[str | None] = [None]
        watch = asyncio.create_task(_watch_store(runtime, db, info, written, stop))
        await runtime.run(stop)
        status.cancel()
        watch.cancel()
        print(f"fleettui daemon: stopped; {_status_line(runtime)}", file=sys.stderr, flush=True)
        if runtime.failed:
            print(f"fleettui daemon: exiting: {runtime.failed}; {runtime.stats.rows_dropped:,} "
                  "rows dropped", file=sys.stderr, flush=True)
            return EXIT_STORE_FAILED
        return 0
    finally:
        if info is not None:
            remove_daemon_info(db, info.pid)
            try:
                store.con.execute("CALL quack_stop(?)", [info.endpoint])
            except Exception as exc:  # the store still closes cleanly below
                log.debug("quack_stop: %s", exc)
        store.close()


EXIT_STORE_FAILED = 75  # EX_TEMPFAIL: the supervisor should restart the daemon


def seed_known_hosts(store: Store, sources: Sequence[PullSource | PushSource]) -> None:
    """Tell sources that cap new hosts which hosts the store already knows, so a
    restart is not a flood of "new" hosts."""
    seeders = [s for s in sources if hasattr(s, "seed_hosts")]
    if not seeders:
        return
    rows = store.cursor().execute(
        "SELECT host, epoch(last_seen) FROM hosts WHERE last_seen IS NOT NULL").fetchall()
    for s in seeders:
        s.seed_hosts(rows)  # type: ignore[attr-defined]


async def _watch_store(runtime: Runtime, db: Path, info: DaemonInfo | None,
                       written: list[str | None], stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(1.0)
        try:
            _store_state(runtime, db, info, written)
        except OSError as exc:  # the disk is full: the info file may not be writable either
            log.debug("daemon info: %s", exc)


async def _report(runtime: Runtime, every_s: float, stop: asyncio.Event) -> None:
    if every_s <= 0:
        return
    while not stop.is_set():
        await asyncio.sleep(every_s)
        print(f"fleettui daemon: {_status_line(runtime)}", file=sys.stderr, flush=True)
