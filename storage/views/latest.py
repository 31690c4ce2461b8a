"""The newest sample of every GPU and slice at the time cursor, as SQL fragments.

Samples are appended in time order, so the `ts` range filter prunes by zone
maps and only the stale window is scanned, whatever the history length.
"""

from __future__ import annotations


# Newest sample per GPU in (at - stale window, at]; parameters $at, $stale_s.
# First each host's newest report time (two narrow columns), then only the rows
# of that report (within a second of it: an agent may stamp GPUs apart) are read
# in full; the lower bound lets the scan skip older row groups. A GPU absent
# from its host's newest report has no row: it is missing.
def gpu_latest(where: str = "true") -> str:
    return f"""
    WITH newest AS (
        SELECT host, max(ts) AS host_ts FROM gpu_samples
        WHERE ts > $at - to_seconds($stale_s) AND ts <= $at AND {where}
        GROUP BY host
    )
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

# Newest sample per slice, the same way (keyed by the slice's GPU).
SLICE_LATEST = """
    WITH newest AS (
        SELECT gpu_uuid, max(ts) AS gpu_ts FROM slice_samples
        WHERE ts > $at - to_seconds($stale_s) AND ts <= $at
        GROUP BY gpu_uuid
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
