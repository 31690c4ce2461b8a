"""`fleettui sql`: SQL over the stored telemetry.

Goes through the running daemon (Quack, found by its info file beside the
database) when there is one, else opens the database file read-only. Either
way nothing is written: only single SELECT/EXPLAIN statements run.
"""

from __future__ import annotations

import os
from pathlib import Path

from fleettui.formats import render
from fleettui.paths import default_db_path, read_daemon_info
from storage import quack
from storage.reader import LocalReader, QuackReader, Reader, check_read_only
from storage.store import Store


def open_reader(db: str | None, connect: str | None, token: str | None) -> Reader:
    """A read-only view of the store: the named daemon, the local daemon, or the file."""
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
    info = read_daemon_info(path)
    if info is not None:
        return QuackReader(info.endpoint, info.token)
    store = Store.open(path, read_only=True)
    return LocalReader(store.con, str(path), owns=True)


def main(args) -> int:
    check_read_only(args.query)
    token = args.token or os.environ.get("FLEETTUI_TOKEN")
    if getattr(args, "archive", None):
        from fleettui.archive import open_archive

        reader = open_archive(Path(args.archive).expanduser(), args.db, args.connect, token)
    else:
        reader = open_reader(args.db, args.connect, token)
    try:
        columns, rows = reader.rows(args.query)
    finally:
        reader.close()
    if columns:
        print(render(args.format, columns, rows), end="")
    return 0
