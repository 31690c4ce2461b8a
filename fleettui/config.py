"""The daemon's TOML config: typed, validated, every key documented once.

    [daemon]
    db = "~/.local/share/fleettui/fleet.duckdb"  # the store (default: user data dir)
    serve = "127.0.0.1:0"    # Quack endpoint for clients; port 0 picks a free one
    serve_enabled = true     # serve the live store to `fleettui sql` and the app
    status_interval_s = 10.0 # how often the daemon logs a progress line (0: never)
    retention_h = 168.0      # hours of time-series rows kept (older ones deleted hourly)
    memory_limit = ""        # DuckDB's memory limit, e.g. "2GiB"; "": 25% of RAM, at most 4 GiB
    store_failure_max_s = 300.0  # a failing store (disk full) is retried this long, then exit 75

    [[sources]]              # one table per source; `kind` picks the module
    kind = "sim"             # see `fleettui daemon --list-sources`
    interval_s = 1.0         # ... and that kind's own keys

    [alerts]                 # the alert engine's keys (docs/alerts.md)

Errors name the file, the section and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.options import OptionsError, parse_options
from fleettui.paths import default_db_path


class ConfigError(ValueError):
    """The config file is missing or wrong; one line naming what and where."""


@dataclass(frozen=True)
class DaemonOptions:
    db: str | None = None
    serve: str = "127.0.0.1:0"
    serve_enabled: bool = True
    status_interval_s: float = 10.0
    retention_h: float = 168.0
    memory_limit: str = ""
    store_failure_max_s: float = 300.0

    def __post_init__(self) -> None:
        if self.status_interval_s < 0:
            raise ValueError("status_interval_s must be >= 0")
        if self.retention_h <= 0:
            raise ValueError("retention_h must be > 0")
        if self.memory_limit and not _MEMORY_LIMIT.match(self.memory_limit):
            raise ValueError(f"memory_limit must be a size like '2GiB' or '512MB', "
                             f"got {self.memory_limit!r}")
        if self.db is not None and ("\x00" in self.db or not self.db.strip()):
            raise ValueError("db must be a file path")


_MEMORY_LIMIT = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.I)


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    options: dict[str, Any]
    where: str  # "fleet.toml [[sources]] #2 (sim)", for error messages


@dataclass(frozen=True)
class Config:
    daemon: DaemonOptions = field(default_factory=DaemonOptions)
    sources: tuple[SourceSpec, ...] = ()
    alerts: dict[str, Any] | None = None
    path: str = "<defaults>"

    @property
    def sources_from_file(self) -> bool:
        return self.path != "<defaults>"

    @property
    def db_path(self) -> Path:
        return Path(self.daemon.db).expanduser() if self.daemon.db else default_db_path()


SIM_SOURCES = (SourceSpec("sim", {}, "--sim"),)

_TOP_KEYS = ("daemon", "sources", "alerts")


def parse_config(raw: dict[str, Any], where: str) -> Config:
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown section {unknown[0]!r} (known: {', '.join(_TOP_KEYS)})")
    try:
        daemon = parse_options(DaemonOptions, raw.get("daemon", {}), f"{where} [daemon]")
    except OptionsError as exc:
        raise ConfigError(str(exc)) from exc
    raw_sources = raw.get("sources", [])
    if not isinstance(raw_sources, list) or not all(isinstance(s, dict) for s in raw_sources):
        raise ConfigError(f"{where}: 'sources' must be an array of tables ([[sources]])")
    sources = []
    for i, s in enumerate(raw_sources, 1):
        kind = s.get("kind")
        if not isinstance(kind, str):
            raise ConfigError(f"{where} [[sources]] #{i}: missing key 'kind' (a string)")
        opts = {k: v for k, v in s.items() if k != "kind"}
        sources.append(SourceSpec(kind, opts, f"{where} [[sources]] #{i} ({kind})"))
    alerts = raw.get("alerts")
    if alerts is not None and not isinstance(alerts, dict):
        raise ConfigError(f"{where}: 'alerts' must be a table ([alerts])")
    return Config(daemon, tuple(sources), alerts, where)


def load_config(path: str | Path) -> Config:
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") \
            from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(raw, str(p))
