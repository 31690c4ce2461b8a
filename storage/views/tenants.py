"""Tenant view: what each tenant holds and how well it uses it.

Per tenant at the cursor: GPUs held (a fractional share counts as its
fraction), slices, utilisation over a short window (mean weighted by
fraction, and the 95th percentile across its allocations' means), memory in use,
GPU-hours over a longer window (assignment overlap, so no sample scan), idle
allocations (mean under 5 %), inter-token latency p50/p99 against its endpoints' target, and
alerts firing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa

from storage.resolution import RAW, chart_bucket, source_for, sum_rows
from storage.rollups import TIERS
from storage.views.alerts import firing_sql
from storage.views.latest import BUSY_PCT
from storage.views.query import Source, run
from storage.views.when import resolve_at

TENANTS_SQL = f"""
WITH asg AS (
    SELECT tenant, gpu_uuid, slice_id, fraction FROM assignments
    WHERE valid_from <= $at AND (valid_to IS NULL OR valid_to > $at)
),
-- utilisation per allocation over the window: whole GPUs from gpu_samples,
-- slices from slice_samples (a MIG GPU has no whole-GPU utilisation)
gpu_use AS (
    SELECT gpu_uuid, avg(util_pct) AS util_pct,
           arg_max(mem_used_bytes, ts) AS mem_used_bytes
    FROM gpu_samples
    WHERE ts > $at - to_seconds($util_window_s) AND ts <= $at
      AND gpu_uuid IN (SELECT gpu_uuid FROM asg WHERE slice_id IS NULL)
    GROUP BY gpu_uuid
),
slice_use AS (
    SELECT slice_id, avg(util_pct) AS util_pct,
           arg_max(mem_used_bytes, ts) AS mem_used_bytes
    FROM slice_samples
    WHERE ts > $at - to_seconds($util_window_s) AND ts <= $at
    GROUP BY slice_id
),
alloc AS (
    SELECT a.tenant, a.fraction, false AS is_slice, gu.util_pct, gu.mem_used_bytes
    FROM asg a LEFT JOIN gpu_use gu ON gu.gpu_uuid = a.gpu_uuid
    WHERE a.slice_id IS NULL
    UNION ALL
    SELECT a.tenant, a.fraction, true AS is_slice, su.util_pct, su.mem_used_bytes
    FROM asg a LEFT JOIN slice_use su ON su.slice_id = a.slice_id
    WHERE a.slice_id IS NOT NULL
),
held AS (
    SELECT tenant,
           sum(fraction) AS gpus,
           count(*) FILTER (WHERE is_slice) AS slices,
           sum(util_pct * fraction) / nullif(sum(fraction) FILTER (WHERE util_pct IS NOT NULL), 0)
               AS util_mean_pct,
           quantile_cont(util_pct, 0.95) AS util_p95_pct,
           sum(mem_used_bytes)::BIGINT AS mem_used_bytes,
           count(*) FILTER (WHERE util_pct < {BUSY_PCT}) AS idle_allocations,
           sum(fraction) FILTER (WHERE util_pct < {BUSY_PCT}) AS idle_gpus
    FROM alloc GROUP BY tenant
),
-- GPU-hours: the overlap of each assignment with the window, times its fraction
hours AS (
    SELECT tenant,
           sum(fraction * date_diff('second',
                   greatest(valid_from, $at - to_seconds($hours_window_s)),
                   least(coalesce(valid_to, $at), $at)) / 3600.0) AS gpu_hours
    FROM assignments
    WHERE valid_from < $at AND (valid_to IS NULL OR valid_to > $at - to_seconds($hours_window_s))
    GROUP BY tenant
),
lat AS (
    SELECT endpoint, arg_max(itl_p50_ms, ts) AS itl_p50_ms, arg_max(itl_p99_ms, ts) AS itl_p99_ms
    FROM latency_samples
    WHERE ts > $at - to_seconds($util_window_s) AND ts <= $at
    GROUP BY endpoint
),
itl AS (
    SELECT e.tenant, max(l.itl_p50_ms) AS itl_p50_ms, max(l.itl_p99_ms) AS itl_p99_ms,
           min(e.itl_target_ms) AS itl_target_ms,
           count(*) FILTER (WHERE l.itl_p99_ms > e.itl_target_ms) AS endpoints_over_target
    FROM endpoints e LEFT JOIN lat l ON l.endpoint = e.endpoint
    GROUP BY e.tenant
),
alerting AS ({{alerting}})
SELECT t.tenant, t.display_name, t.tier,
       coalesce(h.gpus, 0) AS gpus, coalesce(h.slices, 0) AS slices,
       h.util_mean_pct, h.util_p95_pct, h.mem_used_bytes,
       coalesce(hr.gpu_hours, 0) AS gpu_hours,
       coalesce(h.idle_allocations, 0) AS idle_allocations, coalesce(h.idle_gpus, 0) AS idle_gpus,
       i.itl_p50_ms, i.itl_p99_ms, i.itl_target_ms, coalesce(i.endpoints_over_target, 0)
           AS endpoints_over_target,
       coalesce(al.firing, 0) AS alerts_firing
