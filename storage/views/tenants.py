"""Tenant view: what each tenant holds and how well it uses it.

Per tenant at the cursor: GPUs held (a fractional share counts as its
fraction), slices, utilisation over a short window (mean weighted by
fraction, and the 95th percentile across its allocations' means), memory in use,
GPU-hours over a longer window (assignment overlap, so no sample scan), idle
allocations (mean under 5 %), inter-token latency p50/p99 against its endpoints' target, and
alerts firing.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.keyed import GPUS, SLICES
from storage.live import LIVE_CATALOG
from storage.live_window import SLOT_US, WINDOW_MAX_S, WINDOW_SLOTS, padded
from storage.reader import LocalReader
from storage.resolution import RAW, chart_bucket, source_for, sum_rows
from storage.rollups import TIERS
from storage.views.alerts import firing_count_sql, firing_sql
from storage.views.latest import BUSY_PCT
from storage.views.live import layout_cached, snapshot_state
from storage.views.query import Source, run, table_columns
from storage.views.tenant_held import TenantCodes, held, tenant_codes, tenant_rows
from storage.views.tenant_window import Sums, window_sums
from storage.views.when import resolve_at

L = LIVE_CATALOG

# Per tenant over its allocations (tenant, fraction, is_slice, util_pct, mem_used_bytes).
_HELD = f"""
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
"""
# GPU-hours: the overlap of each assignment with the window, times its fraction
_HOURS = """
    SELECT tenant,
           sum(fraction * date_diff('second',
                   greatest(valid_from, $at - to_seconds($hours_window_s)),
                   least(coalesce(valid_to, $at), $at)) / 3600.0) AS gpu_hours
    FROM assignments
    WHERE valid_from < $at AND (valid_to IS NULL OR valid_to > $at - to_seconds($hours_window_s))
    GROUP BY tenant
"""
_LAT = """
    SELECT endpoint, arg_max(itl_p50_ms, ts) AS itl_p50_ms, arg_max(itl_p99_ms, ts) AS itl_p99_ms
    FROM latency_samples
    WHERE ts > $at - to_seconds($util_window_s) AND ts <= $at
    GROUP BY endpoint
"""
_ITL = """
    SELECT e.tenant, max(l.itl_p50_ms) AS itl_p50_ms, max(l.itl_p99_ms) AS itl_p99_ms,
           min(e.itl_target_ms) AS itl_target_ms,
           count(*) FILTER (WHERE l.itl_p99_ms > e.itl_target_ms) AS endpoints_over_target
    FROM endpoints e LEFT JOIN lat l ON l.endpoint = e.endpoint
    GROUP BY e.tenant
"""

_ASG = """
    SELECT tenant, gpu_uuid, slice_id, fraction FROM assignments
    WHERE valid_from <= $at AND (valid_to IS NULL OR valid_to > $at)
"""

# Per key of a sample table's rows (integer ids: storage/keyed.py) over the window:
# util_pct's sum and count, the newest non-NULL memory in use and its time (a GPU or
# slice may have several keys, one per source). One aggregate over integers, not a
# GROUP BY of UUID strings through the `gpu_samples` join view (the ids are dense: with
# `perfect_ht_threshold` raised for them, `_dense`, a direct-indexed table, no hashing).
_SUMS = """
    SELECT {id} AS id, sum(util_pct) AS s, count(util_pct) AS n,
           arg_max(mem_used_bytes, ts) AS mem,
           max(ts) FILTER (WHERE mem_used_bytes IS NOT NULL) AS mem_ts
    FROM {rows}
    WHERE ts > $at - to_seconds($util_window_s) AND ts <= $at
    GROUP BY {id}
"""
# The history path splits it: the sums over the window, read from the rows table's own
# columns (util_pct only: no memory decoded, no count of it), then the newest memory from
# the window's last MEM_RECENT_S only (an arg_max over every row of 30 s was a third of
# the aggregate's CPU at 100k GPUs; over 5 s, 24 ms), and from the rest of the window
# only for the keys that have none in that span (a fleet reporting less often than that,
# a source without memory: `_missing`, those keys' ids, where the reader can take it).
_UTIL_SUMS = """
    SELECT {id} AS id, sum(util_pct) AS s, count(util_pct) AS n
    FROM {rows}
    WHERE ts > $at - to_seconds($util_window_s) AND ts <= $at
    GROUP BY {id}
"""
# ... with how many memory values each key has (`_count_mem`): positive where either
# stored column has one (a value is in one of them, migration 0021)
_UTIL_MEM_SUMS = _UTIL_SUMS.replace(
    "count(util_pct) AS n",
    "count(util_pct) AS n, count(mem_used_mib) + count(mem_used_bytes_raw) AS mem_n",
)
_NEWEST_MEM = """
    SELECT {id} AS id, arg_max(mem_used_bytes, ts) AS mem, max(ts) AS mem_ts
    FROM {rows}
    WHERE ts > $since AND ts <= $at AND mem_used_bytes IS NOT NULL
    GROUP BY {id}
"""
_OLDER_MEM = _NEWEST_MEM.replace("GROUP BY", "AND {id} IN (SELECT id FROM _missing) GROUP BY")
# The recent span's rows themselves (~200k at 100k GPUs): their newest per key in numpy
# costs less than the aggregate's direct-indexed table of arg_max states (~9 vs ~14 ms).
_MEM_ROWS = """
    SELECT {id} AS id, mem_used_bytes AS mem, ts AS mem_ts
    FROM {rows}
    WHERE ts > $since AND ts <= $at AND mem_used_bytes IS NOT NULL
"""
MEM_RECENT_S = 2.0
# sample table -> (its rows table as readers read it (memory in bytes, migration 0021),
# id column, dimension, the dimension's key for a view)
_KEYED = {
    "gpu_samples": (GPUS.rows_read, "series_id", "gpu_series", "gpu_uuid"),
    "slice_samples": (SLICES.rows_read, "slice_series_id", "slice_series", "slice_id"),
}


def _keyed_sql(sql: str, table: str, *, stored: bool = False) -> str:
    """`sql` over `table`'s rows table (`stored`: its stored columns only, no decoding)."""
    rows, id_col, _, _ = _KEYED[table]
    if stored:
        rows = {"gpu_samples": GPUS.rows, "slice_samples": SLICES.rows}[table]
    return sql.format(id=id_col, rows=rows)


def _use_sql(table: str) -> str:
    """Per GPU (slice): mean util_pct over the window and newest non-NULL memory in
    use, over its keys' sums."""
    _, id_col, dim, key = _KEYED[table]
    return f"""
    SELECT k.{key}, sum(w.s) / nullif(sum(w.n), 0) AS util_pct,
           arg_max(w.mem, w.mem_ts) AS mem_used_bytes
    FROM ({_keyed_sql(_SUMS, table)}) w JOIN {dim} k ON k.{id_col} = w.id
    GROUP BY k.{key}
"""


TENANTS_SQL = f"""
WITH asg AS ({_ASG}),
-- utilisation per allocation over the window: whole GPUs from gpu_samples,
-- slices from slice_samples (a MIG GPU has no whole-GPU utilisation)
gpu_use AS ({_use_sql("gpu_samples")}),
slice_use AS ({_use_sql("slice_samples")}),
alloc AS (
    SELECT a.tenant, a.fraction, false AS is_slice, gu.util_pct, gu.mem_used_bytes
    FROM asg a LEFT JOIN gpu_use gu ON gu.gpu_uuid = a.gpu_uuid
    WHERE a.slice_id IS NULL
    UNION ALL
    SELECT a.tenant, a.fraction, true AS is_slice, su.util_pct, su.mem_used_bytes
    FROM asg a LEFT JOIN slice_use su ON su.slice_id = a.slice_id
    WHERE a.slice_id IS NOT NULL
),
held AS ({_HELD}),
hours AS ({_HOURS}),
lat AS ({_LAT}),
itl AS ({_ITL}),
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
# (Two equi-joins, not one join on `OR`; the hosts' tenants only for the hosts alerts
# name: the fleet's assignments are not joined whole on each refresh.)
_TENANT_ALERTS = """
SELECT m.tenant, count(DISTINCT (m.rule, m.scope_key)) AS firing
FROM (
    WITH f AS ({firing}),
    t AS (
        SELECT tenant, tenant AS key FROM tenants
        UNION ALL SELECT tenant, endpoint FROM endpoints
        UNION ALL SELECT DISTINCT a.tenant, g.host FROM assignments a JOIN gpus g USING (gpu_uuid)
            WHERE a.valid_from <= $at AND (a.valid_to IS NULL OR a.valid_to > $at)
              AND g.host IN (SELECT host FROM f UNION ALL SELECT scope_key FROM f)
    )
    SELECT t.tenant, f.rule, f.scope_key FROM f JOIN t ON t.key = f.scope_key
    UNION ALL
    SELECT t.tenant, f.rule, f.scope_key FROM f JOIN t ON t.key = f.host
) m
GROUP BY m.tenant
"""


# -- live path: utilisation from the writer's window sums (storage/live_window.py) --
# Assignments in force, read again only when the layout or the cursor's bounds change.
ASG_LIVE_SQL = f"SELECT * FROM ({_ASG}) ORDER BY ALL"
# Everything of a tenant's row but its holdings (no sample scan but latency's).
TENANTS_REST_SQL = f"""
WITH hours AS ({_HOURS}),
lat AS ({_LAT}),
itl AS ({_ITL}),
alerting AS ({{alerting}})
SELECT t.tenant, t.display_name, t.tier, hr.gpu_hours, i.itl_p50_ms, i.itl_p99_ms,
       i.itl_target_ms, i.endpoints_over_target, al.firing
FROM tenants t
LEFT JOIN hours hr USING (tenant)
LEFT JOIN itl i USING (tenant)
LEFT JOIN alerting al USING (tenant)
"""
# Local, over `rest` (above) and `held` (per tenant, as TENANTS_SQL's): TENANTS_SQL's
# columns, coalesces and order.
TENANTS_HELD_SQL = """
SELECT r.tenant, r.display_name, r.tier,
       coalesce(h.gpus, 0) AS gpus, coalesce(h.slices, 0) AS slices,
       h.util_mean_pct, h.util_p95_pct, h.mem_used_bytes,
       coalesce(r.gpu_hours, 0) AS gpu_hours,
       coalesce(h.idle_allocations, 0) AS idle_allocations, coalesce(h.idle_gpus, 0) AS idle_gpus,
       r.itl_p50_ms, r.itl_p99_ms, r.itl_target_ms, coalesce(r.endpoints_over_target, 0)
           AS endpoints_over_target,
       coalesce(r.firing, 0) AS alerts_firing
FROM rest r
LEFT JOIN held h USING (tenant)
ORDER BY gpus DESC, tenant
"""
# The same over `alloc` (one row per allocation, as TENANTS_SQL's).
TENANTS_LOCAL_SQL = f"WITH held AS ({_HELD})" + TENANTS_HELD_SQL
WINDOWS_SQL = f"""
SELECT sample_table, lo, hi, gen FROM {L}.snapshot
WHERE sample_table IN ('gpu_samples', 'slice_samples')
"""
_KEYS = {"gpu_samples": ("gpu", "gpu_uuid"), "slice_samples": ("slice", "slice_id")}

_asg_cache: OrderedDict[str, tuple[datetime | None, datetime | None, pa.Table]] = OrderedDict()
_keys_cache: dict[str, pa.Table] = {}
_alloc_cache: dict[str, tuple[datetime | None, datetime | None, pa.Table]] = {}
_cache_lock = threading.Lock()
_local = threading.local()


def _local_con() -> duckdb.DuckDBPyConnection:
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
        con.execute("SET threads = 1")
    return con


def _window_util(
    src: Source, table: str, meta: dict, at: datetime, window_s: float, n: int
) -> tuple[pa.Array, pa.Array] | None:
    """Per key row of `table`'s snapshot: mean util_pct and newest non-NULL memory in
    use over (at - window_s, at]; None where the kept slots do not reach back."""
    name = _KEYS[table][0]
    edge = at - timedelta(seconds=window_s)
    edge_us = round((edge - datetime(1970, 1, 1)) / timedelta(microseconds=1))
    k = edge_us // SLOT_US
    lo, hi = meta.get("lo"), meta.get("hi")
    s = np.zeros(n)
    c = np.zeros(n, dtype=np.int64)
    if hi is None:  # nothing kept yet: an empty window
        return pa.nulls(n, pa.float64()), pa.nulls(n, pa.int64())
    if lo is None or k < lo:
        return None
    # the newest slot's table also holds each key's newest non-NULL memory and its time
    top = run(
        src,
        f"SELECT slot, util_sum, util_n, mem_used_bytes, mem_ts "
        f"FROM {L}.{name}_window_{hi % WINDOW_SLOTS}",
    )
    if k < hi:
        low = run(src, f"SELECT slot, util_sum, util_n FROM {L}.{name}_window_{k % WINDOW_SLOTS}")
        for t, sign, slot in ((top, 1, hi), (low, -1, k)):
            if t.num_rows == 0:
                continue
            if t.column("slot")[0].as_py() != slot or t.num_rows > n:
                return None  # published in between
            m = t.num_rows
            s[:m] += sign * t.column("util_sum").to_numpy()
            c[:m] += sign * t.column("util_n").to_numpy()
    if k <= hi:
        part = run(
            src,
            f"SELECT row, sum(util_pct) AS s, count(*) AS c "
            f"FROM {L}.{name}_edge_{k % WINDOW_SLOTS} "
            "WHERE ts > $edge AND ts <= $at GROUP BY row",
            {"edge": edge, "at": at},
        )
        rows = part.column("row").to_numpy()
        if len(rows) and rows.max() >= n:
            return None
        s[rows] += part.column("s").to_numpy()
        c[rows] += part.column("c").to_numpy()
    util = pa.array(s / np.maximum(c, 1), mask=c <= 0)
    mem = top
    if mem.num_rows > n or (mem.num_rows and mem.column("slot")[0].as_py() != hi):
        return None
    edge_ts = pa.scalar(edge, pa.timestamp("us"))
    inside = pc.fill_null(pc.greater(mem.column("mem_ts"), edge_ts), False)
    mem_v = pc.if_else(inside, mem.column("mem_used_bytes"), pa.scalar(None, pa.int64()))
    mem_v = pa.concat_arrays(
        [
            mem_v.combine_chunks() if isinstance(mem_v, pa.ChunkedArray) else mem_v,
            pa.nulls(n - mem.num_rows, pa.int64()),
        ]
    )
    return util, mem_v


def _cached_asg(
    src: Source, at: datetime, layout: str
) -> tuple[pa.Table, datetime | None, datetime | None]:
    compute = lambda: run(src, ASG_LIVE_SQL, {"at": at})  # noqa: E731
    return layout_cached(src, at, _asg_cache, layout, compute, kept=1)


def _cached_keys(src: Source, table: str, keys_version: str) -> pa.Table:
    name, key = _KEYS[table]
    with _cache_lock:
        hit = _keys_cache.get(f"{table}/{keys_version}")
    if hit is not None:
        return hit
    keys = run(src, f"SELECT {key} FROM {L}.{name}_latest")
    with _cache_lock:
        for k in [k for k in _keys_cache if k.startswith(f"{table}/")]:
            del _keys_cache[k]
        _keys_cache[f"{table}/{keys_version}"] = keys
    return keys


def _alloc_live(src: Source, at: datetime, window_s: float) -> pa.Table | None:
    """TENANTS_SQL's `alloc` from the window sums; None: read history."""
    if window_s > WINDOW_MAX_S:
        return None
    version = snapshot_state(src, at, window_s, "gpu_samples", "slice_samples")
    if version is None:
        return None
    layout, gpu_keys_v, slice_keys_v = version.split("/")
    meta = {r["sample_table"]: r for r in run(src, WINDOWS_SQL).to_pylist()}
    if set(meta) != set(_KEYS):
        return None
    alloc = _cached_alloc(src, at, layout, gpu_keys_v, slice_keys_v)
    util, mem = [], []
    for table, keys_v in (("gpu_samples", gpu_keys_v), ("slice_samples", slice_keys_v)):
        n = _cached_keys(src, table, keys_v).num_rows
        got = _window_util(src, table, meta[table], at, window_s, n)
        if got is None:
            return None
        util.append(got[0])
        mem.append(got[1])
    # one array over both tables' rows: a slice's row index is offset by the GPUs'
    row = alloc.column("row")
    parts = alloc.drop_columns(["row"])
    parts = parts.append_column("util_pct", pa.concat_arrays(util).take(row))
    parts = parts.append_column("mem_used_bytes", pa.concat_arrays(mem).take(row))
    # the sums must come from one publish
    again = {r["sample_table"]: r["gen"] for r in run(src, WINDOWS_SQL).to_pylist()}
    if again != {t: m["gen"] for t, m in meta.items()}:
        return None
    return parts


def _cached_alloc(
    src: Source, at: datetime, layout: str, gpu_keys_v: str, slice_keys_v: str
) -> pa.Table:
    """The allocations in force (tenant, fraction, is_slice) and each one's row in the
    GPU rows followed by the slice rows; kept while layout, keys and bounds hold."""
    key = f"{layout}/{gpu_keys_v}/{slice_keys_v}"
    with _cache_lock:
        hit = _alloc_cache.get(key)
    if hit is not None:
        lo, hi, alloc = hit
        if (lo is None or lo <= at) and (hi is None or at < hi):
            return alloc
    asg, asg_lo, asg_hi = _cached_asg(src, at, layout)
    gpu_keys = _cached_keys(src, "gpu_samples", gpu_keys_v).column("gpu_uuid")
    slice_keys = _cached_keys(src, "slice_samples", slice_keys_v).column("slice_id")
    parts = []
    for is_slice in (False, True):
        a = asg.filter(
            pc.is_valid(asg.column("slice_id")) if is_slice else pc.is_null(asg.column("slice_id"))
        )
        if is_slice:
            row = pc.add(pc.index_in(a.column("slice_id"), value_set=slice_keys), len(gpu_keys))
        else:
            row = pc.index_in(a.column("gpu_uuid"), value_set=gpu_keys)
        parts.append(
            pa.table(
                {
                    "tenant": a.column("tenant"),
                    "fraction": a.column("fraction"),
                    "is_slice": pa.array(np.full(a.num_rows, is_slice)),
                    "row": row.cast(pa.int64()),
                }
            )
        )
    alloc = pa.concat_tables(parts).combine_chunks()
    with _cache_lock:
        _alloc_cache.clear()
        _alloc_cache[key] = (asg_lo, asg_hi, alloc)
    return alloc


