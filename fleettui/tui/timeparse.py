"""The time cursor as people type it: `-15m`, `-2h30m`, `12:03`, `2026-11-26 12:03:00`, `live`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_OFFSET = re.compile(r"^-\s*((?:\d+(?:\.\d+)?\s*[dhms]\s*)+)\Z")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class TimeSpecError(ValueError):
    """Not a time the cursor understands; the message says what is."""


def parse_time(text: str, now: datetime) -> datetime | None:
    """The moment `text` names, relative to `now` (naive UTC); None means live."""
    t = text.strip().lower()
    if t in ("", "live", "now"):
        return None
    m = _OFFSET.match(t)
    if m:
        seconds = sum(float(v) * _UNIT_S[u] for v, u in _PART.findall(m.group(1)))
        return (now - timedelta(seconds=seconds)).replace(microsecond=0)
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"):
        try:
            return datetime.strptime(t, fmt)
        except ValueError:
            pass
    for fmt in ("%H:%M:%S", "%H:%M"):
        try:
            clock = datetime.strptime(t, fmt).time()
        except ValueError:
            continue
        at = datetime.combine(now.date(), clock)
        return at - timedelta(days=1) if at > now else at  # the latest such moment
    raise TimeSpecError(
        f"{text!r}: expected an offset (-15m, -2h30m), a time today (12:03), "
        "a date and time (2026-11-26 12:03) or live"
    )
