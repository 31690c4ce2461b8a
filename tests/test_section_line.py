"""A screen's title line is set again only when it changed: each `Static.update` asks
for a layout pass of the whole screen. Any change of how it looks (characters,
a style, a span, the justification) is shown."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import Static

from fleettui.tui.widgets.section import set_line


class _One(App):
    def compose(self) -> ComposeResult:
        yield Static(id="line")


def _title(total: int, style: str = "dim", justify: str | None = None) -> Text:
    t = Text(" Fabric", style="bold", justify=justify)  # type: ignore[arg-type]
    t.append(f"   {total:,} links", style=style)
    return t


def test_the_same_line_is_not_set_again_and_any_change_is():
    async def scenario():
        app = _One()
        async with app.run_test(size=(60, 5)) as pilot:
            line = app.query_one("#line", Static)
            updates: list[Text] = []
            update = line.update
            line.update = lambda content="", **kw: (updates.append(content), update(content))
            set_line(line, _title(182_144))
            await pilot.pause()
            assert len(updates) == 1
            set_line(line, _title(182_144))  # a new Text drawing the same
            await pilot.pause()
            assert len(updates) == 1
            for changed in (
                _title(182_145),
                _title(182_145, style="bold red"),
                _title(182_145, style="bold red", justify="right"),
            ):
                set_line(line, changed)
                await pilot.pause()
                assert updates[-1] is changed
            assert len(updates) == 4
            assert str(line.render()) == _title(182_145).plain

    asyncio.run(scenario())
