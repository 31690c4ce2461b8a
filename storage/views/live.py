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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.live import LIVE_CATALOG
from storage.views.latest import ASSIGNED
from storage.views.query import Source, run, table_columns

L = LIVE_CATALOG


def snapshot_state(src: Source, at: datetime, stale_s: float, *tables: str) -> str | None:
    """`<layout_version>/<keys_version of each table>` when the snapshot of every
    sample table in `tables` holds exactly the newest rows at or before `at` over
    its stale window; None when it does not (a cursor in the past, no snapshot:
    read history)."""
    if not table_columns(src, f"{L}.snapshot"):
        return None
    sql = f"""
        SELECT count(*) AS n, any_value(layout_version) AS layout,
               string_agg(keys_version, '/' ORDER BY sample_table) AS keys
        FROM {L}.snapshot
        WHERE sample_table IN ({", ".join(f"'{t}'" for t in tables)})
          AND (since IS NULL OR since <= $at - to_seconds($stale_s))
          AND (through IS NULL OR through <= $at)
    """
    try:
        row = run(src, sql, {"at": at, "stale_s": stale_s}).to_pylist()[0]
    except Exception:  # noqa: BLE001 - duckdb.Error locally, QueryError through a reader
        return None
    if row["n"] != len(tables) or not row["layout"] or not row["keys"]:
        return None
    return f"{row['layout']}/{row['keys']}"


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
      AND host_ts <= $at AND ts > host_ts - INTERVAL 1 SECOND AND {where}
"""


SLICE_LATEST_LIVE = f"""
    SELECT slice_id, ts, util_pct, mem_used_bytes FROM {L}.slice_latest
    WHERE ts > $at - to_seconds($stale_s) AND gpu_ts > $at - to_seconds($stale_s)
      AND gpu_ts <= $at AND ts > gpu_ts - INTERVAL 1 SECOND
"""

# -- rack grid -------------------------------------------------------------------

# Everything of the grid but the values: one row per GPU in rack order (`ord`).
# Hosts are ranked first (a sort of the hosts, not of every GPU: the window over
# 100k GPUs with ten keys was 190 ms), then GPUs are ordered by (host rank,
# gpu_index NULLS LAST, gpu_uuid): the same order as RACK_SQL's ORDER BY, whose
# last keys after the host's are gpu_index and gpu_uuid.
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
host_rank AS (
    SELECT gh.host, h.first_seen, row_number() OVER (
               ORDER BY h.rack IS NULL, h.cluster IS NULL, h.cluster_key, h.cluster_num,
                        h.cluster, h.rack_key, h.rack_num, h.rack, h.rack_slot, gh.host
           ) AS host_ord
    FROM (SELECT DISTINCT host FROM gpus) gh LEFT JOIN hosts_sorted h ON h.host = gh.host
),
nsl AS (SELECT gpu_uuid, count(*) AS n_slices FROM slices GROUP BY gpu_uuid)
SELECT h.cluster, h.rack, h.rack_slot, g.host, h.model, h.nvlink_domain,
       g.gpu_index, g.gpu_uuid, g.name, g.mig_mode, g.mem_total_bytes AS gpu_mem_total_bytes,
       g.pci_bus_id,
       coalesce(s.n_slices, 0) AS n_slices, a.tenants, coalesce(a.allocated, 0) AS allocated,
       r.host_ord
FROM gpus g
JOIN host_rank r ON r.host = g.host
LEFT JOIN hosts h ON h.host = g.host
LEFT JOIN nsl s ON s.gpu_uuid = g.gpu_uuid
LEFT JOIN asg a ON a.gpu_uuid = g.gpu_uuid
WHERE r.first_seen IS NULL OR r.first_seen <= $at
"""
_LAYOUT_ORDER = [(c, "ascending", "at_end") for c in ("host_ord", "gpu_index", "gpu_uuid")]


def _layout_in_order(t: pa.Table) -> pa.Table:
    """RACK_LAYOUT_SQL's rows in rack order, numbered from 1 in `ord`."""
    t = t.sort_by(_LAYOUT_ORDER)
    i = t.schema.get_field_index("host_ord")
    return t.set_column(i, "ord", pa.array(np.arange(1, t.num_rows + 1, dtype=np.int64)))


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

