"""What the daemon calls: the alert engine as runtime tasks, from the `[alerts]` table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleettui.alerts.config import alerts_options, build_engine
from fleettui.alerts.engine import AlertEngine
from storage.store import Store


def tasks_from_config(
    raw: Mapping[str, Any] | None,
    store: Store,
    *,
    where: str = "[alerts]",
    base_dir: str | Path | None = None,
) -> list[AlertEngine]:
    """The engine for `raw` (no `[alerts]` table: the default pack, no delivery).

    Rule files are relative to `base_dir` (the config file's folder; the
    working directory when not given). Raises OptionsError (RuleError is one)
    with one line naming the file, the section or rule, and the key.
    """
    engine = build_engine(store, alerts_options(raw or {}, where), base_dir or ".")
    return [engine] if engine is not None else []
