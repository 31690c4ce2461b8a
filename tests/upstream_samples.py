"""Locate the real sample data in shared/upstream (read in place, never copied)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def upstream_dir() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        cand = parent / "shared" / "upstream"
        if cand.is_dir():
            return cand
    return None


def upstream(*parts: str) -> Path:
    """Path under shared/upstream; skips the test with the reason when it is absent."""
    base = upstream_dir()
    if base is None:
        pytest.skip("shared/upstream sample data not found above this checkout")
    path = base.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"sample {'/'.join(parts)} not found under {base}")
    return path


def scrapes_in(path: Path) -> list[str]:
    """A sample file as the scrapes it holds: some hold two, between `-----` lines."""
    text = path.read_text()
    parts = [p for p in re.split(r"(?m)^-{10,}\s*$", text) if "{" in p]
    return parts or [text]
