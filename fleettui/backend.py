"""The `[store]` switch: the embedded DuckDB file (default) or the shared DuckLake.

`open_store(config)` is what the daemon, the app and `fleettui sql` open; the
lake's password is read from `password_file` here and never printed.
"""

from __future__ import annotations

import os
from pathlib import Path

from fleettui.config import Config, ConfigError, StoreOptions
from storage.store import Store


def lake_target(opts: StoreOptions, where: str):  # -> storage.lake.LakeTarget
    from storage.lake import LakeTarget

    password = None
    if opts.password_file:
        p = Path(opts.password_file).expanduser()
        try:
            password = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{where} [store] password_file {str(p)!r}: cannot read: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where} [store] password_file {str(p)!r}: not UTF-8 text") from None
        if not password:
            raise ConfigError(f"{where} [store] password_file {str(p)!r}: is empty")
    data = os.path.abspath(os.path.expanduser(opts.data_path))
    return LakeTarget(opts.catalog.strip(), data.rstrip("/") + "/", password)


def open_store(
    config: Config, *, read_only: bool = False, memory_limit: str | None = None
) -> Store:
    """The configured store: `config.db_path` as a file, or the lake of `[store]`."""
    if not config.store.is_lake:
        return Store.open(config.db_path, read_only=read_only, memory_limit=memory_limit)
    from storage.lake import LakeStore

    target = lake_target(config.store, config.path)
    return LakeStore.open_lake(target, read_only=read_only, memory_limit=memory_limit)


def runs_fleet_tasks(config: Config) -> bool:
    """Whether this process evaluates alerts and maintains rollups and retention: always
    on a file; on a lake only where `[store] evaluator` is true (one daemon per lake)."""
    return not config.store.is_lake or config.store.evaluator
