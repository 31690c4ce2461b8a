"""The terminal app (Textual). Nothing outside fleettui.tui imports it but the CLI."""

from fleettui.tui.run import run_app, run_demo

__all__ = ["run_app", "run_demo"]
