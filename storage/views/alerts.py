"""Alerts as the alert engine records them (table `alerts`, migration 0004).

The table may be absent (an older store, or no alert engine yet): every query
here then returns an empty result of the same shape, so views show an empty
state instead of failing. Columns the engine does not provide read as NULL.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from storage.views.source import Source, run, table_columns
from storage.views.when import resolve_at

# Columns the alerts view shows, with the type each has when the table lacks it.
ALERT_COLUMNS: dict[str, str] = {
    "rule": "VARCHAR",
    "scope": "VARCHAR",
    "scope_key": "VARCHAR",
    "severity": "VARCHAR",
    "state": "VARCHAR",
    "started_at": "TIMESTAMP",
    "fired_at": "TIMESTAMP",
    "resolved_at": "TIMESTAMP",
    "value": "DOUBLE",
    "peak_value": "DOUBLE",
    "summary": "VARCHAR",
}
_STATE_ORDER = "CASE state_at WHEN 'firing' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END"


def alerts_available(src: Source) -> bool:
    return bool(table_columns(src, "alerts"))


def _source(src: Source) -> str | None:
    """A SELECT over `alerts` with every ALERT_COLUMNS column, or None without the table."""
    have = table_columns(src, "alerts")
    if not have:
        return None
    cols = ", ".join(
        c if c in have else f"CAST(NULL AS {t}) AS {c}" for c, t in ALERT_COLUMNS.items()
    )
    return f"SELECT {cols} FROM alerts"


# The state each alert had at the cursor, and the host it concerns (a scope key
# is a host, a GPU uuid, a slice id `<gpu_uuid>/...` or a link `host:port`).
_AT_CURSOR = """
    WITH a AS ({source}),
    at_cursor AS (
        SELECT a.*,
               CASE WHEN resolved_at IS NOT NULL AND resolved_at <= $at THEN 'resolved'
                    WHEN fired_at IS NOT NULL AND fired_at <= $at THEN 'firing'
                    ELSE 'pending' END AS state_at,
               coalesce(h.host, g.host, gs.host, hl.host) AS host,
               coalesce(g.gpu_index, gs.gpu_index) AS gpu_index
        FROM a
        LEFT JOIN hosts h ON h.host = a.scope_key
        LEFT JOIN gpus g ON g.gpu_uuid = a.scope_key
        LEFT JOIN gpus gs ON gs.gpu_uuid = split_part(a.scope_key, '/', 1)
        LEFT JOIN hosts hl ON hl.host = split_part(a.scope_key, ':', 1)
        WHERE coalesce(started_at, fired_at) <= $at
    )
"""


def alert_list(
    src: Source,
    at: datetime | None = None,
    *,
    resolved_within_s: float = 86400.0,
) -> pa.Table:
    """Pending, firing and recently resolved alerts at the cursor, firing first."""
    at = resolve_at(at)
    select = _source(src)
    if select is None:
        return _empty()
    sql = _AT_CURSOR.format(source=select) + f"""
        SELECT rule, scope, scope_key, host, gpu_index, severity, state_at AS state,
               started_at, fired_at, resolved_at,
               coalesce(value, peak_value) AS value, peak_value, summary,
               date_diff('second', coalesce(fired_at, started_at),
                         CASE WHEN state_at = 'resolved' THEN resolved_at ELSE $at END)
                   AS duration_s
        FROM at_cursor
        WHERE state_at <> 'resolved' OR resolved_at > $at - to_seconds($keep_s)
        ORDER BY {_STATE_ORDER}, severity = 'critical' DESC, coalesce(fired_at, started_at) DESC
    """
    return run(src, sql, {"at": at, "keep_s": resolved_within_s})


def firing_by_host(src: Source, at: datetime | None = None) -> pa.Table:
    """host, firing: the number of alerts firing at the cursor per host (badges)."""
    at = resolve_at(at)
    select = _source(src)
    if select is None:
        return pa.table({"host": pa.array([], pa.string()), "firing": pa.array([], pa.int64())})
    sql = _AT_CURSOR.format(source=select) + """
        SELECT host, count(*) AS firing FROM at_cursor
        WHERE state_at = 'firing' AND host IS NOT NULL GROUP BY host
    """
    return run(src, sql, {"at": at})


def firing_sql(src: Source) -> str | None:
    """SQL (parameter $at) of alerts firing at the cursor with their host, for other views."""
    select = _source(src)
    if select is None:
        return None
    return _AT_CURSOR.format(source=select) + " SELECT * FROM at_cursor WHERE state_at = 'firing'"


def _empty() -> pa.Table:
    names = ["rule", "scope", "scope_key", "host", "gpu_index", "severity", "state",
             "started_at", "fired_at", "resolved_at", "value", "peak_value", "summary",
             "duration_s"]
    types = [pa.string()] * 4 + [pa.int32()] + [pa.string()] * 2 + [pa.timestamp("us")] * 3 + [
        pa.float64()] * 2 + [pa.string(), pa.int64()]
    return pa.table({n: pa.array([], t) for n, t in zip(names, types, strict=True)})
