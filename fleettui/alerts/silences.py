"""Silences and acknowledgements, stored with who and until when; the app's alert API.

A *silence* mutes every alert matching a rule and/or a scope key (NULL matches
anything) between `starts_at` and `ends_at`. An *acknowledgement* names one
alert instance ("someone is on it") until a time. Both stop delivery of
firing notifications (resolutions are still sent); both stay in the table as
history. Expiring one early sets its `ends_at` to now.

The TUI calls these functions with the store it already holds, or, attached
to a daemon, with a `storage.reader.QuackReader` holding the daemon's operator
token: then each change is one statement of the fixed shapes the daemon's guard
admits for the operator (`storage.guard.OPERATOR_SHAPES`), literals only.
None of them imports textual.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from storage.batch import make_batch
from storage.reader import QuackReader, sql_literal
from storage.store import Store

# A store this process writes, or a daemon reached with the operator token.
Target = Store | QuackReader


class SilenceError(ValueError):
    """A silence or acknowledgement request is wrong; one line for a person."""


@dataclass(frozen=True, slots=True)
class Silence:
    silence_id: str
    kind: str  # "silence" | "ack"
    rule: str | None
    scope_key: str | None
    alert_id: str | None
    created_by: str
    created_at: datetime
    starts_at: datetime
    ends_at: datetime
    comment: str | None

    def matches(self, rule: str, scope_key: str, alert_id: str) -> bool:
        return (
            (self.rule is None or self.rule == rule)
            and (self.scope_key is None or self.scope_key == scope_key)
            and (self.alert_id is None or self.alert_id == alert_id)
        )


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _one(store: Target, sql: str, params: list[Any]) -> tuple | None:
    if isinstance(store, QuackReader):
        rows = store.rows(sql, params)[1]
        return rows[0] if rows else None
    # fetchall and close: a cursor left holding a half-read result blocks the
    # store's CHECKPOINT after any merge (Store.close would fail).
    cur = store.cursor()
    try:
        rows = cur.execute(sql, params).fetchall()
    finally:
        cur.close()
    return rows[0] if rows else None


_COLUMN_ORDER = (
    "silence_id",
    "kind",
    "rule",
    "scope_key",
    "alert_id",
    "created_by",
    "created_at",
    "starts_at",
    "ends_at",
    "comment",
)


def _insert(store: Target, row: dict[str, Any]) -> str:
    if isinstance(store, QuackReader):
        values = ", ".join(sql_literal(row[c]) for c in _COLUMN_ORDER)
        store.operate(f"INSERT INTO silences VALUES ({values})")
    else:
        store.write([make_batch("silences", {k: [v] for k, v in row.items()})])
    return row["silence_id"]


def silence(
    store: Target,
    *,
    by: str,
    until: datetime,
    rule: str | None = None,
    scope_key: str | None = None,
    comment: str = "",
    now: datetime | None = None,
) -> str:
    """Mute alerts of `rule` and/or about `scope_key` until `until`; returns the silence id."""
    now = now or utcnow()
    if not by.strip():
        raise SilenceError("a silence needs who set it (by)")
    if rule is None and scope_key is None:
        raise SilenceError("a silence needs a rule or a scope key (muting everything is refused)")
    if until <= now:
        raise SilenceError(f"silence end {until.isoformat()} is not after now ({now.isoformat()})")
    return _insert(
        store,
        {
            "silence_id": f"sil-{uuid.uuid4().hex[:12]}",
            "kind": "silence",
            "rule": rule,
            "scope_key": scope_key,
            "alert_id": None,
            "created_by": by,
            "created_at": now,
            "starts_at": now,
            "ends_at": until,
            "comment": comment,
        },
    )


def acknowledge(
    store: Target,
    alert_id: str,
    *,
    by: str,
    until: datetime,
    comment: str = "",
    now: datetime | None = None,
) -> str:
    """Acknowledge one alert instance until `until`; returns the acknowledgement's id."""
    now = now or utcnow()
    if not by.strip():
        raise SilenceError("an acknowledgement needs who gave it (by)")
    if until <= now:
        raise SilenceError(f"acknowledgement end {until.isoformat()} is not after now")
    row = _one(store, "SELECT rule, scope_key FROM alerts WHERE alert_id = ?", [alert_id])
    if row is None:
        raise SilenceError(f"no alert {alert_id!r}")
    return _insert(
        store,
        {
            "silence_id": f"ack-{uuid.uuid4().hex[:12]}",
            "kind": "ack",
            "rule": row[0],
            "scope_key": row[1],
            "alert_id": alert_id,
            "created_by": by,
            "created_at": now,
            "starts_at": now,
            "ends_at": until,
            "comment": comment,
        },
    )