# Per refresh: the snapshot's values (a plain scan in its stable row order; the
# rows' keys are read only when the keys version changed), slices per GPU, events.
RACK_VALUES_SQL = f"""
SELECT ts, host_ts, util_pct, mem_used_bytes, mem_total_bytes, power_w, temp_c,
       sm_clock_mhz, ecc_dbe_total, throttle_reasons
FROM {L}.gpu_latest
"""
RACK_KEYS_SQL = f"SELECT gpu_uuid, host FROM {L}.gpu_latest"
RACK_SLICE_VALUES_SQL = f"SELECT ts, gpu_ts, util_pct, mem_used_bytes FROM {L}.slice_latest"
RACK_SLICE_KEYS_SQL = f"SELECT slice_id FROM {L}.slice_latest"
RACK_EVENTS_SQL = """
SELECT gpu_uuid, count(*) AS n_events FROM events
WHERE ts > $at - INTERVAL 1 HOUR AND ts <= $at AND gpu_uuid IS NOT NULL
GROUP BY gpu_uuid
"""

# A filter runs locally over the assembled grid, keeping its order.
RACK_FILTER_SQL = "SELECT * EXCLUDE (_ord) FROM grid WHERE {where} ORDER BY _ord"

_layouts: OrderedDict[str, tuple[datetime | None, datetime | None, pa.Table]] = OrderedDict()
_positions: OrderedDict[str, _Positions] = OrderedDict()
_cache_lock = threading.Lock()
_KEPT = 4

_local = threading.local()


def _remember(cache: OrderedDict, key: str, value: Any, kept: int = _KEPT) -> None:
    with _cache_lock:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > kept:
            cache.popitem(last=False)


def layout_cached(
    src: Source,
    at: datetime,
    cache: OrderedDict,
    version: str,
    compute: Callable[[], pa.Table],
    *,
    kept: int = _KEPT,
) -> tuple[pa.Table, datetime | None, datetime | None]:
    """`compute()`'s table for a layout version, computed again only when the version
    changed or the cursor crossed a first_seen / assignment bound (LAYOUT_VALID_SQL);
    with the bounds it holds for, [lo, hi)."""
    with _cache_lock:
        hit = cache.get(version)
    if hit is not None:
        lo, hi, table = hit
        if (lo is None or lo <= at) and (hi is None or at < hi):
            return table, lo, hi
    table = compute()
    bounds = run(src, LAYOUT_VALID_SQL, {"at": at}).to_pylist()[0]
    _remember(cache, version, (bounds["lo"], bounds["hi"], table), kept)
    return table, bounds["lo"], bounds["hi"]


def local_con() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB, for SQL over a view's Arrow results."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
        con.execute("SET threads = 1")
    return con


def rack_layout(src: Source, at: datetime, layout_version: str) -> pa.Table:
    """The grid's layout at `at`, computed again only when the snapshot's layout
    version changed or the cursor crossed a first_seen / assignment bound."""
    return layout_cached(
        src,
        at,
        _layouts,
        layout_version,
        lambda: _layout_in_order(run(src, RACK_LAYOUT_SQL, {"at": at})),
    )[0]


def warm_rack(src: Source, at: datetime, stale_s: float) -> bool:
    """The rack grid's layout and row positions for the snapshot's versions at `at`,
    built now (the app: in the snapshot fill's thread once it published, so the first
    live refresh finds them; ~0.8 s CPU at 100k GPUs); False without a snapshot."""
    version = snapshot_state(src, at, stale_s, "gpu_samples", "slice_samples")
    if version is None:
        return False
    rack_positions(src, rack_layout(src, at, version.split("/", 1)[0]), version)
    return True


# The drill-down's GPUs of one host (storage/views/drilldown.py HOST_GPUS_SQL), from
# that host's rows of the cached layout (dimensions, tenants; already in the
# drill-down's order: gpu_index NULLS LAST, gpu_uuid) and of the snapshot: no scan
# of `assignments`, `gpus` or `hosts` per refresh. mem_pct is HOST_GPUS_SQL's
# expression, evaluated by DuckDB (the same double).
HOST_GPU_VALUES_SQL = f"""
SELECT gpu_uuid, util_pct, 100.0 * mem_used_bytes / nullif(mem_total_bytes, 0) AS mem_pct,
       mem_used_bytes, mem_total_bytes, power_w, temp_c, sm_clock_mhz, ecc_sbe_total,
       ecc_dbe_total, throttle_reasons, ts AS sample_ts
FROM ({gpu_latest_live("host = $host")})
"""
_HOST_GPU_COLUMNS = (
    ("gpu_index", "lay"),
    ("gpu_uuid", "lay"),
    ("name", "lay"),
    ("pci_bus_id", "lay"),
    ("mig_mode", "lay"),
    *((c, "val") for c in ("util_pct", "mem_pct", "mem_used_bytes", "mem_total_bytes")),
    *((c, "val") for c in ("power_w", "temp_c", "sm_clock_mhz", "ecc_sbe_total")),
    ("ecc_dbe_total", "val"),
    ("throttle_reasons", "val"),
    ("tenants", "lay"),
    ("sample_ts", "val"),
    *((c, "lay") for c in ("cluster", "rack", "rack_slot", "nvlink_domain", "model")),
)


