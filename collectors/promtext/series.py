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
# a series with a longer label value is skipped: names and ids are short; a megabyte
# "hostname" would be stored in every row that names it
MAX_LABEL_CHARS = 1024
MAX_AHEAD_S = 3600.0  # sample times further ahead of the gather's are skipped (keep_times)
MAX_TS_S = 2**53 / 1000  # as the exposition parser's MAX_TS_MS (exact as int64 us)


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


def storable(text: str) -> bool:
    """Whether the store can hold `text` (as the agent's reports are checked): no NUL,
    and valid UTF-8 once encoded (JSON's "\\ud800" decodes to a lone surrogate, which
    Arrow refuses: the whole gather's batch, or the run's row naming it, failed)."""
    if text.isascii():
        return "\x00" not in text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _series_parts(
    series: Any, where: str, skipped: list[str], max_label_chars: int = MAX_LABEL_CHARS
) -> tuple[str, dict[str, str]] | None:
    """(name, labels) of one API series, or None (with the reason) when its shape is
    not Prometheus' (a series not an object, labels not strings, no `__name__`)."""
    if not isinstance(series, dict):
        skipped.append(f"{where}: series is a {type(series).__name__}, not an object, skipped")
        return None
    metric = series.get("metric", {})
    if not isinstance(metric, dict) or not all(
        type(k) is str and type(v) is str for k, v in metric.items()
    ):
        skipped.append(f"{where}: series labels are not strings, skipped")
        return None
    metric = dict(metric)
    name = metric.pop("__name__", "")
    if not name:
        skipped.append(f"{where}: series without __name__, skipped")
        return None
    if not storable(name + "".join(metric) + "".join(metric.values())):
        skipped.append(f"{where}: {name[:60]!r}: a NUL or a lone surrogate (\\ud800), skipped")
        return None
    if any(len(v) > max_label_chars for v in metric.values()):
        skipped.append(f"{where}: {name[:60]!r}: label value over {max_label_chars} chars, skipped")
        return None
    return name, metric


def _points(series: dict, where: str, name: str, skipped: list[str]) -> list:
    """The [time, value] pairs of an API series; a malformed list is skipped whole."""
    points = series.get("values")
    if points is None:
        points = [series["value"]] if "value" in series else []
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        skipped.append(f"{where}: {name[:60]!r}: samples are not [time, value] pairs, skipped")
        return []
    return points


def from_prometheus_result(
    result: Any, where: str, max_labels: int = MAX_LABELS, latest_only: bool = True
) -> Snapshot:
    """Prometheus API `data.result` (vector or matrix) -> Snapshot.

    For a matrix (a range selector in an instant query), `latest_only` keeps the
    newest point per series, with its real sample time: rates and histogram
    deltas then use the times Prometheus scraped at, not our query times.
    Anything not shaped as Prometheus answers is skipped with the reason.
    """
    b = SnapshotBuilder(where, max_labels)
    if not isinstance(result, list):
        b.skipped.append(f"{where}: result is a {type(result).__name__}, not a list, skipped")
        return b.build()
    for series in result:
        parts = _series_parts(series, where, b.skipped)
        if parts is None:
            continue
        name, metric = parts
        points = _points(series, where, name, b.skipped)
        if latest_only and "values" in series:
            points = points[-1:]
        for ts, raw in points:
            _add_point(b, where, name, metric, ts, raw)
    return b.build()


def _sample_time(ts: Any) -> float | None:
    """An API sample time (epoch s), or None when it is not a finite number in range."""
    if type(ts) not in (int, float, str):
        return None
    try:
        t = float(ts)
    except (ValueError, OverflowError):
        return None
    return t if math.isfinite(t) and abs(t) <= MAX_TS_S else None


def _add_point(
    b: SnapshotBuilder, where: str, name: str, metric: dict[str, str], ts: Any, raw: Any
) -> None:
    """One API sample into `b`; a value or a time that is not a number is skipped
    with the reason."""
    t = _sample_time(ts)
    if t is None:
        b.skipped.append(f"{where}: {name}{_brief(metric)}: time {str(ts)[:24]!r} is not a time")
        return
    try:
        if type(raw) not in (int, float, str):
            raise TypeError(type(raw).__name__)
        value = float(raw)
    except (TypeError, ValueError):
        b.skipped.append(
            f"{where}: {name}{_brief(metric)}: value {str(raw)[:24]!r} is not a number"
        )
        return
    b.add(name, metric, value, t)


def matrix_steps(result: Any, where: str, max_labels: int = MAX_LABELS) -> list[Snapshot]:
    """A range-query matrix -> one Snapshot per step time, in time order (for backfill)."""
    steps: dict[float, SnapshotBuilder] = {}
    skipped: list[str] = []
    for series in result if isinstance(result, list) else []:
        parts = _series_parts(series, where, skipped)
        if parts is None:
            continue
        name, metric = parts
        if "values" not in series:
            continue
        bad_time = None
        for ts, raw in _points(series, where, name, skipped):
            t = _sample_time(ts)
            if t is None:
                bad_time = ts
                continue
            b = steps.get(t)
            if b is None:
                b = steps[t] = SnapshotBuilder(where, max_labels)
            _add_point(b, where, name, metric, t, raw)
        if bad_time is not None:
            skipped.append(
                f"{where}: {name}{_brief(metric)}: time {str(bad_time)[:24]!r} is not a time"
            )
    out = [steps[t].build() for t in sorted(steps)]
    if out:
        out[0].skipped[:0] = skipped
    return out


def keep_times(snap: Snapshot, now: float, ahead_s: float = MAX_AHEAD_S) -> Snapshot:
    """`snap` without the samples stamped before 1970 or more than `ahead_s` after
    `now`, one reason per metric name: a stamp years ahead would leave its host's
    `last_seen` never stale, and one past year 9999 is no datetime at all."""
    bad = (snap.ts < 0) | (snap.ts > now + ahead_s)
    if not bad.any():
        return snap
    keep = np.flatnonzero(~bad)
    skipped = list(snap.skipped)
    for i in {snap.names[i]: i for i in np.flatnonzero(bad).tolist()}.values():
        skipped.append(
            f"{snap.names[i]}{_brief(snap.labels[i])}: sample time {snap.ts[i]:.0f} is before "
            f"1970 or over {ahead_s:.0f} s ahead of now, skipped"
        )
    return Snapshot(
        [snap.names[i] for i in keep],
        [snap.labels[i] for i in keep],
        snap.values[keep],
        snap.ts[keep],
        skipped,
    )


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
