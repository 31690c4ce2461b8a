"""The filter input: `rack:hgx host:n1 tenant:acme model:h100 state:idle free text`."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input

TITLE = "filter · Enter applies · Esc cancels"


class FilterBar(Input):
    """Hidden until `/`; Enter applies, Escape cancels (the filter in use stays).

    It always opens on the filter in use (`applied`), never on text typed and
    then cancelled, and says so in its title from the first time it opens.
    """

    BINDINGS = [Binding("escape", "close", "cancel", show=False)]

    def __init__(self, placeholder: str, **kwargs) -> None:
        super().__init__(placeholder=placeholder, **kwargs)
        self.applied = ""  # the filter in use
        self.border_title = TITLE

    def open(self) -> None:
        self.value = self.applied
        self.cursor_position = len(self.value)
        self.border_subtitle = f"in use: {self.applied}" if self.applied else ""
        self.display = True
        self.focus()

    def action_close(self) -> None:
        self.value = self.applied
        self.display = False
        self.screen.focus_next()
