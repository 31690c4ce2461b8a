"""Live views: the same rows as the history path, from the newest-sample snapshot.

At a cursor the snapshot covers (`storage/live.py`: nothing newer than the
cursor in it, and its fill reaches back over the stale window), the latest
values come from `fleettui_live.<table>` (one row per GPU or slice) instead of
the stale window of history, so a refresh costs what the fleet is, not what is
stored. The rack grid's layout (GPUs in rack order, tenants, slice counts)
changes rarely: it is computed once and reused while a fingerprint of
`gpus`, `hosts`, `slices` and the assignments in force is unchanged; each
refresh then asks only for values and joins them to the layout in a local
DuckDB. `tests/test_views_live.py` checks every live view against the
history path on the same data.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from storage.live import LIVE_CATALOG
from storage.views.latest import ASSIGNED
from storage.views.query import Source, run, table_columns

L = LIVE_CATALOG


def snapshot_state(src: Source, at: datetime, stale_s: float, *tables: str) -> str | None:
    """The snapshot's layout version when the snapshot of every sample table in
    `tables` holds exactly the newest rows at or before `at` over its stale window;
    None when it does not (a cursor in the past, no snapshot: read history)."""
    if not table_columns(src, f"{L}.snapshot"):
        return None
    sql = f"""
        SELECT count(*) AS n, any_value(layout_version) AS v FROM {L}.snapshot
        WHERE sample_table IN ({", ".join(f"'{t}'" for t in tables)})
          AND (since IS NULL OR since <= $at - to_seconds($stale_s))
          AND (through IS NULL OR through <= $at)
    """
    try:
        row = run(src, sql, {"at": at, "stale_s": stale_s}).to_pylist()[0]
    except Exception:  # noqa: BLE001 - duckdb.Error locally, QueryError through a reader
        return None
    return row["v"] if row["n"] == len(tables) and row["v"] else None


def covers(src: Source, at: datetime, stale_s: float, *tables: str) -> bool:
    return snapshot_state(src, at, stale_s, *tables) is not None


# Newest row per GPU in the host's newest report, from the snapshot (the same
# rule as storage/views/latest.py's gpu_latest): parameters $at, $stale_s.
# `host_ts` (the host's newest sample) is kept by the snapshot, so no aggregate.
def gpu_latest_live(where: str = "true") -> str:
    return f"""
    SELECT gpu_uuid, host, ts, util_pct, mem_used_bytes, mem_total_bytes,
           power_w, temp_c, sm_clock_mhz, ecc_sbe_total, ecc_dbe_total, throttle_reasons
    FROM {L}.gpu_latest
    WHERE ts > $at - to_seconds($stale_s) AND host_ts > $at - to_seconds($stale_s)
      AND ts > host_ts - INTERVAL 1 SECOND AND {where}
"""


SLICE_LATEST_LIVE = f"""
    SELECT slice_id, ts, util_pct, mem_used_bytes FROM {L}.slice_latest
    WHERE ts > $at - to_seconds($stale_s) AND gpu_ts > $at - to_seconds($stale_s)
      AND ts > gpu_ts - INTERVAL 1 SECOND
"""

# -- rack grid -------------------------------------------------------------------

# Everything of the grid but the values: one row per GPU in rack order (`ord`).
RACK_LAYOUT_SQL = f"""
WITH asg AS ({ASSIGNED}),
hosts_sorted AS (
    SELECT *,
           regexp_replace(coalesce(cluster, ''), '[0-9]+$', '') AS cluster_key,
           TRY_CAST(regexp_extract(cluster, '([0-9]+)$', 1) AS BIGINT) AS cluster_num,
           regexp_replace(rack, '[0-9]+$', '') AS rack_key,
           TRY_CAST(regexp_extract(rack, '([0-9]+)$', 1) AS BIGINT) AS rack_num
    FROM hosts
),
nsl AS (SELECT gpu_uuid, count(*) AS n_slices FROM slices GROUP BY gpu_uuid)
SELECT h.cluster, h.rack, h.rack_slot, g.host, h.model, h.nvlink_domain,
       g.gpu_index, g.gpu_uuid, g.name, g.mig_mode, g.mem_total_bytes AS gpu_mem_total_bytes,
       coalesce(s.n_slices, 0) AS n_slices, a.tenants, coalesce(a.allocated, 0) AS allocated,
       row_number() OVER (
           ORDER BY h.rack IS NULL, h.cluster IS NULL, h.cluster_key, h.cluster_num, h.cluster,
                    h.rack_key, h.rack_num, h.rack, h.rack_slot, g.host,
                    g.gpu_index NULLS LAST, g.gpu_uuid) AS ord
