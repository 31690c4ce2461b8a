"""The filter input: `rack:hgx host:n1 tenant:acme model:h100 state:idle free text`."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class FilterBar(Input):
    """Hidden until `/`; Enter applies, Escape closes (the filter stays)."""

    BINDINGS = [Binding("escape", "close", "close filter", show=False)]

    def __init__(self, placeholder: str, **kwargs) -> None:
        super().__init__(placeholder=placeholder, **kwargs)

    def open(self) -> None:
        self.display = True
        self.focus()

    def action_close(self) -> None:
        self.display = False
        self.screen.focus_next()
