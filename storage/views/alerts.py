"""Alerts as the alert engine records them (tables `alerts` and `silences`, migration 0004).

The tables may be absent (an older store, or a reader of a store without the
engine): every query here then returns an empty result of the same shape, so
views show an empty state instead of failing. Columns missing from the table
read as NULL, so the view survives the engine adding or renaming one.

Time travel: each alert's state is recomputed at the cursor from its
timestamps (started, fired, resolved), not read from its current `state`.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from storage.views.query import Source, run, table_columns
from storage.views.when import resolve_at

# What the views read from `alerts`: an expression per table column set, with a
# typed NULL when the table lacks the columns it needs.
_ALERT_EXPRS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    # name, expression, columns it needs, type when absent
    ("alert_id", "alert_id", ("alert_id",), "VARCHAR"),
    ("rule", "rule", ("rule",), "VARCHAR"),
    ("scope", "scope", ("scope",), "VARCHAR"),
    ("scope_key", "scope_key", ("scope_key",), "VARCHAR"),
    ("severity", "severity", ("severity",), "VARCHAR"),
    ("started_at", "started_at", ("started_at",), "TIMESTAMP"),
    ("fired_at", "fired_at", ("fired_at",), "TIMESTAMP"),
    ("resolved_at", "resolved_at", ("resolved_at",), "TIMESTAMP"),
    ("value", "last_value", ("last_value",), "DOUBLE"),
    ("peak_value", "peak_value", ("peak_value",), "DOUBLE"),
    ("threshold", "threshold", ("threshold",), "DOUBLE"),
    ("summary", "json_extract_string(annotations, '$.summary')", ("annotations",), "VARCHAR"),
    ("label_host", "json_extract_string(labels, '$.host')", ("labels",), "VARCHAR"),
)
_STATE_ORDER = "CASE state_at WHEN 'firing' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END"


def alerts_available(src: Source) -> bool:
    return bool(table_columns(src, "alerts"))


def _source(src: Source) -> str | None:
    """A SELECT over `alerts` with every column the views use, or None without the table."""
    have = table_columns(src, "alerts")
    if not have:
        return None
    cols = ", ".join(
        f"{expr} AS {name}" if set(need) <= have else f"CAST(NULL AS {typ}) AS {name}"
        for name, expr, need, typ in _ALERT_EXPRS
    )
    return f"SELECT {cols} FROM alerts"


# The state each alert had at the cursor, and the host it concerns (a scope key
# is a host, a GPU uuid, a slice id `<gpu_uuid>/...` or a link `host:port`; a
# `host` label also says). An instance that ended before firing is 'inactive'.
_AT_CURSOR = """
    WITH a AS ({source}),
    at_cursor AS (
        SELECT a.*,
               CASE WHEN resolved_at IS NOT NULL AND resolved_at <= $at AND fired_at IS NULL
                        THEN 'inactive'
                    WHEN resolved_at IS NOT NULL AND resolved_at <= $at THEN 'resolved'
                    WHEN fired_at IS NOT NULL AND fired_at <= $at THEN 'firing'
                    ELSE 'pending' END AS state_at,
               CASE WHEN fired_at IS NOT NULL AND fired_at <= $at THEN fired_at
                    ELSE started_at END AS since_at,
               coalesce(h.host, g.host, gs.host, hl.host, a.label_host) AS host,
               coalesce(g.gpu_index, gs.gpu_index) AS gpu_index
        FROM a
        LEFT JOIN hosts h ON h.host = a.scope_key
        LEFT JOIN gpus g ON g.gpu_uuid = a.scope_key
        LEFT JOIN gpus gs ON gs.gpu_uuid = split_part(a.scope_key, '/', 1)
        LEFT JOIN hosts hl ON hl.host = split_part(a.scope_key, ':', 1)
        WHERE coalesce(started_at, fired_at) <= $at
    )