# -- history path: the window's per-key sums, placed by cached allocations ---------
# Where no window state covers the question (a cursor in the past, a read-only store,
# the first seconds after an open) the utilisation is read from the samples: per key
# one aggregate over integers (_UTIL_SUMS) and the newest memory (_MEM_ROWS); which keys
# each allocation holds is read again only when the layout changed or the cursor crossed
# an assignment's bound; the per-tenant figures are numpy's (tenant_held.py).
# Allocations in force (ASG_LIVE_SQL's order) with the keys of their GPU or slice.
PLACEMENT_SQL = f"""
WITH asg AS (SELECT row_number() OVER () - 1 AS i, * FROM ({ASG_LIVE_SQL})),
g AS (
    SELECT a.i, list(k.series_id ORDER BY k.series_id) AS ids
    FROM asg a JOIN gpu_series k ON k.gpu_uuid = a.gpu_uuid
    WHERE a.slice_id IS NULL GROUP BY a.i
),
s AS (
    SELECT a.i, list(k.slice_series_id ORDER BY k.slice_series_id) AS ids
    FROM asg a JOIN slice_series k ON k.slice_id = a.slice_id
    GROUP BY a.i
)
SELECT a.tenant, a.fraction, a.slice_id IS NOT NULL AS is_slice,
       coalesce(g.ids, s.ids, []::BIGINT[]) AS ids
FROM asg a LEFT JOIN g USING (i) LEFT JOIN s USING (i)
ORDER BY a.i
"""
# What the placement is read from, beside the assignments: the keys (ids only grow;
# retention drops whole keys), and the writer's layout version (it changes with
# `assignments`) or, for a read-only file (nothing writes it while it is open), the
# file and a digest of its assignments. None (a lake: other processes write it): the
# one statement, TENANTS_SQL.
PLACEMENT_VERSION_SQL = """
SELECT (SELECT count(*)::VARCHAR || ':' || coalesce(max(series_id), 0)::VARCHAR
        FROM gpu_series)
    || '/' || (SELECT count(*)::VARCHAR || ':' || coalesce(max(slice_series_id), 0)::VARCHAR
        FROM slice_series) AS keys,
       (SELECT any_value(readonly AND type = 'duckdb') FROM duckdb_databases()
        WHERE database_name = current_database()) AS read_only,
       (SELECT any_value(path) FROM duckdb_databases()
        WHERE database_name = current_database()) AS path
"""
READ_ONLY_DIGEST_SQL = """
SELECT count(*)::VARCHAR || ':' || coalesce(max(valid_from)::VARCHAR, '') || ':'
    || coalesce(max(valid_to)::VARCHAR, '') || ':' || count(valid_to)::VARCHAR || ':'
    || coalesce(sum(fraction)::VARCHAR, '') AS digest
FROM assignments
"""
LAYOUT_VERSION_SQL = f"SELECT any_value(layout_version) AS v FROM {L}.snapshot"

