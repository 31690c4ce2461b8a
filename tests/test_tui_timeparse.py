"""Typed moments for the time cursor."""

from datetime import datetime

import pytest

from fleettui.tui.timeparse import TimeSpecError, parse_time

NOW = datetime(2026, 11, 26, 12, 30, 15)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-15m", datetime(2026, 11, 26, 12, 15, 15)),
        ("-2h30m", datetime(2026, 11, 26, 10, 0, 15)),
        ("- 90s", datetime(2026, 11, 26, 12, 28, 45)),
        ("-1d", datetime(2026, 11, 25, 12, 30, 15)),
        ("12:03", datetime(2026, 11, 26, 12, 3)),
        ("13:00:05", datetime(2026, 11, 25, 13, 0, 5)),  # later than now today: yesterday's
        ("2026-11-20 08:15", datetime(2026, 11, 20, 8, 15)),
        ("2026-11-20T08:15:30", datetime(2026, 11, 20, 8, 15, 30)),
        ("live", None),
        ("", None),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["15m", "-15x", "yesterday", "25:00", "-"])
def test_bad_time_says_what_is_expected(text):
    with pytest.raises(TimeSpecError, match="expected an offset"):
        parse_time(text, NOW)
