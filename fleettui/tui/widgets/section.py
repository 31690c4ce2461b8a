"""A one-line Static (a screen's title or status line) set only when it changes.

`Static.update` asks for a layout pass of the whole screen: every widget is
arranged again, every scrollbar redrawn and the compositor draws twice (~8 ms
of the fabric screen's refresh at 200x60). A view's title repeats from one
refresh to the next nearly always.
"""

from __future__ import annotations

from collections.abc import Hashable
from weakref import WeakKeyDictionary

from rich.text import Text
from textual.widgets import Static

from fleettui.tui.widgets.table import text_key

_shown: WeakKeyDictionary[Static, Hashable] = WeakKeyDictionary()


def set_line(static: Static, text: Text) -> None:
    """Show `text` in `static` unless it shows the same text already (characters,
    styles, spans and justification: what decides how it is drawn)."""
    key = text_key(text)
    if _shown.get(static) == key:
        return
    _shown[static] = key
    static.update(text)
