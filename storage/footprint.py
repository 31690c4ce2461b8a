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
        info = dict(zip(cols, cur.fetchone(), strict=False))
    finally:
        cur.close()
    return int(info.get("used_blocks") or 0) * int(info.get("block_size") or 0)


@dataclass
class Growth:
    """Used bytes over time since the first reading (monotonic seconds)."""

    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None
    readings: int = 0
    _clock: object = field(default=time.monotonic, repr=False)

    def observe(self, used: int, at: float | None = None) -> None:
        t = self._clock() if at is None else at  # type: ignore[operator]
        if self.first is None:
            self.first = (t, used)
        self.last = (t, used)
        self.readings += 1

    @property
    def bytes_per_hour(self) -> float:
        if self.first is None or self.last is None or self.last[0] <= self.first[0]:
            return 0.0
        return max(0.0, (self.last[1] - self.first[1]) / ((self.last[0] - self.first[0]) / 3600))

    def projected_bytes(self, retention_h: float) -> int:
        now = self.last[1] if self.last else 0
        return int(max(now, self.bytes_per_hour * retention_h))
