"""Where FleetTUI keeps things on this host, and how clients find a running daemon.

The daemon writes `<db>.daemon.json` beside its database, mode 0600: its pid,
Quack endpoint and access token. Only the owner can read the token; no token,
no access. `fleettui sql` and the app read it to find the live store.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from platformdirs import user_data_dir


def default_db_path() -> Path:
    override = os.environ.get("FLEETTUI_DB")
    if override:
        return Path(override).expanduser()
    return Path(user_data_dir("fleettui", appauthor=False)) / "fleet.duckdb"


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    endpoint: str
    token: str
    db: str
    started_at: str
    store_error: str | None = None  # set while the daemon's store is failing (disk full)


def info_path(db: Path) -> Path:
    return db.with_name(db.name + ".daemon.json")


def write_daemon_info(db: Path, info: DaemonInfo) -> Path:
    path = info_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(info), f)
    os.replace(tmp, path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_daemon_info(db: Path) -> DaemonInfo | None:
    """The running daemon that owns `db`, or None (no file, stale file, unreadable)."""
    path = info_path(db)
    try:
        info = DaemonInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return info if _alive(info.pid) else None


def remove_daemon_info(db: Path, pid: int) -> None:
    path = info_path(db)
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass
