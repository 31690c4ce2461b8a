"""Rack view: every GPU of the fleet with its newest values, in rack order.

One row per GPU (clusters and racks in natural order, then slots, then GPU index), with the metrics the rack
view cycles through, the slices inside sliced GPUs, the tenants holding it,
and whether its host or the GPU itself has gone silent. Filters run in SQL.

A host without a rack (no topology for it yet) or without a `hosts` row at all
is "unplaced": its GPUs come last, in one group, with `rack` NULL; the filter
`rack:unplaced` selects them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from storage.views.alerts import firing_count_sql, firing_sql
from storage.views.latest import ASSIGNED, BUSY_PCT, GPU_LATEST, SLICES_PER_GPU
from storage.views.live import rack_grid_live, snapshot_state
from storage.views.query import Source, run
from storage.views.when import STALE_AFTER_S, resolve_at

# The group (and `rack:` filter word) of hosts whose rack nobody has told us.
UNPLACED = "unplaced"


@dataclass(frozen=True)
class RackFilter:
    """Case-insensitive substring filters; empty strings match everything."""

    rack: str = ""
    host: str = ""
    tenant: str = ""
    model: str = ""
    state: str = ""  # one of STATES (below)
    text: str = ""  # free text: rack, host, tenant or model

    @classmethod
    def parse(cls, spec: str) -> RackFilter:
        """`rack:hgx tenant:acme state:idle n3` -> RackFilter; unknown keys are free text."""
        fields: dict[str, str] = {}
        words = []
        for word in spec.split():
            key, sep, value = word.partition(":")
            if sep and key in ("rack", "host", "tenant", "model", "state"):
                fields[key] = value
            else:
                words.append(word)
        return cls(**fields, text=" ".join(words))

    def __str__(self) -> str:
        parts = [f"{k}:{v}" for k, v in vars(self).items() if v and k != "text"]
        return " ".join(parts + ([self.text] if self.text else []))


RACK_SQL = f"""
WITH latest AS ({GPU_LATEST}),
sliced AS ({SLICES_PER_GPU}),
asg AS ({ASSIGNED}),
ev AS (
    SELECT gpu_uuid, count(*) AS n_events FROM events
    WHERE ts > $at - INTERVAL 1 HOUR AND ts <= $at AND gpu_uuid IS NOT NULL
    GROUP BY gpu_uuid
),
alerting AS ({{alerting}}),
-- clusters, then racks, in natural order (hgx-9 before hgx-10): the name without
-- its trailing number, then the number. The hosts are ranked (a sort of the hosts),
-- then the GPUs sorted by (host rank, gpu_index NULLS LAST, gpu_uuid): the same order
-- as every key in one ORDER BY, whose ten string and number keys over 100k GPUs
-- cost ~0.2 s more (storage/views/live.py RACK_LAYOUT_SQL ranks hosts alike)
hosts_sorted AS (
    SELECT *,
           regexp_replace(coalesce(cluster, ''), '[0-9]+$', '') AS cluster_key,
           TRY_CAST(regexp_extract(cluster, '([0-9]+)$', 1) AS BIGINT) AS cluster_num,
           regexp_replace(rack, '[0-9]+$', '') AS rack_key,
           TRY_CAST(regexp_extract(rack, '([0-9]+)$', 1) AS BIGINT) AS rack_num
    FROM hosts
),
host_rank AS (
    SELECT gh.host, h.cluster, h.rack, h.rack_slot, h.model, h.nvlink_domain, h.first_seen,
           row_number() OVER (
               ORDER BY h.rack IS NULL, h.cluster IS NULL, h.cluster_key, h.cluster_num,
                        h.cluster, h.rack_key, h.rack_num, h.rack, h.rack_slot, gh.host
           ) AS host_ord
    FROM (SELECT DISTINCT host FROM gpus) gh LEFT JOIN hosts_sorted h ON h.host = gh.host
),
seen AS (SELECT DISTINCT host FROM latest),
grid AS (
    SELECT h.cluster, h.rack, h.rack_slot, g.host, h.model, h.nvlink_domain, h.host_ord,
           g.gpu_index, g.gpu_uuid, g.name, g.mig_mode,
           coalesce(l.util_pct, s.slice_util_pct) AS util_pct,
           100.0 * coalesce(l.mem_used_bytes, s.slice_mem_used_bytes)
               / nullif(coalesce(l.mem_total_bytes, g.mem_total_bytes), 0) AS mem_pct,
           l.power_w, l.temp_c, l.sm_clock_mhz, l.throttle_reasons,
           coalesce(ev.n_events, 0) + coalesce(l.ecc_dbe_total, 0) AS errors,
           coalesce(s.n_slices, 0) AS n_slices,
           a.tenants, coalesce(a.allocated, 0) AS allocated,
           l.ts AS sample_ts,
           hs.host IS NULL AS host_stale,
           l.ts IS NULL AS gpu_missing,
           coalesce(al.firing, 0) AS host_alerts
    FROM gpus g
    JOIN host_rank h ON h.host = g.host
    LEFT JOIN latest l ON l.gpu_uuid = g.gpu_uuid
    LEFT JOIN seen hs ON hs.host = g.host
    LEFT JOIN sliced s ON s.gpu_uuid = g.gpu_uuid
    LEFT JOIN asg a ON a.gpu_uuid = g.gpu_uuid
    LEFT JOIN ev ON ev.gpu_uuid = g.gpu_uuid
    LEFT JOIN alerting al ON al.host = g.host
    WHERE h.first_seen IS NULL OR h.first_seen <= $at
)
SELECT * EXCLUDE (host_ord) FROM grid
WHERE {{where}}
ORDER BY host_ord, gpu_index NULLS LAST, gpu_uuid
"""

_NO_ALERTS = "SELECT CAST(NULL AS VARCHAR) AS host, 0::BIGINT AS firing WHERE false"

# Only the filters in use become SQL (an unused one would still be evaluated per row).
_FIELD_FILTERS = {
    "rack": f"coalesce(rack, '{UNPLACED}') ILIKE '%' || $rack || '%'",
    "host": "host ILIKE '%' || $host || '%'",
    "tenant": "tenants ILIKE '%' || $tenant || '%'",
    "model": "(model ILIKE '%' || $model || '%' OR name ILIKE '%' || $model || '%')",
    "text": "concat_ws(' ', rack, host, tenants, model, name) ILIKE '%' || $text || '%'",
}
_STATE_FILTERS = {
    "stale": "host_stale",
    "missing": "gpu_missing AND NOT host_stale",
    "busy": f"util_pct >= {BUSY_PCT}",
    "idle": f"util_pct < {BUSY_PCT}",
    "free": "allocated = 0",
    "alert": "host_alerts > 0",
    "error": "errors > 0",
}
STATES = tuple(_STATE_FILTERS)


def _alerting_sql(src: Source) -> str:
    firing = firing_sql(src)
    return (
        f"SELECT host, count(*) AS firing FROM ({firing}) GROUP BY host" if firing else _NO_ALERTS
    )


def _where(flt: RackFilter) -> str:
    where = [cond for key, cond in _FIELD_FILTERS.items() if getattr(flt, key)]
    if flt.state:
        where.append(_STATE_FILTERS[flt.state])
    return " AND ".join(where) or "true"


def rack_sql(src: Source, flt: RackFilter | None = None) -> str:
    """The rack grid in one statement over history (any cursor)."""
    flt = flt or RackFilter()
    return RACK_SQL.replace("{alerting}", _alerting_sql(src)).replace("{where}", _where(flt))


def rack_grid(
    src: Source,
    at: datetime | None = None,
    flt: RackFilter | None = None,
    *,
    stale_s: float = STALE_AFTER_S,
    live: bool = True,
) -> pa.Table:
    """One row per GPU in rack order with its newest metrics at the cursor; from the
    live snapshot where it covers the cursor (`live=False`: always from history)."""
    flt = flt or RackFilter()
    if flt.state and flt.state not in STATES:
        raise ValueError(f"state filter {flt.state!r}: expected one of {', '.join(STATES)}")
    at = resolve_at(at)
    version = snapshot_state(src, at, stale_s, "gpu_samples", "slice_samples") if live else None
    if version is not None:
        return rack_grid_live(
            src,
            at,
            stale_s,
            version,
            _alerting_sql(src),
            _where(flt),
            vars(flt),
            firing_any_sql=firing_count_sql(src),
        )
    params = {"at": at, "stale_s": stale_s, **vars(flt)}
    return run(src, rack_sql(src, flt), params)