FROM tenants t
LEFT JOIN held h USING (tenant)
LEFT JOIN hours hr USING (tenant)
LEFT JOIN itl i USING (tenant)
LEFT JOIN alerting al USING (tenant)
ORDER BY gpus DESC, tenant
"""

_NO_ALERTS = "SELECT CAST(NULL AS VARCHAR) AS tenant, 0::BIGINT AS firing WHERE false"

# Alerts concern a tenant directly, through one of its endpoints, or through a
# host whose GPUs it holds.
_TENANT_ALERTS = """
SELECT t.tenant, count(DISTINCT (f.rule, f.scope_key)) AS firing
FROM ({firing}) f
JOIN (
    SELECT tenant, tenant AS key FROM tenants
    UNION ALL SELECT tenant, endpoint FROM endpoints
    UNION ALL SELECT DISTINCT a.tenant, g.host FROM assignments a JOIN gpus g USING (gpu_uuid)
        WHERE a.valid_from <= $at AND (a.valid_to IS NULL OR a.valid_to > $at)
) t ON t.key = f.scope_key OR t.key = f.host
GROUP BY t.tenant
"""


def tenant_summary(
    src: Source,
    at: datetime | None = None,
    *,
    util_window_s: float = 30.0,
    hours_window_s: float = 86400.0,
) -> pa.Table:
    """One row per tenant, largest holding first."""
    firing = firing_sql(src)
    alerting = _TENANT_ALERTS.format(firing=firing) if firing else _NO_ALERTS
    sql = TENANTS_SQL.replace("{alerting}", alerting)
    params = {
        "at": resolve_at(at),
        "util_window_s": util_window_s,
        "hours_window_s": hours_window_s,
    }
    return run(src, sql, params)


# -- a tenant's utilisation over time ---------------------------------------------
# Its allocations' samples while each was held (whole GPUs from gpu_samples, slices
# from slice_samples), weighted by the fraction held, in `$buckets` chart buckets.
# `{gpu}` / `{slice}` are raw tables or rollup views (storage/resolution.py):
# `{t}` their time column, `{v}` / `{n}` a row's sum and count (raw: the value, 1).
_TENANT_HISTORY_SQL = """
WITH asg AS (
    SELECT gpu_uuid, slice_id, fraction, valid_from, valid_to FROM assignments
    WHERE tenant = $tenant AND valid_from <= $at
      AND (valid_to IS NULL OR valid_to > $at - to_seconds($window_s))
),
held AS (
    SELECT s.{t} AS t, a.fraction AS w, {v} AS v, {n} AS n
    FROM {gpu} s JOIN asg a ON a.slice_id IS NULL AND a.gpu_uuid = s.gpu_uuid
    WHERE s.{t} > $from AND s.{t} <= $at AND s.{t} >= a.valid_from
      AND (a.valid_to IS NULL OR s.{t} < a.valid_to) AND {v} IS NOT NULL
    UNION ALL
    SELECT s.{t}, a.fraction, {v}, {n}
    FROM {slice} s JOIN asg a ON a.slice_id = s.slice_id
    WHERE s.{t} > $from AND s.{t} <= $at AND s.{t} >= a.valid_from
      AND (a.valid_to IS NULL OR s.{t} < a.valid_to) AND {v} IS NOT NULL
)
SELECT {bucket} AS bucket,
       (sum(w * v) / nullif(sum(w * n), 0))::DOUBLE AS util_pct
FROM held
GROUP BY ALL
ORDER BY bucket
"""


def tenant_history(
    src: Source,
    tenant: str,
    at: datetime | None = None,
    *,
    window_s: float = 3600.0,
    buckets: int = 60,
) -> tuple[str, pa.Table]:
    """(tier read, rows of `bucket`, `util_pct`): the tenant's mean utilisation per
    chart bucket. A window of days reads the 1-minute or 1-hour rollups (a rollup
    bucket counts where it starts), so 30 days reads ~720 hourly rows per GPU."""
    tier, gpu_rel = source_for("gpu_samples", window_s, buckets)
    _, slice_rel = source_for("slice_samples", window_s, buckets)
    if tier != RAW:  # the tenant's rows are picked before the raw tail is aggregated
        gpu_rel = sum_rows("gpu_samples", tier, ("util_pct",))
        slice_rel = sum_rows("slice_samples", tier, ("util_pct",))
    at = resolve_at(at)
    if tier == RAW:
        fields = {"t": "ts", "v": "s.util_pct", "n": "1"}
        start = at - timedelta(seconds=window_s)
    else:
        fields = {"t": "bucket", "v": "s.util_pct_sum", "n": "s.util_pct_count"}
        # a bucket that straddles the window's start counts in the first chart bucket
        start = at - timedelta(seconds=window_s) - TIERS[tier]
    sql = _TENANT_HISTORY_SQL
    for k, val in {
        **fields,
        "gpu": gpu_rel,
        "slice": slice_rel,
        "bucket": chart_bucket("t"),
    }.items():
        sql = sql.replace("{" + k + "}", val)
    params = {
        "tenant": tenant,
        "at": at,
        "from": start,
        "window_s": window_s,
        "bucket_s": window_s / buckets,
        "buckets": buckets,
    }
    return tier, run(src, sql, params)
