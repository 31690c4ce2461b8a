"""The daemon's TOML config: typed, validated, every key documented once.

    [daemon]
    db = "~/.local/share/fleettui/fleet.duckdb"  # the store (default: user data dir)
    serve = "127.0.0.1:0"    # Quack endpoint for clients; port 0 picks a free one
    serve_enabled = true     # serve the live store to `fleettui sql` and the app
    status_interval_s = 10.0 # how often the daemon logs a progress line (0: never)
    metrics_listen = "127.0.0.1:0"  # the daemon's own /metrics (loopback; "" off; 0: free port)
    retention_h = 48.0       # hours of raw time-series rows kept (older ones deleted hourly)
    memory_limit = ""        # DuckDB's memory limit, e.g. "2GiB"; "": 25% of RAM, at most 4 GiB
    store_failure_max_s = 300.0  # a failing store (disk full) is retried this long, then exit 75
    retention_1m_days = 30.0 # days of 1-minute rollups kept
    retention_1h_days = 730.0 # days of 1-hour rollups kept
    rollup_interval_s = 30.0 # how often closed buckets are rolled up (0: no rollups)
    rollup_late_s = 900.0    # rows arriving this late after their minute closed still count

    [store]                  # where the store lives (docs/lake.md)
    backend = "file"         # "file": one DuckDB file (db above); "ducklake": a shared lake
    catalog = ""             # ducklake: libpq DSN of the PostgreSQL catalog, no password in it
    password_file = ""       # ducklake: file holding the catalog's password ("": libpq's own)
    data_path = ""           # ducklake: shared directory of the Parquet data files
    evaluator = true         # run the fleet-wide tasks (alerts, rollups, retention); one per lake

    [[sources]]              # one table per source; `kind` picks the module
    kind = "sim"             # see `fleettui daemon --list-sources`
    interval_s = 1.0         # ... and that kind's own keys

    [alerts]                 # the alert engine's keys (docs/alerts.md)

    [topology]               # where hosts live: file = "topology.toml", host_pattern = ...
    [tenancy]                # assignments = "assignments.csv": GPUs rented by contract
    [latency_targets]        # ITL/TTFT p99 targets: default, per tenant, per endpoint

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
    metrics_listen: str = "127.0.0.1:0"
    retention_h: float = 48.0
    retention_1m_days: float = 30.0
    retention_1h_days: float = 730.0
    rollup_interval_s: float = 30.0
    rollup_late_s: float = 900.0
    memory_limit: str = ""
    store_failure_max_s: float = 300.0

    def __post_init__(self) -> None:
        if self.metrics_listen:
            from fleettui.metrics import parse_listen

            parse_listen(self.metrics_listen)
        if self.status_interval_s < 0:
            raise ValueError("status_interval_s must be >= 0")
        if self.retention_h <= 0:
            raise ValueError("retention_h must be > 0")
        if self.retention_1m_days <= 0 or self.retention_1h_days <= 0:
            raise ValueError("retention_1m_days and retention_1h_days must be > 0")
        if self.rollup_interval_s < 0 or self.rollup_late_s < 0:
            raise ValueError("rollup_interval_s and rollup_late_s must be >= 0")
        if self.rollup_interval_s > 0 and self.retention_h * 3600 < self.rollup_late_s + 3 * 3600:
            # late rows and the 1-hour tier's p95 are computed from raw rows
            raise ValueError("retention_h must cover rollup_late_s plus 3 hours while rollups run")
        if self.memory_limit and not _MEMORY_LIMIT.match(self.memory_limit):
            raise ValueError(
                f"memory_limit must be a size like '2GiB' or '512MB', got {self.memory_limit!r}"
            )
        if self.db is not None and ("\x00" in self.db or not self.db.strip()):
            raise ValueError("db must be a file path")


_MEMORY_LIMIT = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.I)


@dataclass(frozen=True)
class StoreOptions:
    backend: str = "file"
    catalog: str = ""
    password_file: str = ""
    data_path: str = ""
    evaluator: bool = True

    def __post_init__(self) -> None:
        if self.backend not in ("file", "ducklake"):
            raise ValueError(f"backend must be 'file' or 'ducklake', got {self.backend!r}")
        if self.backend == "ducklake" and not (self.catalog.strip() and self.data_path.strip()):
            raise ValueError("backend 'ducklake' needs catalog (a libpq DSN) and data_path")
        if re.search(r"\bpassword\s*=", self.catalog, re.I):
            # the DSN shows up in log lines and `ps`; the password must not
            raise ValueError("catalog must not hold the password: put it in password_file")

    @property
    def is_lake(self) -> bool:
        return self.backend == "ducklake"


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
    topology: dict[str, Any] | None = None
    tenancy: dict[str, Any] | None = None
    latency_targets: dict[str, Any] | None = None
    store: StoreOptions = field(default_factory=StoreOptions)

    @property
    def sources_from_file(self) -> bool:
        return self.path != "<defaults>"

    @property
    def db_path(self) -> Path:
        return Path(self.daemon.db).expanduser() if self.daemon.db else default_db_path()


SIM_SOURCES = (SourceSpec("sim", {}, "--sim"),)

_TOP_KEYS = ("daemon", "store", "sources", "alerts", "topology", "tenancy", "latency_targets")


def parse_config(raw: dict[str, Any], where: str) -> Config:
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown section {unknown[0]!r} (known: {', '.join(_TOP_KEYS)})"
        )
    try:
        daemon = parse_options(DaemonOptions, raw.get("daemon", {}), f"{where} [daemon]")
        store = parse_options(StoreOptions, raw.get("store", {}), f"{where} [store]")
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
    tables = {}
    for key in ("alerts", "topology", "tenancy", "latency_targets"):
        tables[key] = raw.get(key)
        if tables[key] is not None and not isinstance(tables[key], dict):
            raise ConfigError(f"{where}: '{key}' must be a table ([{key}])")
    return Config(daemon, tuple(sources), path=where, store=store, **tables)


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
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(raw, str(p))
