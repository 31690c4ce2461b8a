"""Drill-down: one host's GPUs, their slices and processes, history and events."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa

from storage.resolution import RAW, chart_bucket, source_for
from storage.rollups import TIERS
from storage.views.latest import ASSIGNED, SLICE_LATEST, gpu_latest
from storage.views.live import SLICE_LATEST_LIVE, covers, gpu_latest_live
from storage.views.query import Source, run, table_columns
from storage.views.when import STALE_AFTER_S, resolve_at

# Assignments of this host's GPUs only (the fleet's are not grouped per refresh).
HOST_ASSIGNED = ASSIGNED.replace(
    "FROM assignments",
    "FROM (SELECT * FROM assignments"
    " WHERE gpu_uuid IN (SELECT gpu_uuid FROM gpus WHERE host = $host))",
)

HOST_GPUS_SQL = f"""
WITH latest AS ({gpu_latest("host = $host")}), asg AS ({HOST_ASSIGNED})
SELECT g.gpu_index, g.gpu_uuid, g.name, g.pci_bus_id, g.mig_mode,
       l.util_pct, 100.0 * l.mem_used_bytes / nullif(l.mem_total_bytes, 0) AS mem_pct,
       l.mem_used_bytes, coalesce(l.mem_total_bytes, g.mem_total_bytes) AS mem_total_bytes,
       l.power_w, l.temp_c, l.sm_clock_mhz, l.ecc_sbe_total, l.ecc_dbe_total,
       l.throttle_reasons, a.tenants, l.ts AS sample_ts,
       h.cluster, h.rack, h.rack_slot, h.nvlink_domain, h.model
FROM gpus g
LEFT JOIN hosts h ON h.host = g.host
LEFT JOIN latest l ON l.gpu_uuid = g.gpu_uuid
LEFT JOIN asg a ON a.gpu_uuid = g.gpu_uuid
WHERE g.host = $host
ORDER BY g.gpu_index NULLS LAST, g.gpu_uuid
"""

HOST_SLICES_SQL = f"""
WITH sl AS ({SLICE_LATEST})
SELECT g.gpu_index, s.slice_id, s.kind, s.profile, s.fraction,
       a.tenant, sl.util_pct, sl.mem_used_bytes, s.mem_total_bytes
FROM slices s
JOIN gpus g ON g.gpu_uuid = s.gpu_uuid
LEFT JOIN sl ON sl.slice_id = s.slice_id
LEFT JOIN assignments a ON a.slice_id = s.slice_id
     AND a.valid_from <= $at AND (a.valid_to IS NULL OR a.valid_to > $at)
WHERE g.host = $host
ORDER BY g.gpu_index NULLS LAST, s.slice_id
"""

# History in equal buckets (sparklines): one row per GPU and bucket.
_RAW_BUCKETS = """
SELECT gpu_uuid,
       least(floor(epoch(ts - ($at - to_seconds($window_s))) / $bucket_s), $buckets - 1)::INT
           AS bucket,
       avg(util_pct) AS util_pct,
       avg(100.0 * mem_used_bytes / nullif(mem_total_bytes, 0)) AS mem_pct,
       avg(power_w) AS power_w,
       avg(temp_c) AS temp_c
FROM gpu_samples
WHERE host = $host AND ts > $at - to_seconds($window_s) AND ts <= $at"""
HISTORY_SQL = f"""{_RAW_BUCKETS}
GROUP BY ALL
ORDER BY gpu_uuid, bucket
"""

# Means of a rollup tier's rows per chart bucket; the caller names the relation.
_ROLLUP_BUCKETS = f"""
SELECT gpu_uuid,
       {chart_bucket("bucket")} AS bucket,
       (sum(util_pct_sum) / nullif(sum(util_pct_count), 0))::DOUBLE AS util_pct,
       (100.0 * sum(mem_used_bytes_sum) / nullif(sum(mem_used_bytes_count), 0)
           / nullif(max(mem_total_bytes_last), 0))::DOUBLE AS mem_pct,
       (sum(power_w_sum) / nullif(sum(power_w_count), 0))::DOUBLE AS power_w,
       (sum(temp_c_sum) / nullif(sum(temp_c_count), 0))::DOUBLE AS temp_c
FROM"""

# The same over a rollup view (`gpu_samples_1m_live` / `_1h_live`): windows of
# hours or days read per-minute or per-hour rows (storage/resolution.py). A
# rollup bucket counts where it starts; one that straddles the window's start
# goes to the first chart bucket.
ROLLUP_HISTORY_SQL = f"""{_ROLLUP_BUCKETS} {{rel}}
WHERE host = $host AND bucket > $at - to_seconds($window_s + $step_s) AND bucket <= $at
GROUP BY ALL
ORDER BY gpu_uuid, bucket
"""

# An hour of 30 s sparkline buckets without reading an hour of raw rows: the
# recent minutes from raw samples (30 s buckets, as HISTORY_SQL), older minutes
# from the 1-minute rollup table (one point per minute, in the chart bucket where
# the minute starts), so a refresh reads a bounded amount whatever the fleet's
# history. The split is the later of `$cut` (a minute boundary) and the rollups'
# watermark: minutes not rolled up yet still come from raw rows.
HYBRID_HISTORY_SQL = f"""
WITH cut AS (
    SELECT least($cut, coalesce((SELECT max(done_until) FROM rollup_state
                                 WHERE rollup = 'gpu_samples_1m'), TIMESTAMP '1970-01-01')) AS cut
)
{_ROLLUP_BUCKETS} gpu_samples_1m
WHERE host = $host AND bucket > $at - to_seconds($window_s + 60) AND bucket <= $at
  AND bucket < (SELECT cut FROM cut)
