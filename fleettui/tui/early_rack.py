"""The rack view's first query, started by the launch before Textual is imported.

Textual's import and the app's construction (~0.4-0.5 s at start-up) hold the main
thread; DuckDB runs the rack query without the GIL, so the two overlap instead of one
after the other. The rack screen's first refresh takes the result (`FleetApp.take_early_rack`).
No Textual here: this module is imported before it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from storage.reader import Reader
from storage.views import RackFilter, fleet_totals, rack_grid

# Live, the first refresh may show the query started at launch this much older than
# its own cursor (the next refresh follows in refresh_s); a time-travelled cursor
# takes only the early query's own.
EARLY_MAX_AGE_S = 5.0


@dataclass(frozen=True, slots=True)
class RackData:
    table: pa.Table
    alerts: dict[str, int]
    totals: dict[str, Any] | None = None  # the header's, when the table is the whole fleet


def rack_data(reader: Reader, at: datetime, flt: RackFilter) -> RackData:
    """The rack grid at `at`, the alerts firing per host and, unfiltered, the header's
    totals (worker thread)."""
    table = rack_grid(reader, at, flt)
    firing = table.filter(pc.greater(table.column("host_alerts"), 0))  # few rows
    hosts = firing.column("host").to_pylist()
    alerts = firing.column("host_alerts").to_pylist()
    # unfiltered, the table holds the header's GPUs and their newest values: its
    # counts, not a second pass over the fleet (~0.3 s CPU beside the first frame)
    totals = None if str(flt) else fleet_totals(reader, at, grid=table)
    return RackData(table, dict(zip(hosts, alerts, strict=True)), totals)


class EarlyQuery:
    """`fn(at)` run in a thread of its own from now on; `result()` waits for it and
    raises what it raised; `close()` waits for the thread (before the store closes)."""

    def __init__(self, fn: Callable[[datetime], Any], at: datetime) -> None:
        self.at = at
        self._fn = fn
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="early-rack-query")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._fn(self.at)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the result
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def close(self) -> None:
        self._thread.join()

    def stands_for(self, at: datetime, *, live: bool) -> bool:
        """Whether this query may be shown as a refresh at `at`."""
        if at == self.at:
            return True
        return live and 0.0 <= (at - self.at).total_seconds() <= EARLY_MAX_AGE_S


def start_rack_query(reader: Reader, at: datetime) -> EarlyQuery:
    """The unfiltered rack view's query at `at`, started now."""
    return EarlyQuery(lambda when: rack_data(reader, when, RackFilter()), at)
