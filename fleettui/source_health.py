"""What the daemon knows about its own sources, counted from the batches they hand in.

Every source reports on itself through `collector_runs` rows (pull loops per
gather, the mqtt source per flush and per broker failure) and through
`rejects` rows. `SourceHealth.observe` reads those two kinds of batch as they
pass the runtime's sink, so /metrics and `fleettui status` need no store query
and still work while the store is failing. Columnar: a few Arrow compute calls
per batch, no per-row Python on the samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow.compute as pc

from storage.batch import Batch

MAX_REASONS = 32  # distinct reject reasons kept as labels; the rest count as "other"
MAX_ERROR_CHARS = 200


@dataclass
class SourceRuns:
    runs: int = 0
    failures: int = 0
    duration_s: float = 0.0  # sum over runs
    rows: int = 0
    last_run_at: float | None = None  # epoch seconds (the run's own timestamp)
    last_ok_at: float | None = None
    last_duration_s: float = 0.0
    last_error: str | None = None  # of the last failing run
    last_error_at: float | None = None
    interval_s: float | None = None  # the last interval a run declared


@dataclass
class SourceHealth:
    sources: dict[str, SourceRuns] = field(default_factory=dict)
    rejects: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, reason) -> n
    started_at: float = field(default_factory=time.time)

    def observe(self, batches: list[Batch]) -> None:
        for b in batches:
            if b.table == "collector_runs":
                self._runs(b)
            elif b.table == "rejects":
                self._rejects(b)

    def _runs(self, b: Batch) -> None:
        t = b.data
        cols = t.column_names
        names = t.column("collector").to_pylist()
        if len(set(names)) != 1:  # always one source per batch today; stay correct anyway
            for i in range(t.num_rows):
                self._runs(Batch(b.table, t.slice(i, 1)))
            return
        s = self.sources.setdefault(str(names[0]), SourceRuns())
        ok = t.column("ok")
        n_fail = t.num_rows - (pc.sum(ok).as_py() or 0)
        s.runs += t.num_rows
        s.failures += n_fail
        durations = t.column("duration_ms")
        s.duration_s += (pc.sum(durations).as_py() or 0.0) / 1000.0
        if "rows" in cols:
            s.rows += pc.sum(t.column("rows")).as_py() or 0
        last = t.num_rows - 1
        ts = t.column("ts").to_pylist()
        at = [_epoch(x) for x in ts]  # a handful of rows per batch (one per run)
        s.last_run_at = at[last]
        s.last_duration_s = (durations[last].as_py() or 0.0) / 1000.0
        oks = ok.to_pylist()
        if "interval_s" in cols:
            declared = [
                i for i, v in enumerate(t.column("interval_s").to_pylist()) if v is not None
            ]
            if declared:
                s.interval_s = t.column("interval_s")[declared[-1]].as_py()
        good = [i for i, v in enumerate(oks) if v]
        if good:
            s.last_ok_at = at[good[-1]]
        if n_fail:
            idx = [i for i, v in enumerate(oks) if not v][-1]
            err = t.column("error")[idx].as_py() if "error" in cols else None
            s.last_error = (err or "failed")[:MAX_ERROR_CHARS]
            s.last_error_at = at[idx]

    def _rejects(self, b: Batch) -> None:
        t = b.data
        sources = t.column("source").to_pylist() if "source" in t.column_names else None
        for i, reason in enumerate(t.column("reason").to_pylist()):
            src = str(sources[i]) if sources else "?"
            key = (src, reason_key(reason))
            if key not in self.rejects and len(self.rejects) >= MAX_REASONS:
                key = (src, "other")
            self.rejects[key] = self.rejects.get(key, 0) + 1


def reason_key(reason: str | None) -> str:
    """A short, bounded label for a reject reason: the part before its first ':'
    ("interval_s: expected seconds ..." -> "interval_s")."""
    if not reason:
        return "unknown"
    head = reason.split(":", 1)[0].strip()
    return head[:40] or "unknown"


def _epoch(ts: datetime | None) -> float | None:
    """The store's naive-UTC timestamps as epoch seconds."""
    if ts is None:
        return None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()
