"""Counters across gathers: deltas with reset handling, and histogram quantiles.

A counter that goes backwards was reset (exporter restart, wrap): that
interval has no rate (NULL) and a recorded reason; the new value becomes the
baseline. The same sample seen twice (Prometheus has not scraped since) gives
no delta and keeps the older baseline, so the next delta spans both.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Delta:
    delta: float | None  # None: no rate this time (first sight, reset, same sample)
    dt: float
    reason: str | None = None


STALE_S = 3600.0  # baselines of series unseen this long are forgotten (pods come and go)


def _prune(prev: dict, newest: float, max_age_s: float) -> None:
    for key in [k for k, v in prev.items() if newest - v[0] > max_age_s]:
        del prev[key]


class CounterTracker:
    def __init__(self) -> None:
        self._prev: dict[Hashable, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._prev)

    def prune(self, newest: float, max_age_s: float = STALE_S) -> None:
        _prune(self._prev, newest, max_age_s)

    def get(self, key: Hashable) -> tuple[float, float] | None:
        """The baseline (time, value) of `key`, if any."""
        return self._prev.get(key)

    def put(self, key: Hashable, baseline: tuple[float, float] | None) -> None:
        """Set (or, with None, forget) the baseline of `key` (a vectorised caller's)."""
        if baseline is None:
            self._prev.pop(key, None)
        else:
            self._prev[key] = baseline

    def update(self, key: Hashable, ts: float, value: float) -> Delta:
        prev = self._prev.get(key)
        if prev is None:
            self._prev[key] = (ts, value)
            return Delta(None, 0.0)
        pts, pv = prev
        dt = ts - pts
        if dt <= 0:
            return Delta(None, 0.0)
        self._prev[key] = (ts, value)
        if value < pv:
            return Delta(None, dt, f"counter went backwards ({pv:g} -> {value:g}): reset, no rate")
        return Delta(value - pv, dt)


def histogram_quantile(q: float, le: np.ndarray, cum: np.ndarray) -> float | None:
    """Quantile q from cumulative bucket counts (last bound +Inf), as Prometheus does:
    linear interpolation inside the bucket the rank falls in; the first bucket's
    lower bound is 0; a rank in the +Inf bucket gives the highest finite bound."""
    total = cum[-1]
    if total <= 0:
        return None
    rank = q * total
    i = int(np.searchsorted(cum, rank, side="left"))
    if i >= len(le) - 1:
        return float(le[-2]) if len(le) >= 2 else None
    lo = 0.0 if i == 0 else float(le[i - 1])
    below = 0.0 if i == 0 else float(cum[i - 1])
    inside = float(cum[i]) - below
    if inside <= 0:
        return float(le[i])
    with np.errstate(over="ignore", invalid="ignore"):  # bounds near 1e308: inf, the caller's
        return float(lo + (float(le[i]) - lo) * (float(rank) - below) / inside)


@dataclass(slots=True)
class HistDelta:
    le: np.ndarray | None
    counts: np.ndarray | None  # cumulative per bucket over the interval
    dt: float
    reason: str | None = None


class HistogramTracker:
    """Bucket deltas per histogram series across gathers."""

    def __init__(self) -> None:
        self._prev: dict[Hashable, tuple[float, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._prev)

    def prune(self, newest: float, max_age_s: float = STALE_S) -> None:
        _prune(self._prev, newest, max_age_s)

    def update(self, key: Hashable, ts: float, le: np.ndarray, cum: np.ndarray) -> HistDelta:
        order = np.argsort(le)
        le, cum = le[order], cum[order]
        if not len(le) or not np.isinf(le[-1]):
            self._prev.pop(key, None)
            return HistDelta(None, None, 0.0, "histogram without its +Inf bucket: skipped")
        if np.any(np.diff(cum) < 0):
            self._prev.pop(key, None)
            return HistDelta(
                None, None, 0.0, "histogram buckets not cumulative (missing buckets?): skipped"
            )
        prev = self._prev.get(key)
        if prev is None:
            self._prev[key] = (ts, le, cum)
            return HistDelta(None, None, 0.0)
        pts, ple, pcum = prev
        dt = ts - pts
        if dt <= 0:
            return HistDelta(None, None, 0.0)
        self._prev[key] = (ts, le, cum)
        if len(ple) != len(le) or np.any(ple != le):
            return HistDelta(
                None,
                None,
                dt,
                f"bucket layout changed ({len(ple)} -> {len(le)} buckets, "
                "missing buckets?): new baseline",
            )
        d = cum - pcum
        if np.any(d < 0):
            return HistDelta(
                None, None, dt, "histogram counters went backwards (restart?): new baseline"
            )
        return HistDelta(le, d, dt)