def host_layout(src: Source, host: str, at: datetime, layout_version: str) -> pa.Table:
    """`host`'s rows of the rack layout at `at` (cached: see rack_layout). Every GPU of
    a host is in the layout or none is (the layout drops a host seen after `at`)."""
    layout = rack_layout(src, at, layout_version)
    return layout.filter(pc.fill_null(pc.equal(layout.column("host"), host), False))


def host_gpus_live(
    src: Source, host: str, at: datetime, stale_s: float, layout_version: str
) -> pa.Table | None:
    """The drill-down's GPU rows of `host` from the layout and the snapshot; None when
    the layout has no row of `host` (not seen yet at `at`, or unknown: ask SQL)."""
    lay = host_layout(src, host, at, layout_version)
    if lay.num_rows == 0:
        return None
    val = run(src, HOST_GPU_VALUES_SQL, {"at": at, "stale_s": stale_s, "host": host})
    vi = pc.index_in(lay.column("gpu_uuid"), value_set=val.column("gpu_uuid"))
    cols = {}
    for name, side in _HOST_GPU_COLUMNS:
        cols[name] = lay.column(name) if side == "lay" else val.column(name).take(vi)
    # a GPU without a sample: the inventory's memory size (coalesce, as the SQL)
    cols["mem_total_bytes"] = pc.coalesce(
        cols["mem_total_bytes"], lay.column("gpu_mem_total_bytes")
    )
    return pa.table(cols)


# The drill-down's slices (HOST_SLICES_SQL) without scanning `slices`, `gpus` and
# `assignments` per refresh: the fleet's slices with their GPU's host and index and
# the tenant assigned at the cursor, read once per layout (its validity bounds
# include every assignment's start and end), then one host's rows per refresh.
SLICE_LAYOUT_SQL = """
SELECT g.host, g.gpu_index, s.slice_id, s.kind, s.profile, s.fraction, a.tenant,
       s.mem_total_bytes
FROM slices s
JOIN gpus g ON g.gpu_uuid = s.gpu_uuid
LEFT JOIN assignments a ON a.slice_id = s.slice_id
     AND a.valid_from <= $at AND (a.valid_to IS NULL OR a.valid_to > $at)
"""
# one host's slices only ($ids): its rows, not the fleet's, come back to be matched
SLICE_VALUES_SQL = (
    f"SELECT slice_id, util_pct, mem_used_bytes FROM ({SLICE_LATEST_LIVE})"
    " WHERE slice_id IN (SELECT unnest($ids::VARCHAR[]))"
)
_SLICE_ORDER = [(c, "ascending", "at_end") for c in ("gpu_index", "slice_id")]
_slice_layouts: OrderedDict[str, tuple[pa.Table, pa.Table]] = OrderedDict()


def slice_layout(src: Source, at: datetime, layout_version: str) -> pa.Table:
    """SLICE_LAYOUT_SQL at `at`, kept as long as the rack layout it was read with."""
    layout = rack_layout(src, at, layout_version)
    with _cache_lock:
        hit = _slice_layouts.get(layout_version)
    if hit is not None and hit[0] is layout:
        return hit[1]
    slices = run(src, SLICE_LAYOUT_SQL, {"at": at})
    _remember(_slice_layouts, layout_version, (layout, slices))
    return slices


def host_slices_live(
    src: Source, host: str, at: datetime, stale_s: float, layout_version: str
) -> pa.Table | None:
    """The drill-down's slice rows of `host` (HOST_SLICES_SQL's columns and order);
    None when the layout has no row of `host` (ask SQL)."""
    if host_layout(src, host, at, layout_version).num_rows == 0:
        return None
    inv = slice_layout(src, at, layout_version)
    mine = inv.filter(pc.fill_null(pc.equal(inv.column("host"), host), False))
    ids = mine.column("slice_id").drop_null().to_pylist()
    # no slices (most hosts): an empty answer of the same types, nothing scanned
    val = run(
        src,
        SLICE_VALUES_SQL if ids else f"{SLICE_VALUES_SQL} LIMIT 0",
        {"at": at, "stale_s": stale_s, "ids": ids},
    )
    vi = pc.index_in(mine.column("slice_id"), value_set=val.column("slice_id"))
    cols = {c: mine.column(c) for c in ("gpu_index", "slice_id", "kind", "profile")}
    cols |= {c: mine.column(c) for c in ("fraction", "tenant")}
    cols |= {c: val.column(c).take(vi) for c in ("util_pct", "mem_used_bytes")}
    cols["mem_total_bytes"] = mine.column("mem_total_bytes")
    return pa.table(cols).sort_by(_SLICE_ORDER)