def expire(store: Target, silence_id: str, *, now: datetime | None = None) -> None:
    """End a silence or acknowledgement now (it stays in the table as history)."""
    now = now or utcnow()
    row = _one(store, "SELECT ends_at FROM silences WHERE silence_id = ?", [silence_id])
    if row is None:
        raise SilenceError(f"no silence {silence_id!r}")
    if row[0] <= now:
        return
    if isinstance(store, QuackReader):
        store.operate(
            f"UPDATE silences SET ends_at = {sql_literal(now)} "
            f"WHERE silence_id = {sql_literal(silence_id)}"
        )
    else:
        store.write([make_batch("silences", {"silence_id": [silence_id], "ends_at": [now]})])


_SILENCE_COLS = (
    "silence_id, kind, rule, scope_key, alert_id, created_by, created_at, starts_at, ends_at,"
    " comment"
)


def active_silences(cur: duckdb.DuckDBPyConnection, now: datetime) -> list[Silence]:
    rows = cur.execute(
        f"SELECT {_SILENCE_COLS} FROM silences WHERE starts_at <= ? AND ends_at > ?"
        " ORDER BY created_at",
        [now, now],
    ).fetchall()
    return [Silence(*r) for r in rows]


# What the app's alert view shows: open alerts with whether each is muted and by whom.
OPEN_ALERTS_SQL = """
SELECT a.alert_id, a.rule, a.scope, a.scope_key, a.severity, a.state, a.started_at, a.fired_at,
       a.last_value, a.peak_value, a.threshold, a.labels, a.annotations,
       s.kind AS muted_by_kind, s.created_by AS muted_by, s.ends_at AS muted_until
FROM alerts a
LEFT JOIN LATERAL (
    SELECT kind, created_by, ends_at FROM silences s
    WHERE s.starts_at <= $now AND s.ends_at > $now
      AND (s.rule IS NULL OR s.rule = a.rule)
      AND (s.scope_key IS NULL OR s.scope_key = a.scope_key)
      AND (s.alert_id IS NULL OR s.alert_id = a.alert_id)
    ORDER BY s.kind = 'ack' DESC, s.ends_at DESC LIMIT 1
) s ON true
WHERE a.state IN ('pending', 'firing')
ORDER BY CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
         a.state = 'pending', a.started_at
"""


def open_alerts(
    cur: duckdb.DuckDBPyConnection, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Pending and firing alerts, most severe first, each with who muted it (if anyone)."""
    cur.execute(OPEN_ALERTS_SQL, {"now": now or utcnow()})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


HISTORY_SQL = """
SELECT alert_id, rule, scope, scope_key, severity, state, started_at, fired_at, resolved_at,
       peak_value, threshold, labels, annotations
FROM alerts
WHERE fired_at IS NOT NULL AND fired_at >= $since
ORDER BY fired_at DESC
LIMIT $limit
"""


def alert_history(
    cur: duckdb.DuckDBPyConnection, since: datetime, limit: int = 500
) -> list[dict[str, Any]]:
    """Alerts that fired since `since` (firing or resolved), newest first."""
    cur.execute(HISTORY_SQL, {"since": since, "limit": limit})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
