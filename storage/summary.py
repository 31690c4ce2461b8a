"""Fleet summary queries: what `fleettui demo --headless` prints and tests check.

Each is plain SQL over the store, so `fleettui sql` can run the same text.
"""

FLEET_TOTALS = """
SELECT
    (SELECT count(DISTINCT rack) FROM hosts)                       AS racks,
    (SELECT count(*) FROM hosts)                                    AS hosts,
    (SELECT count(*) FROM gpus)                                     AS gpus,
    (SELECT count(*) FROM slices)                                   AS slices,
    (SELECT count(*) FROM tenants)                                  AS tenants,
    (SELECT count(DISTINCT gpu_uuid) FROM gpu_samples)              AS gpus_reporting,
    (SELECT count(*) FROM gpu_samples)                              AS gpu_samples,
    (SELECT count(*) FROM events)                                   AS events
"""

TENANT_USAGE = """
WITH held AS (
    SELECT tenant, sum(fraction) AS gpus_held, count(slice_id) AS slices_held
    FROM assignments WHERE valid_to IS NULL GROUP BY tenant
), busy AS (
    SELECT a.tenant, avg(s.util_pct) AS util_mean_pct
    FROM gpu_samples s JOIN assignments a ON a.gpu_uuid = s.gpu_uuid AND a.slice_id IS NULL
    GROUP BY a.tenant
    UNION ALL
    SELECT a.tenant, avg(s.util_pct)
    FROM slice_samples s JOIN assignments a ON a.slice_id = s.slice_id
    GROUP BY a.tenant
), lat AS (
    SELECT tenant, max(itl_p99_ms) AS itl_p99_ms_max FROM latency_samples GROUP BY tenant
)
SELECT t.tenant, round(h.gpus_held, 3) AS gpus_held, h.slices_held,
       round(avg(b.util_mean_pct), 1) AS util_mean_pct, round(any_value(l.itl_p99_ms_max), 1) AS itl_p99_ms_max
FROM tenants t
LEFT JOIN held h USING (tenant) LEFT JOIN busy b USING (tenant) LEFT JOIN lat l USING (tenant)
GROUP BY t.tenant, h.gpus_held, h.slices_held
ORDER BY gpus_held DESC NULLS LAST
"""

RECENT_EVENTS = """
SELECT ts, host, kind, code, detail FROM events ORDER BY ts DESC LIMIT 10
"""
