"""The time cursor: every view reads the fleet as it was at `at`."""

from __future__ import annotations

from datetime import UTC, datetime

# A GPU whose newest sample is older than this, at the time cursor, counts as stale.
STALE_AFTER_S = 30.0


def resolve_at(at: datetime | None) -> datetime:
    """`at` as naive UTC (the store's timestamps); None means now."""
    if at is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if at.tzinfo is not None:
        return at.astimezone(UTC).replace(tzinfo=None)
    return at
