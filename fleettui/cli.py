"""The `fleettui` command: one console script, a subcommand per way of using it.

Errors people can fix (bad config, locked or missing database, wrong token,
bad query) print one line, `fleettui <cmd>: error: ...`, and exit non-zero;
tracebacks are for bugs. Heavy imports (Textual, the collectors) happen inside
the subcommand that needs them, so `fleettui sql` and the daemon start fast and
never load Textual.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable

from fleettui import __version__
from fleettui.formats import FORMATS
from fleettui.safe_text import log_to_stderr
from fleettui.tui.launch import add_app_arguments

EXIT_USAGE, EXIT_ERROR = 2, 1


def _user_errors() -> tuple[type[BaseException], ...]:
    from collectors.options import OptionsError
    from fleettui.config import ConfigError
    from fleettui.export_cli import ExportError
    from storage.batch import BatchError
    from storage.migrate import SchemaError
    from storage.quack import QuackError
    from storage.reader import QueryError, ReadOnlyError
    from storage.store import StoreError

    return (
        ConfigError,
        OptionsError,
        StoreError,
        SchemaError,
        QuackError,
        QueryError,
        ReadOnlyError,
        BatchError,
        ExportError,
    )


# -- daemon ------------------------------------------------------------------
def _add_daemon(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "daemon",
        help="run the collectors headless and serve the store",
        description="Run the configured collectors, write their telemetry to the store and serve "
        "the live store to `fleettui sql` and the app over Quack on 127.0.0.1. "
        "Stops cleanly on SIGTERM or Ctrl-C.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config (see docs/config.md)")
    p.add_argument(
        "--db",
        metavar="FILE",
        help="database file (default: the config's, else "
        "~/.local/share/fleettui/fleet.duckdb or $FLEETTUI_DB)",
    )
    p.add_argument(
        "--sim", action="store_true", help="collect the simulated fleet (no config needed)"
    )
    p.add_argument(
        "--scale", type=int, metavar="N", help="with --sim: multiply the fleet (33 -> 10,032 GPUs)"
    )
    p.add_argument("--no-serve", action="store_true", help="do not serve the store over Quack")
    p.add_argument("--list-sources", action="store_true", help="list the source kinds and exit")
    p.set_defaults(func=_run_daemon)


def _run_daemon(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from collectors.base import source_kinds
    from fleettui.config import SIM_SOURCES, Config, ConfigError, SourceSpec, load_config
    from fleettui.daemon import build_enrichment_from, build_sources, check_tasks, run_daemon

    if args.list_sources:
        print("\n".join(source_kinds()))
        return 0
    if args.config:
        config = load_config(args.config)
    elif args.sim:
        config = Config(sources=SIM_SOURCES)
    else:
        raise ConfigError("nothing to collect: pass --config FILE or --sim")
    if args.sim and args.config:
        config = replace(config, sources=config.sources + SIM_SOURCES)
    if args.scale is not None:
        if not args.sim:
            raise ConfigError("--scale goes with --sim")
        config = replace(
            config,
            sources=tuple(
                SourceSpec(s.kind, {**s.options, "scale": args.scale}, s.where)
                if s.where == "--sim"
                else s
                for s in config.sources
            ),
        )
    if args.db:
        config = replace(config, daemon=replace(config.daemon, db=args.db))
    if args.no_serve:
        config = replace(config, daemon=replace(config.daemon, serve_enabled=False))
    if not config.sources:
        raise ConfigError(f"{config.path}: no [[sources]] configured")
    sources = build_sources(config)
    check_tasks(config)
    enrichment = build_enrichment_from(config)
    return asyncio.run(run_daemon(config, sources, enrichment=enrichment))


# -- sql ---------------------------------------------------------------------
def _add_sql(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sql",
        help="run SQL over the stored telemetry",
        description="Run one SQL query against the store: through the running daemon when there is "
        "one (found beside the database), else against the database file, read-only.",
        epilog='example: fleettui sql "SELECT host, avg(util_pct) FROM gpu_samples GROUP BY host"',
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--db",
        metavar="FILE",
        help="database file (default: $FLEETTUI_DB or ~/.local/share/fleettui/fleet.duckdb)",
    )
    where.add_argument("--connect", metavar="quack:HOST:PORT", help="a daemon's Quack endpoint")
    where.add_argument(
        "--config",
        metavar="FILE",
        help="the store named by this TOML config's [store] (e.g. a DuckLake), read-only",
    )
    p.add_argument(
        "--token",
        help="access token for --connect (default: $FLEETTUI_TOKEN, or the "
        "local daemon's token file)",
    )
    p.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table)"
    )
    p.add_argument(
        "--archive",
        metavar="DIR",
        help="also query a `fleettui export` archive: each "
        "table is its archived rows followed by the live ones (docs/history.md)",
    )
    p.add_argument("query", help="the SQL to run")
    p.set_defaults(func=_run_sql)


def _run_sql(args: argparse.Namespace) -> int:
    from fleettui.sql_cli import main

    return main(args)


# -- demo --------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the app on the simulated fleet (the embedded default)",
        description="Collect the simulated fleet in-process into a local database and open the app "
        "on it. With --headless, collect for --seconds and print a summary instead.",
    )
    p.add_argument(
        "--db",
        metavar="FILE",
        help="database file (default: a fresh demo.duckdb in the user data dir)",
    )
    p.add_argument(
        "--scale", type=int, default=1, metavar="N", help="multiply the fleet (default 1: 304 GPUs)"
    )
    p.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    p.add_argument("--headless", action="store_true", help="no app: collect, then print a summary")
    p.add_argument(
        "--seconds", type=float, default=15.0, help="with --headless: how long to collect"
    )
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from fleettui.demo import run_demo

    return run_demo(args)


# Further subcommands live in their own modules, each with `add_parser(sub)`.
_PLUGGED: list[str] = ["fleettui.agent", "fleettui.status_cli", "fleettui.export_cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleettui",
        description="FleetTUI: see which racks, links and tenants of a GPU fleet are hot, idle, "
        "slow or failing, and ask questions of the history.",
    )
    parser.add_argument("--version", action="version", version=f"fleettui {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")
    add_app_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    adders: list[Callable[[argparse._SubParsersAction], None]] = [_add_daemon, _add_sql, _add_demo]
    for mod in _PLUGGED:
        adders.append(importlib.import_module(mod).add_parser)
    for add in adders:
        add(sub)
    return parser


_VALUE_OPTIONS = ("--token",)


def _join_values(argv: list[str]) -> list[str]:
    """`--token -abc` -> `--token=-abc`: a token is any string, even one starting with '-'
    (argparse would take it for an option)."""
    out, it = [], iter(argv)
    for a in it:
        if a in _VALUE_OPTIONS:
            nxt = next(it, None)
            out.append(a if nxt is None else f"{a}={nxt}")
        else:
            out.append(a)
    return out


# The app's options (no COMMAND) and the same options of the subcommands.
_APP_OPTIONS = (
    ("app_db", "db", "--db"),
    ("app_connect", "connect", "--connect"),
    ("app_token", "token", "--token"),
    ("app_config", "config", "--config"),
)
# Where a subcommand takes at most one of them (`fleettui sql`: one store).
_ONE_OF = {"sql": ("db", "connect", "config")}


def _carry_app_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`fleettui --db F sql ...` means `fleettui sql --db F ...`: an option given before
    the command is the command's, never silently dropped (the default store read, or
    written by a daemon, instead of F). One the command does not take is an error."""
    if args.command is None:
        return
    for app_name, name, flag in _APP_OPTIONS:
        value = getattr(args, app_name, None)
        if value is None:
            continue
        if not hasattr(args, name):
            parser.error(f"`fleettui {args.command}` takes no {flag}")
        given = getattr(args, name)
        if given is not None and given != value:
            parser.error(f"{flag} given twice: {value!r} before `{args.command}`, {given!r} after")
        setattr(args, name, value)
    one_of = [n for n in _ONE_OF.get(args.command, ()) if getattr(args, n, None) is not None]
    if len(one_of) > 1:
        parser.error(
            f"`fleettui {args.command}`: give one of " + ", ".join(f"--{n}" for n in one_of)
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_values(sys.argv[1:] if argv is None else list(argv)))
    _carry_app_options(parser, args)
    log_to_stderr(
        logging.INFO if args.verbose else logging.WARNING,
        "%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    os.umask(0o077)  # stores, WALs, info files, exports: FleetTUI's files are its user's alone
    func = getattr(args, "func", None)
    if func is None:  # no COMMAND: the app
        from fleettui.tui.launch import run_app as func
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except _user_errors() as exc:
        print(f"fleettui {args.command or 'app'}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
