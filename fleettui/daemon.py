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
import socket
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from collectors.base import PullSource, PushSource, build_source
from collectors.options import OptionsError
from fleettui.alerts.wiring import tasks_from_config
from fleettui.backend import open_store, runs_fleet_tasks
from fleettui.config import Config, ConfigError
from fleettui.enrich import Enrichment, build_enrichment
from fleettui.metrics import DaemonCollector, StoreSizeTask, parse_listen, registry_for
from fleettui.metrics import serve as serve_metrics
from fleettui.paths import (
    DaemonInfo,
    register_daemon,
    remove_daemon_info,
    write_daemon_info,
    write_operator_token,
)
from fleettui.runtime import Runtime, Task, utcnow
from fleettui.source_health import SourceHealth
from storage import guard, quack
from storage.columns import UPSERT_KEYS
from storage.lake import (
    EvaluatorLeaseTask,
    LakeMaintenanceTask,
    LakeStore,
    claim_evaluator,
    release_evaluator,
)
from storage.retention import RetentionTask
from storage.rollups import RollupOptions, RollupTask, TierRetention
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
        raise ConfigError(
            f"{config.path}: two sources are named {dup[0]!r}; give each a unique name"
        )
    return out


def build_tasks(config: Config, store: Store) -> list[Task]:
    """Periodic tasks beside collection: retention, and the alert engine when configured.
    On a lake only the evaluating daemon runs them (one alert evaluator per fleet)."""
    d = config.daemon
    if not runs_fleet_tasks(config):
        return []
    tasks: list[Task] = [
        RetentionTask(store, d.retention_h, wait_for_rollups=d.rollup_interval_s > 0)
    ]
    if d.rollup_interval_s > 0:
        tasks.append(
            RollupTask(
                store,
                d.rollup_interval_s,
                RollupOptions(late_s=d.rollup_late_s),
                TierRetention(
                    timedelta(days=d.retention_1m_days), timedelta(days=d.retention_1h_days)
                ),
            )
        )
    if isinstance(store, LakeStore):
        tasks.append(LakeMaintenanceTask(store))
    base_dir = Path(config.path).parent if config.sources_from_file else Path.cwd()
    return tasks + list(
        tasks_from_config(config.alerts, store, where=f"{config.path} [alerts]", base_dir=base_dir)
    )


def build_enrichment_from(config: Config) -> Enrichment:
    """Topology, contracted tenancy and latency targets from the config (files relative
    to the config's folder); a bad one is a ConfigError naming file and line or key."""
    base_dir = Path(config.path).parent if config.sources_from_file else Path.cwd()
    try:
        return build_enrichment(
            config.topology, config.tenancy, config.latency_targets, config.path, base_dir
        )
    except OptionsError as exc:
        raise ConfigError(str(exc)) from exc


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


def _serve(store: Store, config: Config, db: Path, metrics: str | None = None) -> DaemonInfo | None:
    if not config.daemon.serve_enabled:
        return None
    host, port = quack.parse_endpoint(config.daemon.serve)
    viewer, operator = quack.new_token(), quack.new_token()
    endpoint = quack.serve(store.con, host, port, viewer)
    if isinstance(store, LakeStore):  # the lake's own Parquet files stay reachable
        store.con.execute("SET allowed_directories = ?", [[store.target.data_path]])
    # from here on the daemon decides what a token may run, and nothing can
    # reach outside the store (see storage/guard.py)
    guard.install(store.con, operator)
    info = DaemonInfo(
        os.getpid(), endpoint, viewer, str(db.resolve()), utcnow().isoformat(), metrics
    )
    write_operator_token(db, info.pid, operator)
    write_daemon_info(db, info)

    def reserve(s: Store) -> None:  # a reopened store is a new connection: serve it again
        h, p = quack.parse_endpoint(info.endpoint)
        quack.serve(s.con, h, p, info.token)
        guard.install(s.con, operator)
        write_daemon_info(db, info)

    store.on_reopen.append(reserve)
    try:
        register_daemon(info)
    except OSError as exc:  # found through --db still; not worth stopping for
        log.warning("cannot register in %s: %s", exc.filename, exc.strerror)
    return info