"""

# Who muted an alert at the cursor (a silence on its rule/scope key, or an
# acknowledgement of this instance), when the store has silences.
_MUTED = """
    LEFT JOIN LATERAL (
        SELECT kind AS muted_kind, created_by AS muted_by, ends_at AS muted_until
        FROM silences s
        WHERE s.starts_at <= $at AND s.ends_at > $at
          AND (s.rule IS NULL OR s.rule = c.rule)
          AND (s.scope_key IS NULL OR s.scope_key = c.scope_key)
          AND (s.alert_id IS NULL OR s.alert_id = c.alert_id)
        ORDER BY s.kind = 'ack' DESC, s.ends_at DESC
        LIMIT 1
    ) m ON true
"""
_NOT_MUTED = (
    ", CAST(NULL AS VARCHAR) AS muted_kind, CAST(NULL AS VARCHAR) AS muted_by,"
    " CAST(NULL AS TIMESTAMP) AS muted_until"
)


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
    muted = bool(table_columns(src, "silences"))
    sql = (
        _AT_CURSOR.format(source=select)
        + f"""
        SELECT c.alert_id, c.rule, c.scope, c.scope_key, c.host, hr.rack, c.gpu_index,
               c.severity,
               c.state_at AS state, c.started_at, c.fired_at, c.resolved_at,
               c.value, c.peak_value, c.threshold, c.summary,
               date_diff('second', c.since_at,
                         CASE WHEN c.state_at = 'resolved' THEN c.resolved_at ELSE $at END)
                   AS duration_s
               {", m.muted_kind, m.muted_by, m.muted_until" if muted else _NOT_MUTED}
        FROM at_cursor c LEFT JOIN hosts hr ON hr.host = c.host {_MUTED if muted else ""}
        WHERE c.state_at IN ('pending', 'firing')
           OR (c.state_at = 'resolved' AND c.resolved_at > $at - to_seconds($keep_s))
        ORDER BY {_STATE_ORDER.replace("state_at", "c.state_at")},
                 c.severity = 'critical' DESC, c.since_at DESC, c.rule, c.scope_key
    """
    )
    return run(src, sql, {"at": at, "keep_s": resolved_within_s})


def firing_by_host(src: Source, at: datetime | None = None) -> pa.Table:
    """host, firing: the number of alerts firing at the cursor per host (badges)."""
    at = resolve_at(at)
    select = _source(src)
    if select is None:
        return pa.table({"host": pa.array([], pa.string()), "firing": pa.array([], pa.int64())})
    sql = (
        _AT_CURSOR.format(source=select)
        + """
        SELECT host, count(*) AS firing FROM at_cursor
        WHERE state_at = 'firing' AND host IS NOT NULL GROUP BY host
    """
    )
    return run(src, sql, {"at": at})


def firing_sql(src: Source) -> str | None:
    """SQL (parameter $at) of alerts firing at the cursor with their host, for other views."""
    select = _source(src)
    if select is None:
        return None
    return _AT_CURSOR.format(source=select) + " SELECT * FROM at_cursor WHERE state_at = 'firing'"


def firing_count_sql(src: Source) -> str | None:
    """How many alerts fire at the cursor ($at), as one row `n`, without resolving their
    hosts: the same condition as `state_at = 'firing'` above. A view skips its host
    query (hash joins over `gpus` and `hosts`: ~28 ms at 100k GPUs even with no alert)
    when this is 0. None without the table."""
    select = _source(src)
    if select is None:
        return None
    return (
        f"SELECT count(*) AS n FROM ({select}) WHERE coalesce(started_at, fired_at) <= $at"
        " AND fired_at <= $at AND (resolved_at IS NULL OR resolved_at > $at)"
    )


def _empty() -> pa.Table:
    s, ts, f = pa.string(), pa.timestamp("us"), pa.float64()
    schema = {
        "alert_id": s,
        "rule": s,
        "scope": s,
        "scope_key": s,
        "host": s,
        "rack": s,
        "gpu_index": pa.int32(),
        "severity": s,
        "state": s,
        "started_at": ts,
        "fired_at": ts,
        "resolved_at": ts,
        "value": f,
        "peak_value": f,
        "threshold": f,
        "summary": s,
        "duration_s": pa.int64(),
        "muted_kind": s,
        "muted_by": s,
        "muted_until": ts,
    }
    return pa.table({n: pa.array([], t) for n, t in schema.items()})
