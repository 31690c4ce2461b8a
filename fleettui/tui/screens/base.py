"""A screen that shows a view query, refreshed in a worker.

The query runs in a thread worker through the app's reader (a cursor per
query, or a query on the daemon); the UI never waits on it.
The next refresh is armed only when the previous one has finished, so
refreshes never overlap; a screen that is not shown skips its refresh and
catches up when it is shown again, or when the time cursor moves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from textual import work
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from storage.reader import Reader

__all__ = ["DataScreen", "Reader"]


class DataScreen(Screen):
    """Subclasses implement `fetch` (worker thread) and `show` (UI thread)."""

    view_title = ""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._loading = False
        self._again = False
        self._timer: Timer | None = None
        self._started = False
        self.loaded = 0  # completed refreshes (tests wait on it)
        self.failed = False  # the last refresh raised

    def fetch(self, reader: Reader, at: datetime) -> Any:
        """Run the view's queries (worker thread)."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        raise NotImplementedError

    def supplies_totals(self) -> bool:
        """Whether this screen's refresh sets the header's fleet totals (`app.totals`)
        from what it read, so the app need not query them while it is shown."""
        return False

    # -- refresh loop ----------------------------------------------------------
    def on_mount(self) -> None:
        # Textual calls the Mount handler of each class in the MRO: a subclass's
        # super().on_mount() ran this twice (two watches of `at`, and a second
        # refresh right after the first: 0.5 s of CPU at 100k GPUs on the history path)
        if self._started:
            return
        self._started = True
        self.watch(self.app, "at", lambda _: self.reload(), init=False)
        self.reload()

    def on_screen_resume(self) -> None:
        self.app.view_title = self.view_title
        if self.loaded:
            self.reload()

    def reload(self) -> None:
        """Refresh now, or right after the refresh in flight."""
        if self._loading:
            self._again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._loading = True
        self._load(self.app.effective_at())

    @work(thread=True, exclusive=True, group="view-refresh", exit_on_error=False)
    def _load(self, at: datetime) -> Any:
        return self.fetch(self.app.reader, at)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "view-refresh" or event.worker.node is not self:
            return
        if event.state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        self._loading = False
        self.failed = event.state == WorkerState.ERROR
        if event.state == WorkerState.SUCCESS:
            self.show(event.worker.result)
            self.loaded += 1
            if self.loaded == 1:
                self.call_after_refresh(self._first_shown)
        elif event.state == WorkerState.ERROR:
            err = str(event.worker.error).splitlines()[0]
            self.notify(
                f"{self.view_title}: query failed: {err}", severity="error", timeout=6, markup=False
            )
        if self._again:
            self._again = False
            self.reload()
        else:
            self._timer = self.set_timer(self.app.refresh_s, self._tick)

    def _first_shown(self) -> None:
        # the app's background work that waited for the first frame (the store's fill)
        hook = getattr(self.app, "first_data_shown", None)
        if hook is not None:
            hook()

    def _tick(self) -> None:
        self._timer = None
        if self.app.screen is self:
            self.reload()
        else:
            # not shown: re-arm cheaply, reload when resumed
            self._timer = self.set_timer(self.app.refresh_s, self._tick)
