"""How much room the store takes, and how much it will take at the configured retention.

`disk_bytes` is what `du` would say of the database and its WAL; `used_bytes`
is DuckDB's own count of blocks in use (0 until the first checkpoint). `Growth`
turns successive size readings into bytes per hour, and projects: once
`retention_h` hours of data are kept, the store holds about
`bytes_per_hour x retention_h` (never less than it holds now; once retention
deletes as much as arrives, DuckDB reuses the freed blocks and growth stops).
The estimate is rough at first (the WAL is folded into the file in 16 MiB
steps): give it several minutes of data.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from storage.store import Store


def disk_bytes(path: str) -> int:
    """Bytes on disk of the database file and its WAL (0 for :memory:)."""
    if path == ":memory:":
        return 0
    total = 0
    for p in (path, path + ".wal"):
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    return total


def used_bytes(store: Store) -> int:
    cur = store.cursor()
    try:
        cur.execute("PRAGMA database_size")
        cols = [d[0] for d in cur.description]
        info = dict(zip(cols, cur.fetchone() or (), strict=False))
    finally:
        cur.close()
    return int(info.get("used_blocks") or 0) * int(info.get("block_size") or 0)


def duckdb_memory_bytes(store: Store) -> dict[str, int]:
    """DuckDB's memory in use, and the part holding rows committed but not yet
    checkpointed (`IN_MEMORY_TABLE`: grows between checkpoints, freed by each)."""
    cur = store.cursor()
    try:
        rows = cur.execute("SELECT tag, memory_usage_bytes FROM duckdb_memory()").fetchall()
    finally:
        cur.close()
    by_tag = {tag: int(n) for tag, n in rows}
    return {
        "memory_bytes": sum(by_tag.values()),
        "memory_uncheckpointed_bytes": by_tag.get("IN_MEMORY_TABLE", 0),
    }


def process_rss_bytes() -> int:
    """This process's resident set (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class _Series:
    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None

    def add(self, t: float, v: int) -> None:
        if self.first is None:
            self.first = (t, v)
        self.last = (t, v)

    def per_hour(self) -> float | None:
        if (
            self.first is None
            or self.last is None
            or self.last[0] <= self.first[0]
            or self.last[1] <= self.first[1]
        ):
            return None
        return (self.last[1] - self.first[1]) / ((self.last[0] - self.first[0]) / 3600)


@dataclass
class Growth:
    """Store size over time since the first reading (monotonic seconds).

    The rate comes from the checkpointed blocks (`used`) once two checkpoints have
    been seen: they hold the data compressed, as it will stay. Until then it comes
    from the bytes on disk, file + WAL, which overstates it (the WAL is not
    compressed: about 2-3x for the simulated fleet)."""

    disk: _Series = field(default_factory=_Series)
    used: _Series = field(default_factory=_Series)
    size: int = 0  # the larger of the last two readings
    readings: int = 0
    _clock: object = field(default=time.monotonic, repr=False)

    def observe(self, on_disk: int, used: int = 0, at: float | None = None) -> None:
        t = self._clock() if at is None else at  # type: ignore[operator]
        self.disk.add(t, on_disk)
        if used > 0:
            self.used.add(t, used)
        self.size = max(on_disk, used)
        self.readings += 1

    @property
    def from_checkpoints(self) -> bool:
        return self.used.per_hour() is not None

    @property
    def bytes_per_hour(self) -> float:
        rate = self.used.per_hour()
        if rate is None:
            rate = self.disk.per_hour()
        return max(0.0, rate or 0.0)

    def projected_bytes(self, retention_h: float) -> int:
        return int(max(self.size, self.bytes_per_hour * retention_h))
