"""The collector interface and the registry of sources by name.

Two small shapes, as in Telegraf:
- a *pull* source is asked to `gather` on its interval and returns batches;
- a *push* source `run`s until cancelled and hands batches to a `Sink` as they
  arrive (MQTT reports, for instance).

The daemon times every gather and records it in `collector_runs`, so each
source reports on itself without extra code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from storage.batch import Batch


@dataclass(slots=True)
class Gathered:
    """What one gather produced: batches, samples skipped with why, and series
    dropped by reason (a field with no column, a DCGM blank) with their count."""

    batches: list[Batch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.batches)


@runtime_checkable
class PullSource(Protocol):
    name: str
    interval_s: float

    async def gather(self, now: datetime) -> Gathered: ...

    async def close(self) -> None: ...


Sink = Callable[[list[Batch]], Awaitable[None]]


def committing(sink: Sink) -> Callable[[list[Batch]], Awaitable[asyncio.Future[bool]]] | None:
    """The sink's variant whose future says when the batches are committed (True) or
    dropped (False), when it has one (the daemon's runtime: `Runtime.sink_committed`)."""
    return getattr(getattr(sink, "__self__", None), "sink_committed", None)


@runtime_checkable
class PushSource(Protocol):
    name: str

    async def run(self, sink: Sink) -> None: ...


# A factory builds a source from its config section (a plain dict, without
# "kind") and validates it with collectors.options.parse_options; `where`
# names the section for error messages ("fleet.toml [[sources]] #2 (sim)").
SourceFactory = Callable[[Mapping[str, Any], str], PullSource | PushSource]

_REGISTRY: dict[str, SourceFactory] = {}


def register(kind: str) -> Callable[[SourceFactory], SourceFactory]:
    """Decorator: make a source factory available under `kind` in the config."""

    def deco(factory: SourceFactory) -> SourceFactory:
        if kind in _REGISTRY:
            raise ValueError(f"source kind {kind!r} registered twice")
        _REGISTRY[kind] = factory
        return factory

    return deco


def source_kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build_source(kind: str, options: Mapping[str, Any], where: str) -> PullSource | PushSource:
    """Build a source of `kind`; raises OptionsError (unknown kind, bad options)."""
    from collectors.options import OptionsError

    _load_builtin()
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise OptionsError(
            f"{where}: unknown source kind {kind!r} (known: {', '.join(sorted(_REGISTRY))})"
        )
    return factory(options, where)


def _load_builtin() -> None:
    # Importing the modules registers them; one line per source module.
    import collectors.registry  # noqa: F401