def _store_state(
    runtime: Runtime, db: Path, info: DaemonInfo | None, written: list[str | None]
) -> None:
    """Keep the info file's `store_error` true, so `fleettui sql` can say the store
    failed instead of a puzzling Quack error."""
    failure = runtime.store.failure
    if info is None or failure == written[0]:
        return
    written[0] = failure
    write_daemon_info(db, dataclasses.replace(info, store_error=failure))


async def _serve_metrics(
    config: Config, runtime: Runtime, sources, tasks, health: SourceHealth, store: Store
) -> tuple[asyncio.Server | None, str | None]:
    """The daemon's own /metrics when `metrics_listen` is set: (server, "HOST:PORT")."""
    if not config.daemon.metrics_listen:
        return None, None
    host, port = parse_listen(config.daemon.metrics_listen)
    d = config.daemon
    size = StoreSizeTask(
        store,
        d.retention_h,
        keep_1m_h=d.retention_1m_days * 24,
        keep_1h_h=d.retention_1h_days * 24,
    )
    await asyncio.to_thread(size.measure)
    runtime.tasks.append(size)
    collector = DaemonCollector(runtime, sources, tasks, health, size.snapshot)
    try:
        server = await serve_metrics(registry_for(collector), host, port)
    except OSError as exc:
        raise ConfigError(
            f"metrics_listen {config.daemon.metrics_listen}: cannot listen: {exc.strerror or exc}"
        ) from None
    bound = server.sockets[0].getsockname()
    where = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
    return server, where


def status_line(runtime: Runtime, store: Store) -> str:
    """Rows appended per table; dimension tables (hosts, GPUs, ...) as the distinct rows
    the store holds: each sample re-merges its host, so counting merges would say
    `hosts 10,471` for 56 hosts."""
    s = runtime.stats
    appended = {t: n for t, n in s.rows_by_table.items() if n and t not in UPSERT_KEYS}
    merged = sorted(t for t, n in s.rows_by_table.items() if n and t in UPSERT_KEYS)
    known = []
    cur = store.cursor()
    try:
        for t in merged:
            known.append(f"{t} {cur.execute(f'SELECT count(*) FROM {t}').fetchone()[0]:,}")
    except Exception as exc:  # a status line never stops the daemon
        known.append(f"(counts unavailable: {str(exc).splitlines()[0]})")
    finally:
        cur.close()
    tables = ", ".join(f"{t} {n:,}" for t, n in sorted(appended.items()))
    return (
        f"{sum(appended.values()):,} rows appended ({tables})"
        + (f"; known: {', '.join(known)}" if known else "")
        + f"; {s.gathers} gathers, {s.gather_failures} failed; "
        f"{s.batches_refused} batches refused"
        + (
            f"; lake: {store.duplicates_skipped:,} rows already stored (redelivered), "
            f"{store.conflicts:,} commits retried"
            if isinstance(store, LakeStore)
            else ""
        )
    )


