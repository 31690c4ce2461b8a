"""Fleet totals for the app's header: GPUs, busy, idle, stale, alerts, data age."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.views.alerts import firing_sql
from storage.views.latest import BUSY_PCT, GPU_LATEST, SLICES_PER_GPU
from storage.views.query import Source, run
from storage.views.when import STALE_AFTER_S, resolve_at

TOTALS_SQL = f"""
WITH latest AS ({GPU_LATEST}),
sliced AS ({SLICES_PER_GPU}),
g AS (
    SELECT coalesce(l.util_pct, s.slice_util_pct) AS util_pct, l.ts
    FROM gpus g LEFT JOIN hosts h ON h.host = g.host
    LEFT JOIN latest l ON l.gpu_uuid = g.gpu_uuid
    LEFT JOIN sliced s ON s.gpu_uuid = g.gpu_uuid
    WHERE h.first_seen IS NULL OR h.first_seen <= $at
)
SELECT count(*) AS gpus,
       count(*) FILTER (WHERE util_pct >= {BUSY_PCT}) AS busy,
       count(*) FILTER (WHERE util_pct < {BUSY_PCT}) AS idle,
       count(*) FILTER (WHERE ts IS NULL) AS silent,
       avg(util_pct) AS util_mean_pct,
       (SELECT max(ts) FROM gpu_samples WHERE ts <= $at AND ts > $at - INTERVAL 1 DAY)
           AS newest_ts
FROM g
"""


def fleet_totals(
    src: Source, at: datetime | None = None, *, stale_s: float = STALE_AFTER_S
) -> dict[str, Any]:
    """gpus, busy, idle, silent, util_mean_pct, newest_ts, data_age_s, alerts_firing, at."""
    at = resolve_at(at)
    out: dict[str, Any] = run(src, TOTALS_SQL, {"at": at, "stale_s": stale_s}).to_pylist()[0]
    newest = out["newest_ts"]
    out["data_age_s"] = (at - newest).total_seconds() if newest is not None else None
    firing = firing_sql(src)
    out["alerts_firing"] = (
        run(src, f"SELECT count(*) AS n FROM ({firing})", {"at": at}).column("n")[0].as_py()
        if firing
        else None
    )
    out["at"] = at
    return out
