"""Retention: raw samples older than a horizon are deleted, in one transaction.

Runs as a daemon task (hourly by default). Inventory, events, collector runs
and alert history are kept: they are small and are the fleet's memory.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from storage.store import Store

SAMPLE_TABLES = ("gpu_samples", "slice_samples", "link_samples", "latency_samples")


def delete_before(store: Store, cutoff: datetime) -> dict[str, int]:
    """Delete sample rows with ts < cutoff; returns rows deleted per table."""
    deleted = {}
    with store.writer() as cur:
        for table in SAMPLE_TABLES:
            row = cur.execute(f"DELETE FROM {table} WHERE ts < ?", [cutoff]).fetchone()
            deleted[table] = int(row[0]) if row else 0
    return deleted


class RetentionTask:
    """Periodic task: keep `keep_h` hours of raw samples."""

    name = "retention"

    def __init__(self, store: Store, keep_h: float, interval_s: float = 3600.0):
        if keep_h <= 0:
            raise ValueError("retention must be > 0 hours")
        self.store = store
        self.keep = timedelta(hours=keep_h)
        self.interval_s = interval_s
        self.last_deleted: dict[str, int] = {}

    async def tick(self, now: datetime) -> None:
        import asyncio

        self.last_deleted = await asyncio.to_thread(delete_before, self.store, now - self.keep)
