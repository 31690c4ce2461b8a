"""`fleettui sql`: SQL over the stored telemetry.

Goes through the running daemon (Quack, found by its info file beside the
database, or, with no --db, in the registry of daemons running on this machine)
when there is one, else opens the database file read-only. Either way nothing
is written and nothing outside the store is read: the daemon admits only one pure
read from a viewer token (storage/guard.py); on a file, the connection is
read-only, external access is off, and the query is judged as the daemon judges it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fleettui.formats import render
from fleettui.paths import default_db_path, read_daemon_info, read_operator_token, running_daemons
from storage import guard, quack
from storage.reader import (
    LocalReader,
    QuackReader,
    QueryError,
    Reader,
    check_pure_read,
    check_read_only,
)
from storage.store import Store


def find_daemon(db: str | None):  # -> DaemonInfo | None
    """The daemon for `db`; with no `db`, the one for the default database, else the
    newest daemon of this user running on this machine (saying which on stderr)."""
    path = Path(db).expanduser() if db else default_db_path()
    info = read_daemon_info(path)
    if info is not None or db:
        return info
    running = running_daemons()
    if not running:
        return None
    info = running[0]
    others = (
        f"; {len(running) - 1} other(s) running, pass --db to choose" if len(running) > 1 else ""
    )
    print(
        f"fleettui: using the daemon for {info.db} (pid {info.pid}, {info.endpoint}){others}",
        file=sys.stderr,
    )
    return info


def open_reader(db: str | None, connect: str | None, token: str | None) -> Reader:
    """A read-only view of the store: the named daemon, the local daemon, or the file.
    The daemon's own user also gets its operator token (acknowledge, silence)."""
    path = Path(db).expanduser() if db else default_db_path()
    if connect:
        endpoint = connect if connect.startswith("quack:") else f"quack:{connect}"
        if token is None:
            info = read_daemon_info(path)
            if info and info.endpoint == endpoint:
                token = info.token
        if token is None:
            raise quack.QuackError(f"{endpoint}: no token (pass --token or set FLEETTUI_TOKEN)")
        return QuackReader(endpoint, token)
    info = find_daemon(db)
    if info is not None:
        try:
            return QuackReader(
                info.endpoint,
                info.token,
                operator_token=read_operator_token(Path(info.db), info.pid),
            )
        except (quack.QuackError, QueryError) as exc:
            raise _store_failure(Path(info.db)) or exc from None
    store = Store.open(path, read_only=True)
    # as on the daemon: nothing outside the store, and no statement can undo that
    for sql in guard.LOCKDOWN:
        store.con.execute(sql)
    return LocalReader(store.con, str(path), owns=True)


def open_config_reader(config_path: str) -> Reader:
    """The store of a config's [store], read-only: on a lake, the whole fleet that every
    daemon writes; on a file, that file."""
    from fleettui.backend import open_store
    from fleettui.config import load_config

    store = open_store(load_config(config_path), read_only=True)
    return LocalReader(store.con, store.path, owns=True)


def _store_failure(path: Path) -> quack.QuackError | None:
    """The daemon's own word that its store is failing (disk full), which Quack
    otherwise reports as a refused token or a server error."""
    info = read_daemon_info(path)
    if info is None or not info.store_error:
        return None
    return quack.QuackError(f"the daemon (pid {info.pid}) cannot use its store: {info.store_error}")


def main(args) -> int:
    check_read_only(args.query)
    token = args.token or os.environ.get("FLEETTUI_TOKEN")
    if getattr(args, "archive", None):
        from fleettui.archive import open_archive

        reader = open_archive(Path(args.archive).expanduser(), args.db, args.connect, token)
    elif getattr(args, "config", None):
        reader = open_config_reader(args.config)
    else:
        reader = open_reader(args.db, args.connect, token)
    try:
        if isinstance(reader, LocalReader):  # a daemon judges for itself
            check_pure_read(reader.con, args.query)
        columns, rows = reader.rows(args.query)
    except (quack.QuackError, QueryError) as exc:
        path = Path(args.db).expanduser() if args.db else default_db_path()
        raise _store_failure(path) or exc from None
    finally:
        reader.close()
    if columns:
        print(render(args.format, columns, rows, tty=sys.stdout.isatty()), end="")
    return 0
