"""Snapshots of every view at a fixed seed and clock, at 80x24 and 200x60.

Update after an intended change of look: `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import pytest

from tests.tui_support import make_app, settle

SIZES = [(80, 24), (200, 60)]


def keys_then_settle(*keys: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)

    return run_before


VIEWS = {
    "rack": (),
    "rack_memory_zoom_toggled": ("m", "z"),
    "fabric": ("2",),
    "tenants": ("3",),
    "alerts": ("4",),
    "drilldown": ("down", "down", "right", "enter"),
    "sql": ("5", "ctrl+r"),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("view", list(VIEWS))
def test_view_snapshot(snap_compare, view, size):
    app = make_app(show_timings=False)
    assert snap_compare(app, terminal_size=size, run_before=keys_then_settle(*VIEWS[view]))


def test_light_theme_snapshot(snap_compare):
    app = make_app(show_timings=False, theme="textual-light")
    assert snap_compare(app, terminal_size=(120, 40), run_before=keys_then_settle())