GROUP BY ALL
UNION ALL
{_RAW_BUCKETS}
  AND ts >= (SELECT cut FROM cut)
GROUP BY ALL
ORDER BY gpu_uuid, bucket
"""

# Raw rows serve at least this much of the newest history (HYBRID_HISTORY_SQL).
RAW_RECENT_S = 300.0

EVENTS_SQL = """
SELECT e.ts, e.kind, e.code, g.gpu_index, e.gpu_uuid, e.detail
FROM events e LEFT JOIN gpus g ON g.gpu_uuid = e.gpu_uuid
WHERE e.host = $host AND e.ts <= $at AND e.ts > $at - to_seconds($window_s)
ORDER BY e.ts DESC
LIMIT 200
"""

# Tables a process collector may write (issue 3's NVML collector); the first found is used.
PROCESS_TABLES = ("gpu_processes", "processes")


# The same from the live snapshot (storage/views/live.py), where it covers the cursor.
HOST_GPUS_SQL_LIVE = HOST_GPUS_SQL.replace(
    gpu_latest("host = $host"), gpu_latest_live("host = $host")
)
HOST_SLICES_SQL_LIVE = HOST_SLICES_SQL.replace(SLICE_LATEST, SLICE_LATEST_LIVE)
if HOST_GPUS_SQL_LIVE == HOST_GPUS_SQL or HOST_SLICES_SQL_LIVE == HOST_SLICES_SQL:
    raise RuntimeError("drill-down live SQL: the history fragment to replace was not found")


def host_gpus(
    src: Source,
    host: str,
    at: datetime | None = None,
    *,
    stale_s: float = STALE_AFTER_S,
    live: bool = True,
) -> pa.Table:
    at = resolve_at(at)
    params = {"at": at, "host": host, "stale_s": stale_s}
    fast = live and covers(src, at, stale_s, "gpu_samples")
    return run(src, HOST_GPUS_SQL_LIVE if fast else HOST_GPUS_SQL, params)


def host_slices(
    src: Source,
    host: str,
    at: datetime | None = None,
    *,
    stale_s: float = STALE_AFTER_S,
    live: bool = True,
) -> pa.Table:
    at = resolve_at(at)
    params = {"at": at, "host": host, "stale_s": stale_s}
    fast = live and covers(src, at, stale_s, "slice_samples")
    return run(src, HOST_SLICES_SQL_LIVE if fast else HOST_SLICES_SQL, params)


def gpu_history(
    src: Source,
    host: str,
    at: datetime | None = None,
    *,
    window_s: float = 3600.0,
    buckets: int = 60,
    bounded: bool = True,
) -> pa.Table:
    """Bucketed means of util, memory, power and temperature per GPU of `host`; windows
    of hours or days read the 1-minute or 1-hour rollups. A window of sub-minute
    buckets longer than RAW_RECENT_S reads raw rows for its last minutes only and
    the 1-minute rollups before (`bounded`; False: raw rows throughout)."""
    at_utc = resolve_at(at)
    params = {
        "at": at_utc,
        "host": host,
        "window_s": window_s,
        "bucket_s": window_s / buckets,
        "buckets": buckets,
    }
    tier, rel = source_for("gpu_samples", window_s, buckets)
    if bounded and tier == RAW and window_s > RAW_RECENT_S and window_s / buckets < 60.0:
        # older minutes from the 1-minute rollups (one point per minute)
        params["cut"] = _minute_floor(at_utc - timedelta(seconds=RAW_RECENT_S))
        return run(src, HYBRID_HISTORY_SQL, params)
    if tier == RAW:
        return run(src, HISTORY_SQL, params)
    params["step_s"] = TIERS[tier].total_seconds()
    return run(src, ROLLUP_HISTORY_SQL.replace("{rel}", rel), params)


def _minute_floor(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def host_events(
    src: Source,
    host: str,
    at: datetime | None = None,
    *,
    window_s: float = 86400.0,
) -> pa.Table:
    """The host's events (Xid, ECC, throttling, ...) newest first."""
    params = {"at": resolve_at(at), "host": host, "window_s": window_s}
    return run(src, EVENTS_SQL, params)


def host_processes(
    src: Source,
    host: str,
    at: datetime | None = None,
    *,
    stale_s: float = STALE_AFTER_S,
) -> pa.Table | None:
    """The newest process list of the host's GPUs, or None when no collector records them."""
    for table in PROCESS_TABLES:
        cols = table_columns(src, table)
        if {"ts", "gpu_uuid"} <= cols:
            break
    else:
        return None
    host_filter = (
        "host = $host"
        if "host" in cols
        else "gpu_uuid IN (SELECT gpu_uuid FROM gpus WHERE host = $host)"
    )
    sql = f"""
        SELECT * EXCLUDE (rn) FROM (
            SELECT *, rank() OVER (PARTITION BY gpu_uuid ORDER BY ts DESC) AS rn
            FROM {table}
            WHERE {host_filter} AND ts > $at - to_seconds($stale_s) AND ts <= $at
        ) WHERE rn = 1
    """
    params = {"at": resolve_at(at), "host": host, "stale_s": stale_s}
    return run(src, sql, params)