@dataclass(frozen=True, slots=True)
class _Positions:
    """Where each layout row finds its values; kept while the layout and the
    snapshot's keys are the same."""

    layout: pa.Table
    gpu: pa.Array  # per layout row: its GPU's snapshot row (null: none)
    host: pa.Array  # per layout row: a snapshot row of its host (null: none)
    slice_row: np.ndarray  # per slice snapshot row: the layout row of its GPU (-1: none)
    gpu_rows: dict[str, int]  # gpu_uuid -> layout row
    host_index: dict[str, int]  # host -> its group in `host_order`
    host_order: np.ndarray  # layout rows grouped by host
    host_starts: np.ndarray  # where each host's group starts in host_order (and the end)

    def host_rows(self, host: str) -> np.ndarray | None:
        """The layout rows of `host` (None: not in the layout)."""
        k = self.host_index.get(host)
        if k is None:
            return None
        return self.host_order[self.host_starts[k] : self.host_starts[k + 1]]


def rack_positions(src: Source, layout: pa.Table, version: str) -> _Positions:
    key = f"{id(layout)}/{version}"
    with _cache_lock:
        hit = _positions.get(key)
    if hit is not None and hit.layout is layout:  # (an id is reused once its table is gone)
        return hit
    keys = run(src, RACK_KEYS_SQL)
    uuids, hosts = layout.column("gpu_uuid"), layout.column("host")
    # slice snapshot row -> its GPU (the `slices` inventory, as the history path) -> layout row
    inv = run(src, "SELECT slice_id, gpu_uuid FROM slices")
    slice_ids = run(src, RACK_SLICE_KEYS_SQL).column("slice_id")
    slice_gpu = inv.column("gpu_uuid").take(
        pc.index_in(slice_ids, value_set=inv.column("slice_id"))
    )
    slice_row = pc.fill_null(pc.index_in(slice_gpu, value_set=uuids), -1)
    # host -> its layout rows, grouped with numpy (no Python work per GPU)
    uniq = pc.unique(hosts)
    code = pc.index_in(hosts, value_set=uniq).to_numpy(zero_copy_only=False)
    order = np.argsort(code, kind="stable")
    # each host's rows are a slice of `order`, taken when asked (no array per host)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(code[order])) + 1, [len(order)]))
    host_index = {h: k for k, h in enumerate(uniq.to_pylist())} if len(order) else {}
    pos = _Positions(
        layout,
        pc.index_in(uuids, value_set=keys.column("gpu_uuid")),
        pc.index_in(hosts, value_set=keys.column("host")),
        slice_row.to_numpy(zero_copy_only=False).astype(np.int64),
        {u: i for i, u in enumerate(uuids.to_pylist())},
        host_index,
        order,
        starts,
    )
    _remember(_positions, key, pos)
    return pos


def _per_row(n: int, rows: list[Any], values: list[int]) -> pa.Array:
    """int64 per layout row: `values` at `rows`, 0 elsewhere."""
    out = np.zeros(n, dtype=np.int64)
    for r, v in zip(rows, values, strict=True):
        out[r] = v
    return pa.array(out)