_placements: OrderedDict[str, tuple[datetime | None, datetime | None, pa.Table]] = OrderedDict()


def _placement_version(src: Source) -> str | None:
    try:
        row = run(src, PLACEMENT_VERSION_SQL).to_pylist()[0]
    except Exception:  # noqa: BLE001 - duckdb.Error locally, QueryError through a reader
        return None
    if row["read_only"]:
        digest = run(src, READ_ONLY_DIGEST_SQL).column("digest")[0].as_py()
        return f"ro:{row['path']}:{digest}/{row['keys']}"
    if not table_columns(src, f"{L}.snapshot"):
        return None
    layout = run(src, LAYOUT_VERSION_SQL).column("v")[0].as_py()
    return None if layout is None else f"{layout}/{row['keys']}"


# The GROUP BYs over the dense integer ids (storage/keyed.py) as a direct-indexed table,
# not a hash table: DuckDB's perfect_ht_threshold at 2^18 ids, for these statements only
# (a session setting, on a cursor of their own: set for the whole instance it made the
# drill-down's query set ~50 % dearer). The per-GPU window sums over 100,320 GPUs' ids
# took 58 -> 16 ms CPU (benchmarks/README.md, round 7 r7-tenants). A reader on a daemon
# (Quack) runs them with the daemon's default.
DENSE_HT_BITS = 18


@contextlib.contextmanager
def _dense(src: Source) -> Iterator[Source]:
    con = src if isinstance(src, duckdb.DuckDBPyConnection) else getattr(src, "con", None)
    if not isinstance(src, duckdb.DuckDBPyConnection | LocalReader) or con is None:
        yield src
        return
    cur = con.cursor()
    try:
        cur.execute(f"SET perfect_ht_threshold = {DENSE_HT_BITS}")
        yield cur
    finally:
        cur.close()


# Tables whose last window had keys with no memory at all (a source that reports none):
# their sums also count memory values per key, so the older span is read only for keys
# that have some (one more aggregate over the window's rows, ~16 ms at 100k, against
# reading the older span for every such key on every refresh, ~50 ms for half of them).
_count_mem: set[str] = set()


def _window_sums(
    src: Source, table: str, at: datetime, window_s: float
) -> tuple[pa.Table, pa.Table]:
    """Per key of `table` over (at - window_s, at]: (id, s, n) and (id, mem, mem_ts),
    the newest non-NULL memory of every key that has one in the window."""
    start = at - timedelta(seconds=window_s)
    recent = max(start, at - timedelta(seconds=MEM_RECENT_S))
    counted = table in _count_mem
    with _dense(src) as dense:
        sums = run(
            dense,
            _keyed_sql(_UTIL_MEM_SUMS if counted else _UTIL_SUMS, table, stored=True),
            {"at": at, "util_window_s": window_s},
        )
        mem = _newest(run(dense, _keyed_sql(_MEM_ROWS, table), {"at": at, "since": recent}))
        if recent <= start:
            return sums, mem
        key = sums.column("id").to_numpy()
        mkey = mem.column("id").to_numpy()
        seen = np.zeros(int(max(key.max(initial=0), mkey.max(initial=0))) + 1, dtype=bool)
        seen[mkey] = True
        missing = key[~seen[key]]
        if counted:
            has_mem = sums.column("mem_n").to_numpy() > 0
            if has_mem.all():
                _count_mem.discard(table)
            missing = key[~seen[key] & has_mem]
        if not len(missing):
            return sums, mem
        older = {"at": recent, "since": start}
        if isinstance(dense, duckdb.DuckDBPyConnection):  # only the keys without one
            dense.register("_missing", pa.table({"id": missing}))
            rest = run(dense, _keyed_sql(_OLDER_MEM, table), older)
            dense.unregister("_missing")
        else:
            rest = run(dense, _keyed_sql(_NEWEST_MEM, table), older)
            rest = rest.filter(pc.is_in(rest.column("id"), value_set=pa.array(missing)))
        if rest.num_rows < len(missing):
            _count_mem.add(table)
    return sums, pa.concat_tables([mem, rest.cast(mem.schema)])