FROM gpus g
LEFT JOIN hosts_sorted h ON h.host = g.host
LEFT JOIN nsl s ON s.gpu_uuid = g.gpu_uuid
LEFT JOIN asg a ON a.gpu_uuid = g.gpu_uuid
WHERE h.first_seen IS NULL OR h.first_seen <= $at
"""

# When the layout read at a cursor stops being valid: a host's first_seen or an
# assignment's start or end on either side of it.
LAYOUT_VALID_SQL = """
SELECT greatest((SELECT max(first_seen) FROM hosts WHERE first_seen <= $at),
                (SELECT max(valid_from) FROM assignments WHERE valid_from <= $at),
                (SELECT max(valid_to) FROM assignments WHERE valid_to <= $at)) AS lo,
       least((SELECT min(first_seen) FROM hosts WHERE first_seen > $at),
             (SELECT min(valid_from) FROM assignments WHERE valid_from > $at),
             (SELECT min(valid_to) FROM assignments WHERE valid_to > $at)) AS hi
"""

# Per refresh: the snapshot's rows (a plain scan), slices per GPU, recent events.
RACK_VALUES_SQL = f"""
SELECT gpu_uuid, host, ts, host_ts, util_pct, mem_used_bytes, mem_total_bytes, power_w, temp_c,
       sm_clock_mhz, ecc_dbe_total, throttle_reasons
FROM {L}.gpu_latest WHERE ts > $at - to_seconds($stale_s)
"""
RACK_SLICES_SQL = f"""
SELECT s.gpu_uuid, avg(sl.util_pct) AS slice_util_pct,
       sum(sl.mem_used_bytes)::BIGINT AS slice_mem_used_bytes
