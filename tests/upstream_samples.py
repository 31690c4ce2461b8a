"""Locate the real captures vendored in fixtures/upstream (see SOURCES.md files there).

A capture a test needs must be present: a missing file FAILS the test (never
skips), so a clone without them, or a rename, cannot pass unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"
OURS = Path(__file__).resolve().parents[1] / "fixtures" / "ours"


def upstream_dir() -> Path:
    return UPSTREAM


def upstream(*parts: str) -> Path:
    """Path under fixtures/upstream; fails the test with the path when it is absent."""
    path = UPSTREAM.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"real capture {path} is missing (fixtures/upstream is part of the project)")
    return path


def ours(*parts: str) -> Path:
    """Path under fixtures/ours (texts we wrote, in real formats); fails when absent."""
    path = OURS.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"fixture {path} is missing")
    return path


def scrapes_in(path: Path) -> list[str]:
    """A sample file as the scrapes it holds: some hold two, between `-----` lines."""
    text = path.read_text()
    parts = [p for p in re.split(r"(?m)^-{10,}\s*$", text) if "{" in p]
    return parts or [text]