def _newest(rows: pa.Table) -> pa.Table:
    """Per key of `rows` (id, mem, mem_ts) its newest row (_NEWEST_MEM's arg_max; of
    rows as new as each other, the first)."""
    ids = rows.column("id").to_numpy()
    ts = pc.cast(rows.column("mem_ts"), pa.int64()).to_numpy()
    size = int(ids.max(initial=0)) + 1
    when = np.full(size, np.iinfo(np.int64).min)
    np.maximum.at(when, ids, ts)
    newest = np.flatnonzero(ts == when[ids])
    first = np.full(size, len(ids))
    np.minimum.at(first, ids[newest], newest)
    return rows.take(newest[first[ids[newest]] == newest])


def _dense_sums(sums: pa.Table, mem_t: pa.Table) -> Sums:
    """`_window_sums`' tables as arrays indexed by key id."""
    key = sums.column("id").to_numpy()
    mkey = mem_t.column("id").to_numpy()
    out = Sums.empty(int(max(key.max(initial=-1), mkey.max(initial=-1))) + 1)
    out.total[key] = pc.fill_null(sums.column("s"), 0.0).to_numpy(zero_copy_only=False)
    out.count[key] = sums.column("n").to_numpy()
    out.has_mem[mkey] = True
    out.mem[mkey] = mem_t.column("mem").to_numpy()
    out.mem_ts[mkey] = pc.cast(mem_t.column("mem_ts"), pa.int64()).to_numpy()
    return out


def _key_sums(src: Source, tables: list[str], at: datetime, window_s: float) -> dict[str, Sums]:
    """Per key of each table over the window: from the slots a reader in this process
    keeps (tenant_window.py), else read whole."""
    if isinstance(src, LocalReader):
        return window_sums(src, tables, at, window_s, _dense)
    return {t: _dense_sums(*_window_sums(src, t, at, window_s)) for t in tables}


