"""Shared by the TUI tests: a store filled at a fixed seed and clock, and settling helpers."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache

from collectors.sim.faults import REFERENCE_FAULTS
from fleettui.tui.app import FleetApp
from fleettui.tui.demo import fixed_store
from fleettui.tui.screenshots import settle  # noqa: F401  (the tests settle the same way)
from storage.columns import TABLE_COLUMNS
from storage.store import Store

# The tests' own fault schedule (not the demo's, which may change).
FAULTS = REFERENCE_FAULTS
START_S = {f.kind: f.start_s for f in FAULTS}


@cache
def fleet_store() -> tuple[Store, datetime]:
    """The simulated fleet (seed 7, scale 1, FAULTS) over its first 300 s, sampled every 5 s."""
    return fixed_store(300.0, 5.0, faults=FAULTS)


def make_app(**kwargs) -> FleetApp:
    store, last = fleet_store()
    kwargs.setdefault("refresh_s", 3600.0)  # no refresh mid-test: the clock is fixed anyway
    return FleetApp(store.con, clock=lambda: last, **kwargs)


def stale_host_alert(last: datetime, summary: str) -> dict:
    """One firing `host_stale` alert on hgx-04-n3 (the simulated silent host), for `write_alerts`."""
    return {
        "rule": "host_stale",
        "scope": "host",
        "scope_key": "hgx-04-n3",
        "severity": "warning",
        "started_at": last - timedelta(seconds=30),
        "fired_at": last - timedelta(seconds=20),
        "last_value": 40.0,
        "summary": summary,
    }


def write_alerts(store: Store, rows: list[dict]) -> None:
    """Alert instances into the engine's `alerts` table (engine bookkeeping filled in)."""
    import json

    from storage.batch import make_batch

    cols: dict[str, list] = {c: [] for c in TABLE_COLUMNS["alerts"]}
    for r in rows:
        full = {
            "alert_id": f"{r['rule']}|{r['scope_key']}|{int(r['started_at'].timestamp())}",
            "fired_at": None,
            "resolved_at": None,
            "peak_value": None,
            "last_value": None,
            "threshold": None,
            "state": "firing" if r.get("fired_at") else "pending",
            **r,
        }
        full["last_active_at"] = full["evaluated_at"] = full["resolved_at"] or full["started_at"]
        full["labels"] = json.dumps(r.get("labels", {}))
        full["annotations"] = json.dumps({"summary": r["summary"]} if "summary" in r else {})
        full.pop("summary", None)
        for c in cols:
            cols[c].append(full[c])
    store.write([make_batch("alerts", cols)])
