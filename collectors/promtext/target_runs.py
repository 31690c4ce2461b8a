"""A target that is down or unparsable becomes a recorded failure.

One `collector_runs` row per failing target, `collector` = "<source> <target>"
(`ok` false, `error` naming the target and the reason), beside the source's own
row. `interval_s` stays NULL so the collector-silent and collector-slow rules,
which are about the source, do not read a recovered target's silence as a
stopped collector. The target's host is not refreshed (no samples, no
`last_seen`): it goes stale like any other.
"""

from __future__ import annotations

from datetime import datetime

from storage.batch import Batch, make_batch, storable_text


def failure_runs(source: str, at: datetime, failures: list[tuple[str, str]]) -> list[Batch]:
    """`failures`: (target, reason) pairs -> one collector_runs batch (or none)."""
    if not failures:
        return []
    n = len(failures)
    return [
        make_batch(
            "collector_runs",
            {
                "ts": [at] * n,
                # job/instance names come from Prometheus' answer: bounded and storable
                "collector": [storable_text(f"{source} {t}"[:300]) for t, _ in failures],
                "duration_ms": [0.0] * n,
                "ok": [False] * n,
                "rows": [0] * n,
                "error": [storable_text(r[:500]) for _, r in failures],
                "skipped": [0] * n,
            },
        )
    ]