def _per_alloc(
    sums: Sums, allocs: np.ndarray, ids: np.ndarray, n: int, multi: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per allocation (n of them) from the per-key sums, where (allocs[j], ids[j]):
    allocation j holds key ids[j]: util_pct's sum and count, the newest non-NULL
    memory in use and whether there is one (0 for the others)."""
    size = max(len(sums.total), int(ids.max(initial=-1)) + 1)
    total, count, has, mem = (
        padded(a, size) for a in (sums.total, sums.count, sums.has_mem, sums.mem)
    )
    s = np.bincount(allocs, weights=total[ids], minlength=n)
    c = np.bincount(allocs, weights=count[ids], minlength=n)
    pick = np.flatnonzero(has[ids])  # pairs whose key has a memory value
    if multi and len(pick):  # an allocation with several keys: the newest memory wins
        when = padded(sums.mem_ts, size)
        order = pick[np.lexsort((when[ids[pick]], allocs[pick]))]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = allocs[order][1:] != allocs[order][:-1]
        pick = order[last]
    out = np.zeros(n, dtype=np.int64)
    got = np.zeros(n, dtype=bool)
    out[allocs[pick]] = mem[ids[pick]]
    got[allocs[pick]] = True
    return s, c, out, got


@dataclass(frozen=True)
class _Placed:
    """A placement's arrays, derived once per placement: per sample table the pairs
    (allocation, key id) of its allocations; the fractions; the tenants as codes."""

    placement: pa.Table
    pairs: dict[str, tuple[np.ndarray, np.ndarray]]
    multi: bool
    is_slice: np.ndarray
    fraction: np.ndarray
    fraction_ok: np.ndarray
    tenants: TenantCodes


_placed: dict[str, _Placed] = {}


def _placed_for(version: str, placement: pa.Table) -> _Placed:
    with _cache_lock:
        hit = _placed.get(version)
    if hit is not None and hit.placement is placement:
        return hit
    ids_col = placement.column("ids")
    lengths = pc.list_value_length(ids_col).to_numpy(zero_copy_only=False)
    allocs = np.repeat(np.arange(placement.num_rows), lengths)
    ids = pc.list_flatten(ids_col).to_numpy(zero_copy_only=False).astype(np.int64)
    is_slice = placement.column("is_slice").to_numpy(zero_copy_only=False)
    mine = is_slice[allocs]
    frac = placement.column("fraction")
    placed = _Placed(
        placement,
        {
            "gpu_samples": (allocs[~mine], ids[~mine]),
            "slice_samples": (allocs[mine], ids[mine]),
        },
        bool((lengths > 1).any()),
        is_slice,
        pc.fill_null(frac, 0.0).to_numpy(zero_copy_only=False),
        pc.is_valid(frac).to_numpy(zero_copy_only=False),
        tenant_codes(placement.column("tenant")),
    )
    with _cache_lock:
        _placed.clear()
        _placed[version] = placed
    return placed


def _alloc_history(src: Source, at: datetime, window_s: float) -> pa.Table | None:
    """TENANTS_SQL's `alloc` from the samples with a cached placement; None where no
    version tells when the placement changed (then the one statement)."""
    got = _use_history(src, at, window_s)
    if got is None:
        return None
    p, util, util_ok, mem, mem_ok = got
    return (
        p.placement.drop_columns(["ids"])
        .append_column("util_pct", pa.array(util, pa.float64(), mask=~util_ok))
        .append_column("mem_used_bytes", pa.array(mem, pa.int64(), mask=~mem_ok))
    )


def _held_history(src: Source, at: datetime, window_s: float) -> pa.Table | None:
    """TENANTS_SQL's `held` (per tenant) from the samples with a cached placement."""
    got = _use_history(src, at, window_s)
    if got is None:
        return None
    p, util, util_ok, mem, mem_ok = got
    return held(p.tenants, p.fraction, p.fraction_ok, p.is_slice, util, util_ok, mem, mem_ok)


def _use_history(
    src: Source, at: datetime, window_s: float
) -> tuple[_Placed, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Per allocation of the cached placement: mean util_pct, whether it has one, the
    newest memory in use, whether it has one; None where no version tells when the
    placement changed (then the one statement)."""
    version = _placement_version(src)
    if version is None:
        return None
    placement, _, _ = layout_cached(
        src, at, _placements, version, lambda: _placement(src, at), kept=1
    )
    p = _placed_for(version, placement)
    n = placement.num_rows
    total, count = np.zeros(n), np.zeros(n)
    mem, mem_ok = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    sums = _key_sums(src, list(p.pairs), at, window_s)
    for table, (allocs, ids) in p.pairs.items():
        s, c, m, got = _per_alloc(sums[table], allocs, ids, n, p.multi)
        total += s  # an allocation's pairs are all in one table
        count += c
        mem[got] = m[got]
        mem_ok |= got
    return p, total / np.maximum(count, 1), count > 0, mem, mem_ok


def _placement(src: Source, at: datetime) -> pa.Table:
    return run(src, PLACEMENT_SQL, {"at": at}).combine_chunks()


def _alerting_sql(src: Source, at: datetime) -> str:
    """The per-tenant alert count's SQL; the empty relation while no alert fires at
    `at` (the count's joins cost ~30 ms at 100k GPUs even on an empty `alerts`)."""
    count = firing_count_sql(src)
    if count is None or run(src, count, {"at": at}).column("n")[0].as_py() == 0:
        return _NO_ALERTS
    return _TENANT_ALERTS.format(firing=firing_sql(src))


def tenant_summary(
    src: Source,
    at: datetime | None = None,
    *,
    util_window_s: float = 30.0,
    hours_window_s: float = 86400.0,
    live: bool = True,
    one_statement: bool = False,
) -> pa.Table:
    """One row per tenant, largest holding first. Utilisation and memory come from
    the writer's window sums where they cover the window (`live=False`: always
    from the samples, as where they do not); `one_statement`: everything in one
    statement, TENANTS_SQL (a lake's path; the reference the others are tested
    against)."""
    at_resolved = resolve_at(at)
    alerting = _alerting_sql(src, at_resolved)
    params = {
        "at": at_resolved,
        "util_window_s": util_window_s,
        "hours_window_s": hours_window_s,
    }
    alloc = held_t = None
    if not one_statement:
        alloc = _alloc_live(src, at_resolved, util_window_s) if live else None
        if alloc is None:
            held_t = _held_history(src, at_resolved, util_window_s)
    if alloc is None and held_t is None:
        return run(src, TENANTS_SQL.replace("{alerting}", alerting), params)
    rest = run(src, TENANTS_REST_SQL.replace("{alerting}", alerting), params)
    if held_t is not None:
        return tenant_rows(rest, held_t)
    con = _local_con()
    con.register("rest", rest)
    con.register("alloc", alloc)
    try:
        return con.execute(TENANTS_LOCAL_SQL).to_arrow_table()
    finally:
        con.unregister("rest")
        con.unregister("alloc")


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
