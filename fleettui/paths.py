"""Where FleetTUI keeps things on this host, and how clients find a running daemon.

The daemon writes, all mode 0600 (directories it creates 0700):
- `<db>.daemon.json` beside its database: pid, Quack endpoint and the *viewer*
  token (read-only SQL). Hand that token, not the file, to a teammate.
- `<db>.operator.json` beside it: the *operator* token (acknowledge and silence
  alerts too); the app of the daemon's own user reads it.
- an entry `<pid>.json` in the registry under the user's runtime directory
  (`$XDG_RUNTIME_DIR/fleettui/daemons`, else the user state dir), naming its database: `fleettui` and
  `fleettui sql` find the daemons running on this machine without `--db`.
Files are written to a fresh temporary name opened O_CREAT|O_EXCL|O_NOFOLLOW,
then renamed over the target: a pre-placed file or symlink is never written through.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from platformdirs import user_data_dir, user_state_dir


def default_db_path() -> Path:
    override = os.environ.get("FLEETTUI_DB")
    if override:
        return Path(override).expanduser()
    return Path(user_data_dir("fleettui", appauthor=False)) / "fleet.duckdb"


def demo_db_path(arg: str | None) -> Path:
    """`fleettui demo`'s store: `--db`, else demo.duckdb beside the default database."""
    return Path(arg).expanduser() if arg else default_db_path().with_name("demo.duckdb")


def fresh_db(path: Path) -> Path:
    """The demo starts from an empty store each time (it holds only simulated data)."""
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    endpoint: str
    token: str
    db: str
    started_at: str
    metrics: str | None = None  # HOST:PORT of the daemon's /metrics, when on
    store_error: str | None = None  # set while the daemon's store is failing (disk full)


def info_path(db: Path) -> Path:
    return db.with_name(db.name + ".daemon.json")


def operator_path(db: Path) -> Path:
    return db.with_name(db.name + ".operator.json")


def make_private_dir(path: Path) -> Path:
    """Create `path` (and parents) mode 0700; an existing directory is left as it is."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def write_private_json(path: Path, obj: object) -> Path:
    """Write `obj` as JSON to `path`, mode 0600, atomically, never through a link."""
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_daemon_info(db: Path, info: DaemonInfo) -> Path:
    return write_private_json(info_path(db), asdict(info))


def write_operator_token(db: Path, pid: int, token: str) -> Path:
    return write_private_json(operator_path(db), {"pid": pid, "operator_token": token})


def read_operator_token(db: Path, pid: int) -> str | None:
    """The operator token of the daemon `pid` for `db`, if this user may read it."""
    try:
        data = json.loads(operator_path(db).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("pid") != pid:
        return None
    token = data.get("operator_token")
    return token if isinstance(token, str) else None


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
    for path in (info_path(db), operator_path(db), registry_dir() / f"{pid}.json"):
        try:
            if json.loads(path.read_text()).get("pid") == pid:
                path.unlink()
        except (OSError, ValueError, AttributeError):
            pass


# -- the registry of daemons running on this machine --------------------------
def registry_dir() -> Path:
    """$XDG_RUNTIME_DIR/fleettui/daemons (per user, gone at logout), else a private
    directory under the user's state dir."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "fleettui" / "daemons"
    return Path(user_state_dir("fleettui", appauthor=False)) / "daemons"


def register_daemon(info: DaemonInfo) -> Path:
    """One 0600 entry per running daemon, named by pid, pointing at its database."""
    entry = {
        "pid": info.pid,
        "db": info.db,
        "endpoint": info.endpoint,
        "started_at": info.started_at,
    }
    return write_private_json(registry_dir() / f"{info.pid}.json", entry)


def running_daemons() -> list[DaemonInfo]:
    """Daemons of this user running now, newest first; entries of dead pids are ignored
    (and removed), and each must match the info file beside its database."""
    out = []
    try:
        entries = sorted(registry_dir().glob("*.json"))
    except OSError:
        return []
    for entry in entries:
        try:
            data = json.loads(entry.read_text())
            pid, db = int(data["pid"]), Path(data["db"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(pid):
            entry.unlink(missing_ok=True)
            continue
        info = read_daemon_info(db)
        if info is not None and info.pid == pid:
            out.append(info)
    return sorted(out, key=lambda i: i.started_at, reverse=True)
