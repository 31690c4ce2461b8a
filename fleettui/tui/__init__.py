"""The terminal app (Textual). Only the CLI imports it (`fleettui.tui.launch`)."""
