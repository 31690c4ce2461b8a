"""Command palette entries: views, metrics, time travel, theme."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from fleettui.tui.widgets.scale import METRICS


class FleetCommands(Provider):
    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        cmds: list[tuple[str, object, str]] = [
            ("Show racks", partial(app.switch_mode, "rack"), "home view: a cell per GPU"),
            ("Show fabric", partial(app.switch_mode, "fabric"), "links worst first"),
            ("Show tenants", partial(app.switch_mode, "tenants"), "holdings, use, latency"),
            ("Show alerts", partial(app.switch_mode, "alerts"), "pending, firing, resolved"),
            ("SQL console", partial(app.switch_mode, "sql"), "query the store"),
            ("Time travel: back 1 minute", partial(app.action_travel, -60), "time cursor"),
            ("Time travel: back 10 minutes", partial(app.action_travel, -600), "time cursor"),
            ("Time travel: back 1 hour", partial(app.action_travel, -3600), "time cursor"),
            ("Back to live", app.action_live, "follow the clock again"),
            ("Toggle dark/light theme", app.action_toggle_dark, "theme"),
        ]
        for key, label in METRICS:
            cmds.append((f"Colour racks by {label}", partial(self._metric, key), "rack view"))
        return cmds

    def _metric(self, key: str) -> None:
        from fleettui.tui.screens.rack import RackScreen

        screen = self.app.screen
        if isinstance(screen, RackScreen):
            screen.grid.metric = key

    async def discover(self) -> Hits:
        for name, cb, help_ in self._commands():
            yield DiscoveryHit(name, cb, help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, cb, help_ in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), cb, help=help_)
