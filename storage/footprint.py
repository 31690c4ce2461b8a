"""How much room the store takes, and how much it will take at the configured retention.

`disk_bytes` is what `du` would say of the database and its WAL; `used_bytes`
is DuckDB's own count of blocks in use (0 until the first checkpoint). `Growth`
turns successive size readings into bytes per hour, and projects: once
`retention_h` hours of data are kept, the store holds about
`bytes_per_hour x retention_h` (never less than it holds now; once retention
deletes as much as arrives, DuckDB reuses the freed blocks and growth stops).
The estimate is rough at first (the WAL is folded into the file in 16 MiB
steps): give it several minutes of data.

The rollup tiers are kept far longer than raw rows (1-minute rows 30 days,
1-hour rows 730 days by default), so they are projected on their own: the
1-minute tier's row growth (measured; the 1-hour tier's is a 60th of it) times
the bytes a raw row costs (the store's growth per raw sample row, everything
included, so rather more than less) times how much wider a rollup row is
(columns), times each tier's retention.
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


def store_bytes(store: Store) -> tuple[int, int]:
    """(bytes on disk, bytes in use). A file store: the file and its WAL, and DuckDB's
    blocks in use. A lake (no file of its own): its data files, as its catalog lists
    them, for both."""
    lake_bytes = getattr(store, "lake_file_bytes", None)
    if lake_bytes is not None:
        n = int(lake_bytes())
        return n, n
    return disk_bytes(store.path), used_bytes(store)


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


def rollup_rows(store: Store) -> tuple[int, int, float]:
    """(rows in the raw tables that have rollups, rows in their 1-minute tier, how
    many times as many columns a rollup row has as its raw row, averaged)."""
    from storage.rollups import SPECS, rollup_table

    raw = list(SPECS)
    m1 = [rollup_table(t, "1m") for t in raw]
    cur = store.cursor()
    try:
        have = {
            r[0]
            for r in cur.execute(  # keyed tables are views over their rows (storage/keyed.py)
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
                " UNION SELECT view_name FROM duckdb_views() WHERE database_name ="
                " current_database() AND NOT internal"
            ).fetchall()
        }
        pairs = [(t, r) for t, r in zip(raw, m1, strict=True) if t in have and r in have]
        if not pairs:
            return 0, 0, 1.0
        counts = (
            cur.execute(
                "SELECT " + ", ".join(f'(SELECT count(*) FROM "{t}")' for p in pairs for t in p)
            ).fetchone()
            or ()
        )
        cols = dict(
            cur.execute(
                "SELECT table_name, count(*) FROM duckdb_columns() WHERE database_name ="
                " current_database() GROUP BY table_name"
            ).fetchall()
        )
    finally:
        cur.close()
    widths = [cols[r] / cols[t] for t, r in pairs if cols.get(t)]
    return (
        sum(counts[0::2]),
        sum(counts[1::2]),
        sum(widths) / len(widths) if widths else 1.0,
    )


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
    raw_rows: _Series = field(default_factory=_Series)  # rows of tables with rollups
    rollup_1m_rows: _Series = field(default_factory=_Series)
    rollup_width: float = 1.0  # columns of a rollup row / of its raw row
    _clock: object = field(default=time.monotonic, repr=False)

    def observe(self, on_disk: int, used: int = 0, at: float | None = None) -> None:
        t = self._clock() if at is None else at  # type: ignore[operator]
        self.disk.add(t, on_disk)
        if used > 0:
            self.used.add(t, used)
        self.size = max(on_disk, used)
        self.readings += 1

    def observe_rows(
        self, raw: int, rollup_1m: int, width: float = 1.0, at: float | None = None
    ) -> None:
        t = self._clock() if at is None else at  # type: ignore[operator]
        self.raw_rows.add(t, raw)
        self.rollup_1m_rows.add(t, rollup_1m)
        self.rollup_width = width

    def rollup_bytes(self, keep_1m_h: float, keep_1h_h: float) -> int:
        """What the 1-minute and 1-hour tiers hold at their retention (0 until rollup
        rows have been seen growing)."""
        raw_per_h, m1_per_h = self.raw_rows.per_hour(), self.rollup_1m_rows.per_hour()
        if not raw_per_h or not m1_per_h or not self.bytes_per_hour:
            return 0
        per_row = self.bytes_per_hour / raw_per_h * self.rollup_width
        return int(per_row * m1_per_h * (keep_1m_h + keep_1h_h / 60))

    @property
    def from_checkpoints(self) -> bool:
        return self.used.per_hour() is not None

    @property
    def bytes_per_hour(self) -> float:
        rate = self.used.per_hour()
        if rate is None:
            rate = self.disk.per_hour()
        return max(0.0, rate or 0.0)

    def projected_bytes(
        self, retention_h: float, keep_1m_h: float = 0.0, keep_1h_h: float = 0.0
    ) -> int:
        """Raw rows at `retention_h` plus the rollup tiers at theirs."""
        raw = self.bytes_per_hour * retention_h
        return int(max(self.size, raw + self.rollup_bytes(keep_1m_h, keep_1h_h)))