def rack_grid_live(
    src: Source,
    at: datetime,
    stale_s: float,
    version: str,
    alerting_sql: str,
    where: str,
    filters: dict[str, str],
    *,
    firing_any_sql: str | None = None,
) -> pa.Table:
    """The rack grid from the snapshot: the same rows, columns and order as RACK_SQL.
    `firing_any_sql` counts the alerts firing at `at`: at 0 (or None: no alerts table),
    `alerting_sql` is not run (its host look-up costs a scan of the fleet)."""
    layout = rack_layout(src, at, version.split("/", 1)[0])
    pos = rack_positions(src, layout, version)
    n = layout.num_rows
    vals = run(src, RACK_VALUES_SQL)
    svals = run(src, RACK_SLICE_VALUES_SQL)
    ev = run(src, RACK_EVENTS_SQL, {"at": at})
    firing = 0 if firing_any_sql is None else run(src, firing_any_sql, {"at": at})[0][0].as_py()
    alerting = run(src, alerting_sql, {"at": at}) if firing else _NO_FIRING

    # the newest report rule (storage/views/latest.py): a row counts when its group
    # (host, or the slice's GPU) reported within (at - stale, at] and it was in that report
    low = pa.scalar(at - timedelta(seconds=stale_s), pa.timestamp("us"))
    top = pa.scalar(at, pa.timestamp("us"))

    def counts(t: pa.Table, group_ts: str) -> tuple[pa.Array, pa.Array]:
        g_ts = t.column(group_ts)
        group_in = pc.and_(pc.greater(g_ts, low), pc.less_equal(g_ts, top))
        ts = t.column("ts")
        present = pc.and_(
            pc.and_(group_in, pc.greater(ts, low)),
            pc.greater(ts, pc.subtract(g_ts, pa.scalar(_ONE_S))),
        )
        return group_in, present

    host_in, present = counts(vals, "host_ts")
    gi = pos.gpu
    vi = pc.if_else(pc.fill_null(present.take(gi), False), gi, pa.scalar(None, gi.type))
    host_seen = pc.fill_null(host_in.take(pos.host), False)

    # slices per GPU: mean utilisation and memory of the slices that count
    _, s_present = counts(svals, "gpu_ts")
    sp = np.asarray(s_present.to_numpy(zero_copy_only=False), dtype=bool) & (pos.slice_row >= 0)
    rows = pos.slice_row[sp]
    s_util = svals.column("util_pct").filter(pa.array(sp))
    s_mem = svals.column("mem_used_bytes").filter(pa.array(sp))
    u_ok = pc.is_valid(s_util).to_numpy(zero_copy_only=False)
    m_ok = pc.is_valid(s_mem).to_numpy(zero_copy_only=False)
    u_n = np.bincount(rows[u_ok], minlength=n)
    u_sum = np.bincount(
        rows[u_ok], weights=pc.drop_null(s_util).to_numpy().astype(np.float64), minlength=n
    )
    m_n = np.bincount(rows[m_ok], minlength=n)
    m_sum = np.zeros(n, dtype=np.int64)
    np.add.at(m_sum, rows[m_ok], pc.drop_null(s_mem).to_numpy().astype(np.int64))
    slice_util = pa.array(u_sum / np.maximum(u_n, 1), mask=u_n == 0)
    slice_mem = pa.array(m_sum, mask=m_n == 0)

    ev_rows = [pos.gpu_rows.get(g) for g in ev.column("gpu_uuid").to_pylist()]
    ev_keep = [i for i, r in enumerate(ev_rows) if r is not None]
    n_events = _per_row(
        n, [ev_rows[i] for i in ev_keep], [ev.column("n_events")[i].as_py() for i in ev_keep]
    )
    al_hosts = alerting.column("host").to_pylist()
    al_keep = [i for i, h in enumerate(al_hosts) if h in pos.host_index]
    host_alerts = _per_row(
        n,
        [pos.host_rows(al_hosts[i]) for i in al_keep],
        [alerting.column("firing")[i].as_py() for i in al_keep],
    )

    util = pc.coalesce(vals.column("util_pct").take(vi), slice_util)
    mem_used = pc.coalesce(vals.column("mem_used_bytes").take(vi), slice_mem)
    mem_total = pc.coalesce(
        vals.column("mem_total_bytes").take(vi), layout.column("gpu_mem_total_bytes")
    ).cast(pa.float64())
    mem_total = pc.if_else(pc.equal(mem_total, 0.0), pa.scalar(None, pa.float64()), mem_total)
    mem_pct = pc.divide(pc.multiply(mem_used.cast(pa.float64()), 100.0), mem_total)
    errors = pc.add(n_events, pc.coalesce(vals.column("ecc_dbe_total").take(vi), 0))
    sample_ts = vals.column("ts").take(vi)
    grid = pa.table(
        {
            **{c: layout.column(c) for c in _LAYOUT_HEAD},
            "util_pct": util,
            "mem_pct": mem_pct,
            **{
                c: vals.column(c).take(vi)
                for c in ("power_w", "temp_c", "sm_clock_mhz", "throttle_reasons")
            },
            "errors": errors.cast(pa.int64()),
            **{c: layout.column(c) for c in ("n_slices", "tenants", "allocated")},
            "sample_ts": sample_ts,
            "host_stale": pc.invert(host_seen),
            "gpu_missing": pc.is_null(sample_ts),
            "host_alerts": host_alerts,
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
_NO_FIRING = pa.table({"host": pa.array([], pa.string()), "firing": pa.array([], pa.int64())})
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
