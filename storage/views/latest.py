"""The newest sample of every GPU and slice at the time cursor, as SQL fragments.

Samples are appended in time order, so the `ts` range filter prunes by zone
maps and only the stale window is scanned, whatever the history length.
"""

from __future__ import annotations

# Newest sample per GPU in (at - stale window, at]; parameters $at, $stale_s.
# First each host's newest report time (for the whole fleet: each series' newest
# time over the integer ids of `gpu_values`, storage/keyed.py, then its host's;
# grouping the view's rows by host name cost ~1.5x the whole statement's CPU at
# 100k GPUs; for one host, `where`, its rows of the view), then only the rows of
# that report (within a second of it: an agent may stamp GPUs apart) are read in
# full; the lower bound lets the scan skip older row groups. A GPU absent from its
# host's newest report has no row: it is missing. `where` tests `host` or `gpu_uuid`.
_NEWEST_FLEET = """series_ts AS (
        SELECT series_id, max(ts) AS ts FROM gpu_values
        WHERE ts > $at - to_seconds($stale_s) AND ts <= $at
        GROUP BY series_id
    ),
    newest AS (
        SELECT k.host, max(m.ts) AS host_ts
        FROM series_ts m JOIN gpu_series k ON k.series_id = m.series_id
        GROUP BY k.host
    )"""


def _newest_where(where: str) -> str:
    return f"""newest AS (
        SELECT host, max(ts) AS host_ts FROM gpu_samples
        WHERE ts > $at - to_seconds($stale_s) AND ts <= $at AND {where}
        GROUP BY host
    )"""


def gpu_latest(where: str = "true") -> str:
    return f"""
    WITH {_NEWEST_FLEET if where == "true" else _newest_where(where)}
    SELECT s.gpu_uuid,
           any_value(s.host) AS host,
           max(s.ts) AS ts,
           arg_max(s.util_pct, s.ts) AS util_pct,
           arg_max(s.mem_used_bytes, s.ts) AS mem_used_bytes,
           arg_max(s.mem_total_bytes, s.ts) AS mem_total_bytes,
           arg_max(s.power_w, s.ts) AS power_w,
           arg_max(s.temp_c, s.ts) AS temp_c,
           arg_max(s.sm_clock_mhz, s.ts) AS sm_clock_mhz,
           arg_max(s.ecc_sbe_total, s.ts) AS ecc_sbe_total,
           arg_max(s.ecc_dbe_total, s.ts) AS ecc_dbe_total,
           arg_max(s.throttle_reasons, s.ts) AS throttle_reasons
    FROM gpu_samples s
    SEMI JOIN newest n ON n.host = s.host AND s.ts > n.host_ts - INTERVAL 1 SECOND
    WHERE s.ts >= (SELECT min(host_ts) - INTERVAL 1 SECOND FROM newest) AND s.ts <= $at
      AND {where}
    GROUP BY s.gpu_uuid
"""


GPU_LATEST = gpu_latest()

# Newest sample per slice, the same way (keyed by the slice's GPU; its series first).
SLICE_LATEST = """
    WITH series_ts AS (
        SELECT slice_series_id, max(ts) AS ts FROM slice_values
        WHERE ts > $at - to_seconds($stale_s) AND ts <= $at
        GROUP BY slice_series_id
    ),
    newest AS (
        SELECT k.gpu_uuid, max(m.ts) AS gpu_ts
        FROM series_ts m JOIN slice_series k ON k.slice_series_id = m.slice_series_id
        GROUP BY k.gpu_uuid
    )
    SELECT s.slice_id,
           max(s.ts) AS ts,
           arg_max(s.util_pct, s.ts) AS util_pct,
           arg_max(s.mem_used_bytes, s.ts) AS mem_used_bytes
    FROM slice_samples s
    SEMI JOIN newest n ON n.gpu_uuid = s.gpu_uuid AND s.ts > n.gpu_ts - INTERVAL 1 SECOND
    WHERE s.ts >= (SELECT min(gpu_ts) - INTERVAL 1 SECOND FROM newest) AND s.ts <= $at
    GROUP BY s.slice_id
"""

# Per sliced GPU: slice count, mean slice utilisation (MIG GPUs have no whole-GPU
# utilisation), memory in use across its slices.
SLICES_PER_GPU = f"""
    SELECT s.gpu_uuid,
           count(*) AS n_slices,
           avg(sl.util_pct) AS slice_util_pct,
           sum(sl.mem_used_bytes)::BIGINT AS slice_mem_used_bytes
    FROM slices s LEFT JOIN ({SLICE_LATEST}) sl USING (slice_id)
    GROUP BY s.gpu_uuid
"""

# Assignments in force at the cursor, per GPU: a whole GPU has one tenant; a
# sliced one lists the distinct tenants of its slices.
ASSIGNED = """
    SELECT gpu_uuid, min(tenant) AS tenants, sum(fraction) AS allocated
    FROM assignments
    WHERE slice_id IS NULL AND valid_from <= $at AND (valid_to IS NULL OR valid_to > $at)
    GROUP BY gpu_uuid
    UNION ALL
    SELECT gpu_uuid, array_to_string(list_sort(list_distinct(list(tenant))), ',') AS tenants,
           sum(fraction) AS allocated
    FROM assignments
    WHERE slice_id IS NOT NULL AND valid_from <= $at AND (valid_to IS NULL OR valid_to > $at)
      AND gpu_uuid NOT IN (
          SELECT gpu_uuid FROM assignments
          WHERE slice_id IS NULL AND valid_from <= $at AND (valid_to IS NULL OR valid_to > $at))
    GROUP BY gpu_uuid
"""

# A GPU is busy at >= 5 % utilisation (whole GPU, or mean of its slices).
BUSY_PCT = 5.0