async def run_daemon(
    config: Config,
    sources: Sequence[PullSource | PushSource],
    stop: asyncio.Event | None = None,
    enrichment: Enrichment | None = None,
) -> int:
    db = config.db_path
    os.umask(0o077)  # the store, its WAL and every file the daemon creates: owner only
    if enrichment is None:
        enrichment = build_enrichment_from(config)
    store = open_store(config, memory_limit=config.daemon.memory_limit or None)
    info = None
    metrics_server = None
    evaluator = None  # this daemon's name in the lake's evaluator lease
    try:
        tasks = build_tasks(config, store)
        if isinstance(store, LakeStore) and runs_fleet_tasks(config):
            evaluator = f"{socket.gethostname()}:{db}"
            claim_evaluator(store, evaluator)  # one evaluator per lake, or a clear error
            tasks.append(EvaluatorLeaseTask(store, evaluator))
        health = SourceHealth()
        runtime = Runtime(
            store,
            sources,
            tasks,
            observe=health.observe,
            enrich=enrichment,
            store_failure_max_s=config.daemon.store_failure_max_s,
        )
        metrics_server, metrics_at = await _serve_metrics(
            config, runtime, sources, tasks, health, store
        )
        info = _serve(store, config, db, metrics_at)
        names = ", ".join(f"{s.name}" for s in sources) or "none"
        print(
            f"fleettui daemon: store {store.path}; sources: {names}"
            + (
                ""
                if runs_fleet_tasks(config)
                else "; alerts, rollups and retention left to the lake's evaluator"
            )
            + (f"; serving {info.endpoint} (token in {db.name}.daemon.json)" if info else "")
            + (f"; metrics http://{metrics_at}/metrics" if metrics_at else ""),
            file=sys.stderr,
            flush=True,
        )
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests): the caller sets `stop`
        seed_known_hosts(store, sources)
        status = asyncio.create_task(_report(runtime, store, config.daemon.status_interval_s, stop))
        written: list[str | None] = [None]
        watch = asyncio.create_task(_watch_store(runtime, db, info, written, stop))
        await runtime.run(stop)
        status.cancel()
        watch.cancel()
        print(
            f"fleettui daemon: stopped; {status_line(runtime, store)}", file=sys.stderr, flush=True
        )
        if runtime.failed:
            print(
                f"fleettui daemon: exiting: {runtime.failed}; {runtime.stats.rows_dropped:,} "
                "rows dropped",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_STORE_FAILED
        return 0
    finally:
        if metrics_server is not None:
            metrics_server.close()
        if info is not None:
            remove_daemon_info(db, info.pid)
            try:
                store.con.execute("CALL quack_stop(?)", [info.endpoint])
            except Exception as exc:  # the store still closes cleanly below
                log.debug("quack_stop: %s", exc)
        if evaluator is not None and isinstance(store, LakeStore):
            release_evaluator(store, evaluator)
        store.close()


EXIT_STORE_FAILED = 75  # EX_TEMPFAIL: the supervisor should restart the daemon


def seed_known_hosts(store: Store, sources: Sequence[PullSource | PushSource]) -> None:
    """Tell sources that cap new hosts which hosts the store already knows, so a
    restart is not a flood of "new" hosts."""
    seeders = [s for s in sources if hasattr(s, "seed_hosts")]
    if not seeders:
        return
    rows = (
        store.cursor()
        .execute("SELECT host, epoch(last_seen) FROM hosts WHERE last_seen IS NOT NULL")
        .fetchall()
    )
    for s in seeders:
        s.seed_hosts(rows)  # type: ignore[attr-defined]
    # reports stored in the last minutes before a crash: the broker redelivers those it
    # had no ack for, and they must not be stored twice
    seqs = (
        store.cursor()
        .execute(
            "SELECT host, boot, seq FROM report_seqs WHERE ts >="
            " (SELECT max(ts) FROM report_seqs) - INTERVAL 5 MINUTE ORDER BY host, boot, seq"
        )
        .fetchall()
    )
    for s in sources:
        if hasattr(s, "seed_seqs"):
            s.seed_seqs(seqs)


async def _watch_store(
    runtime: Runtime,
    db: Path,
    info: DaemonInfo | None,
    written: list[str | None],
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        await asyncio.sleep(1.0)
        try:
            _store_state(runtime, db, info, written)
        except OSError as exc:  # the disk is full: the info file may not be writable either
            log.debug("daemon info: %s", exc)


async def _report(runtime: Runtime, store: Store, every_s: float, stop: asyncio.Event) -> None:
    if every_s <= 0:
        return
    while not stop.is_set():
        await asyncio.sleep(every_s)
        print(f"fleettui daemon: {status_line(runtime, store)}", file=sys.stderr, flush=True)