FROM slices s JOIN ({SLICE_LATEST_LIVE}) sl USING (slice_id)
GROUP BY s.gpu_uuid
"""
RACK_EVENTS_SQL = """
SELECT gpu_uuid, count(*) AS n_events FROM events
WHERE ts > $at - INTERVAL 1 HOUR AND ts <= $at AND gpu_uuid IS NOT NULL
GROUP BY gpu_uuid
"""

# A filter runs locally over the assembled grid, keeping its order.
RACK_FILTER_SQL = "SELECT * EXCLUDE (_ord) FROM grid WHERE {where} ORDER BY _ord"

_layouts: OrderedDict[str, tuple[datetime | None, datetime | None, pa.Table]] = OrderedDict()
_layouts_lock = threading.Lock()
_LAYOUTS_KEPT = 4

_local = threading.local()


def local_con() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB, for SQL over a view's Arrow results."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
        con.execute("SET threads = 1")
    return con


def rack_layout(src: Source, at: datetime, version: str) -> pa.Table:
    """The grid's layout at `at`, computed again only when the snapshot's layout
    version changed or the cursor crossed a first_seen / assignment bound."""
    with _layouts_lock:
        hit = _layouts.get(version)
    if hit is not None:
        lo, hi, layout = hit
        if (lo is None or lo <= at) and (hi is None or at < hi):
            return layout
    layout = run(src, RACK_LAYOUT_SQL, {"at": at}).sort_by("ord")
    bounds = run(src, LAYOUT_VALID_SQL, {"at": at}).to_pylist()[0]
    with _layouts_lock:
        _layouts[version] = (bounds["lo"], bounds["hi"], layout)
        _layouts.move_to_end(version)
        while len(_layouts) > _LAYOUTS_KEPT:
            _layouts.popitem(last=False)
    return layout


def _lookup(keys: pa.ChunkedArray, table: pa.Table, key: str) -> pa.Array:
    """For each of `keys`, the row of `table` whose `key` equals it (null: none)."""
    return pc.index_in(keys, value_set=table.column(key))


def _take(table: pa.Table, col: str, idx: pa.Array) -> pa.Array:
    return table.column(col).take(idx)


def rack_grid_live(
    src: Source,
    at: datetime,
    stale_s: float,
    version: str,
    alerting_sql: str,
    where: str,
    filters: dict[str, str],
) -> pa.Table:
    """The rack grid from the snapshot: the same rows, columns and order as RACK_SQL."""
    layout = rack_layout(src, at, version)
    params = {"at": at, "stale_s": stale_s}
    vals = run(src, RACK_VALUES_SQL, params)
    sliced = run(src, RACK_SLICES_SQL, params)
    ev = run(src, RACK_EVENTS_SQL, {"at": at})
    alerting = run(src, alerting_sql, {"at": at})

    # the host's newest report rule (storage/views/latest.py): a GPU's row counts
    # when its host reported within the window and the GPU was in that report
    low = pa.scalar(at - timedelta(seconds=stale_s), pa.timestamp("us"))
    ts, host_ts = vals.column("ts"), vals.column("host_ts")
    host_in = pc.greater(host_ts, low)
    present = pc.and_(host_in, pc.greater(ts, pc.subtract(host_ts, pa.scalar(_ONE_S))))
    seen_hosts = pc.unique(pc.filter(vals.column("host"), host_in))
    vals = vals.filter(present)

    uuid_col = layout.column("gpu_uuid")
    host_col = layout.column("host")
    vi = _lookup(uuid_col, vals, "gpu_uuid")
    si = _lookup(uuid_col, sliced, "gpu_uuid")
    ei = _lookup(uuid_col, ev, "gpu_uuid")
    ai = _lookup(host_col, alerting, "host")

    util = pc.coalesce(_take(vals, "util_pct", vi), _take(sliced, "slice_util_pct", si))
    mem_used = pc.coalesce(
        _take(vals, "mem_used_bytes", vi), _take(sliced, "slice_mem_used_bytes", si)
    )
    mem_total = pc.coalesce(
        _take(vals, "mem_total_bytes", vi), layout.column("gpu_mem_total_bytes")
    ).cast(pa.float64())
    mem_total = pc.if_else(pc.equal(mem_total, 0.0), pa.scalar(None, pa.float64()), mem_total)
    mem_pct = pc.divide(pc.multiply(mem_used.cast(pa.float64()), 100.0), mem_total)
    errors = pc.add(
        pc.coalesce(_take(ev, "n_events", ei), 0),
        pc.coalesce(_take(vals, "ecc_dbe_total", vi), 0),
    )
    sample_ts = _take(vals, "ts", vi)
    grid = pa.table(
        {
            **{c: layout.column(c) for c in _LAYOUT_HEAD},
            "util_pct": util,
            "mem_pct": mem_pct,
            **{c: _take(vals, c, vi) for c in ("power_w", "temp_c", "sm_clock_mhz")},
            "throttle_reasons": _take(vals, "throttle_reasons", vi),
            "errors": errors.cast(pa.int64()),
            **{c: layout.column(c) for c in ("n_slices", "tenants", "allocated")},
            "sample_ts": sample_ts,
            "host_stale": pc.invert(pc.is_in(host_col, value_set=seen_hosts)),
            "gpu_missing": pc.is_null(sample_ts),
            "host_alerts": pc.coalesce(_take(alerting, "firing", ai), 0).cast(pa.int64()),
        }
    )
    if where == "true":
        return grid
    con = local_con()
    con.register("grid", grid.append_column("_ord", pa.array(range(grid.num_rows))))
    try:
        sql = RACK_FILTER_SQL.replace("{where}", where)
        used = {k: v for k, v in filters.items() if f"${k}" in sql}
        return con.execute(sql, used).to_arrow_table()
    finally:
        con.unregister("grid")


_ONE_S = timedelta(seconds=1)
_LAYOUT_HEAD = (
    "cluster",
    "rack",
    "rack_slot",
    "host",
    "model",
    "nvlink_domain",
    "gpu_index",
    "gpu_uuid",
    "name",
    "mig_mode",
)
