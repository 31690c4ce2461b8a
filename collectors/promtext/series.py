"""A snapshot: the samples one pull produced, as parallel columns.

Both pull paths land here: `/metrics` text through prometheus_client's parser,
and Prometheus API results (instant vectors, matrices). Mappers then select by
metric name with one pass over the name column, so a scrape's size decides
the cost, not the number of fields we understand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_LABELS = 40  # a series with more labels than this is skipped (label explosion)


@dataclass(slots=True)
class Snapshot:
    """Samples of one pull: metric name, labels and value per sample, with their time.

    `ts` is the sample time in epoch seconds (the scrape's time when the
    exposition carried none). `instance` names the target for host fallback
    when a series has no `instance` label of its own.
    """

    names: list[str] = field(default_factory=list)
    labels: list[Mapping[str, str]] = field(default_factory=list)
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    skipped: list[str] = field(default_factory=list)
    # Same non-None layout -> same names and labels, in the same order (promtext.layout):
    # mappers reuse what they worked out per series.
    layout: Any = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def latest_ts(self) -> float | None:
        return float(self.ts.max()) if len(self.ts) else None


class SnapshotBuilder:
    """Collects samples, dropping NaN/Inf values and label explosions with a reason."""

    def __init__(self, where: str, max_labels: int = MAX_LABELS):
        self.where = where
        self.max_labels = max_labels
        self.names: list[str] = []
        self.labels: list[Mapping[str, str]] = []
        self.values: list[float] = []
        self.ts: list[float] = []
        self.skipped: list[str] = []
        self._seen: set[tuple] = set()

    def add(
        self,
        name: str,
        labels: Mapping[str, str],
        value: float,
        ts: float,
        ident: str | None = None,
    ) -> None:
        """Add one sample; `ident` is a cheap identity of the label set (its text) if known."""
        if len(labels) > self.max_labels:
            self.skipped.append(
                f"{self.where}: {name}: {len(labels)} labels "
                f"(limit {self.max_labels}), series skipped"
            )
            return
        if not math.isfinite(value):
            self.skipped.append(
                f"{self.where}: {name}{_brief(labels)}: value {value}, sample skipped"
            )
            return
        key = (name, ident if ident is not None else tuple(sorted(labels.items())), ts)
        if key in self._seen:
            self.skipped.append(
                f"{self.where}: {name}{_brief(labels)}: duplicate series, first kept"
            )
            return
        self._seen.add(key)
        self.names.append(name)
        self.labels.append(labels)
        self.values.append(float(value))
        self.ts.append(ts)

    def build(self) -> Snapshot:
        return Snapshot(
            self.names,
            self.labels,
            np.asarray(self.values, dtype=np.float64),
            np.asarray(self.ts, dtype=np.float64),
            self.skipped,
        )


def _brief(labels: Mapping[str, str]) -> str:
    keys = ("Hostname", "hostname", "gpu", "GPU_I_ID", "device", "port", "model_name", "le")
    inner = ",".join(f"{k}={labels[k]}" for k in keys if k in labels)
    return "{" + inner + "}" if inner else ""


def from_prometheus_result(
    result: list[dict[str, Any]], where: str, max_labels: int = MAX_LABELS, latest_only: bool = True
) -> Snapshot:
    """Prometheus API `data.result` (vector or matrix) -> Snapshot.

    For a matrix (a range selector in an instant query), `latest_only` keeps the
    newest point per series, with its real sample time: rates and histogram
    deltas then use the times Prometheus scraped at, not our query times.
    """
    b = SnapshotBuilder(where, max_labels)
    for series in result:
        metric = dict(series.get("metric", {}))
        name = metric.pop("__name__", "")
        if not name:
            b.skipped.append(f"{where}: series without __name__, skipped")
            continue
        points = series.get("values")
        if points is None:
            points = [series["value"]] if "value" in series else []
        elif latest_only and points:
            points = points[-1:]
        for ts, raw in points:
            _add_point(b, where, name, metric, ts, raw)
    return b.build()


def _add_point(
    b: SnapshotBuilder, where: str, name: str, metric: dict[str, str], ts: Any, raw: Any
) -> None:
    """One API sample into `b`; a value that is not a number is skipped with the reason."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        b.skipped.append(f"{where}: {name}{_brief(metric)}: value {raw!r} is not a number")
        return
    b.add(name, metric, value, float(ts))


def matrix_steps(
    result: list[dict[str, Any]], where: str, max_labels: int = MAX_LABELS
) -> list[Snapshot]:
    """A range-query matrix -> one Snapshot per step time, in time order (for backfill)."""
    steps: dict[float, SnapshotBuilder] = {}
    for series in result:
        metric = dict(series.get("metric", {}))
        name = metric.pop("__name__", "")
        if not name:
            continue
        for ts, raw in series.get("values", []):
            b = steps.get(float(ts))
            if b is None:
                b = steps[float(ts)] = SnapshotBuilder(where, max_labels)
            _add_point(b, where, name, metric, ts, raw)
    return [steps[t].build() for t in sorted(steps)]


def merge(snapshots: list[Snapshot]) -> Snapshot:
    """Several snapshots (e.g. one per scrape target) as one."""
    out = Snapshot()
    for s in snapshots:
        out.names.extend(s.names)
        out.labels.extend(s.labels)
        out.skipped.extend(s.skipped)
    out.values = np.concatenate([s.values for s in snapshots]) if snapshots else np.zeros(0)
    out.ts = np.concatenate([s.ts for s in snapshots]) if snapshots else np.zeros(0)
    # an empty snapshot (an empty body) adds no series: it does not break the layout
    parts = [s for s in snapshots if len(s)]
    if all(s.layout is not None for s in parts):
        out.layout = tuple(s.layout for s in parts)
    return out
