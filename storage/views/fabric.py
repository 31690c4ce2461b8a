"""Fabric view: NVLink, InfiniBand, EFA and RoCE links, worst first.

Per link over a short window before the cursor: throughput, utilisation of
line rate, error rate (the `errors` column counts errors per sample interval),
whether it is down, and the tenants whose GPUs sit behind it (the GPU's own
NVLink, or every GPU of the host for a NIC).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.live import LIVE_CATALOG
from storage.live_window import LINK_NEWEST, MARKS_KEEP_S
from storage.views.latest import ASSIGNED
from storage.views.live import layout_cached, snapshot_state
from storage.views.query import Source, run
from storage.views.when import resolve_at

L = LIVE_CATALOG

# Shared by the history path and the live one (the same expressions, the same rows).
_TENANTS_BEHIND = f"""
asg AS ({ASSIGNED}),
host_tenants AS (
    SELECT g.host, array_to_string(list_sort(list_distinct(list(a.tenant))), ',') AS tenants
    FROM assignments a JOIN gpus g ON g.gpu_uuid = a.gpu_uuid
    WHERE a.valid_from <= $at AND (a.valid_to IS NULL OR a.valid_to > $at)
    GROUP BY g.host
)"""
_UTIL_PCT = (
    "100.0 * greatest(w.tx_bytes_per_s, w.rx_bytes_per_s) / nullif(w.line_rate_bytes_per_s, 0)"
)
_TENANTS = "CASE WHEN w.gpu_uuid IS NOT NULL THEN ga.tenants ELSE ht.tenants END"

_LINKS = f"""
WITH w AS (
    SELECT host, kind, port,
           any_value(gpu_uuid) AS gpu_uuid,
           arg_max(tx_bytes_per_s, ts) AS tx_bytes_per_s,
           arg_max(rx_bytes_per_s, ts) AS rx_bytes_per_s,
           arg_max(line_rate_bytes_per_s, ts) AS line_rate_bytes_per_s,
           sum(errors) / $window_s AS errors_per_s,
           arg_max(link_up, ts) AS link_up,
           count(*) FILTER (WHERE NOT link_up) AS down_samples
    FROM link_samples
    WHERE ts > $at - to_seconds($window_s) AND ts <= $at
    GROUP BY host, kind, port
),
{_TENANTS_BEHIND},
links AS (
    SELECT h.rack, w.host, h.nvlink_domain, w.kind, w.port, w.gpu_uuid,
           w.tx_bytes_per_s, w.rx_bytes_per_s, w.line_rate_bytes_per_s,
           {_UTIL_PCT} AS util_pct,
           w.errors_per_s, w.link_up, w.down_samples,
           {_TENANTS} AS tenants
    FROM w
    LEFT JOIN hosts h ON h.host = w.host
    LEFT JOIN asg ga ON ga.gpu_uuid = w.gpu_uuid
    LEFT JOIN host_tenants ht ON ht.host = w.host
)
"""

# Every link at the cursor (one scan of the window); the view orders and sums it.
ALL_LINKS_SQL = _LINKS + "SELECT * FROM links"

# Over the links table above (run locally on its Arrow result): worst first:
# down, then erroring, then hottest.
WORST_LINKS_SQL = """
SELECT * FROM links
WHERE ($kind = '' OR kind = $kind)
ORDER BY link_up, errors_per_s DESC, util_pct DESC NULLS LAST, host, port
LIMIT $limit
"""

RACKS_SQL = """
SELECT rack, any_value(nvlink_domain) FILTER (WHERE kind = 'nvlink') AS nvlink_domain,
       count(*) AS links,
       count(*) FILTER (WHERE NOT link_up) AS links_down,
       sum(errors_per_s) AS errors_per_s,
       avg(util_pct) FILTER (WHERE kind = 'nvlink') AS nvlink_util_pct,
       avg(util_pct) FILTER (WHERE kind <> 'nvlink') AS net_util_pct,
       max(util_pct) AS max_util_pct,
       sum(tx_bytes_per_s + rx_bytes_per_s) AS bytes_per_s
FROM links GROUP BY rack
ORDER BY links_down DESC, errors_per_s DESC, max_util_pct DESC NULLS LAST, rack NULLS LAST
LIMIT $limit
"""

# -- live path: the writer's per-link state (storage/live_window.py) ---------------
# Per link in the snapshot's row order: the newest non-NULL value of each column and
# its time; a window keeps a value whose time is inside it.
LINK_VALUES_LIVE_SQL = f"""
SELECT ts, errors_ts, gpu_uuid_ts,
       {", ".join(f"{c}, {c}_ts" for c in LINK_NEWEST if c != "gpu_uuid")}
FROM {L}.link_latest
"""
# The window's error sum and down samples: only rows with errors or down are kept.
LINK_MARKS_LIVE_SQL = f"""
SELECT row, sum(errors) AS errors, count(*) FILTER (WHERE down) AS down_samples
FROM {L}.link_marks WHERE ts > $at - to_seconds($window_s) AND ts <= $at GROUP BY row
"""
# What a link's row joins (rack, domain, tenants of its GPU and of its host): read
# again only when the layout, the links or the assignments in force changed.
LINK_LAYOUT_LIVE_SQL = f"""
WITH {_TENANTS_BEHIND.strip()}
SELECT w.host, w.kind, w.port, w.gpu_uuid, h.rack, h.nvlink_domain,
       ga.tenants AS gpu_tenants, ht.tenants AS host_tenants
FROM {L}.link_keys w
LEFT JOIN hosts h ON h.host = w.host
LEFT JOIN asg ga ON ga.gpu_uuid = w.gpu_uuid
LEFT JOIN host_tenants ht ON ht.host = w.host
ORDER BY w.row
"""
_link_layouts: OrderedDict[str, tuple[datetime | None, datetime | None, pa.Table]] = OrderedDict()


def _link_layout(src: Source, at: datetime, version: str) -> pa.Table:
    compute = lambda: run(src, LINK_LAYOUT_LIVE_SQL, {"at": at})  # noqa: E731
    return layout_cached(src, at, _link_layouts, version, compute, kept=1)[0]


def links_live(src: Source, at: datetime, window_s: float) -> pa.Table | None:
    """Every link at the cursor from the writer's state: ALL_LINKS_SQL's rows and
    columns; None where the state does not cover the window (read history)."""
    if window_s > MARKS_KEEP_S:
        return None
    version = snapshot_state(src, at, window_s, "link_samples")
    if version is None:
        return None
    layout = _link_layout(src, at, version)
    vals = run(src, LINK_VALUES_LIVE_SQL)
    marks = run(src, LINK_MARKS_LIVE_SQL, {"at": at, "window_s": window_s})
    if vals.num_rows != layout.num_rows:  # published in between: the next refresh
        return None
    edge = pa.scalar(at - timedelta(seconds=window_s), pa.timestamp("us"))

    def inside(c: str) -> pa.ChunkedArray:
        return pc.fill_null(pc.greater(vals.column(c), edge), False)

    present = inside("ts")
    n = vals.num_rows
    row = marks.column("row").to_numpy(zero_copy_only=False)
    err = np.zeros(n, dtype=np.int64)
    down = np.zeros(n, dtype=np.int64)
    err[row] = pc.fill_null(marks.column("errors"), 0).to_numpy(zero_copy_only=False)
    down[row] = marks.column("down_samples").to_numpy(zero_copy_only=False)
    errors_per_s = pc.if_else(
        inside("errors_ts"), pa.array(err / window_s), pa.scalar(None, pa.float64())
    )

    def windowed(c: str, values: pa.Table) -> pa.ChunkedArray:
        v = values.column(c)
        return pc.if_else(inside(f"{c}_ts"), v, pa.scalar(None, v.type))

    gpu_uuid = windowed("gpu_uuid", layout.append_column("gpu_uuid_ts", vals["gpu_uuid_ts"]))
    tx, rx = windowed("tx_bytes_per_s", vals), windowed("rx_bytes_per_s", vals)
    line = windowed("line_rate_bytes_per_s", vals)
    # the history path's expressions (_UTIL_PCT, _TENANTS), the same IEEE operations
    util = pc.divide(
        pc.multiply(pc.max_element_wise(tx, rx, skip_nulls=True), 100.0),
        pc.if_else(pc.equal(line, 0.0), pa.scalar(None, pa.float64()), line),
    )
    tenants = pc.if_else(
        pc.is_valid(gpu_uuid), layout.column("gpu_tenants"), layout.column("host_tenants")
    )
    links = pa.table(
        {
            "rack": layout.column("rack"),
            "host": layout.column("host"),
            "nvlink_domain": layout.column("nvlink_domain"),
            "kind": layout.column("kind"),
            "port": layout.column("port"),
            "gpu_uuid": gpu_uuid,
            "tx_bytes_per_s": tx,
            "rx_bytes_per_s": rx,
            "line_rate_bytes_per_s": line,
            "util_pct": util,
            "errors_per_s": errors_per_s,
            "link_up": windowed("link_up", vals),
            "down_samples": pa.array(down),
            "tenants": tenants,
        }
    )
    return links if pc.all(present).as_py() else links.filter(present)


_local = threading.local()


def _local_con() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB, for SQL over a view's Arrow result."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
    return con


@dataclass(frozen=True, slots=True)
class Fabric:
    racks: pa.Table  # per rack, worst first
    links: pa.Table  # links, worst first
    links_total: int
    links_down: int


def fabric(
    src: Source,
    at: datetime | None = None,
    *,
    kind: str = "",
    window_s: float = 30.0,
    limit: int = 500,
    rack_limit: int = 1000,
    live: bool = True,
) -> Fabric:
    """Links worst first and per-rack health, one row per link: from the writer's
    per-link state where it covers the window (`storage/live_window.py`), else from
    one scan of the link samples (`live=False`: always).

    The scan and joins run on the store (or the daemon); ordering and the rack
    sums run in a local DuckDB over the Arrow result (one row per link).
    """
    at = resolve_at(at)
    links = links_live(src, at, window_s) if live else None
    if links is not None:
        return _fabric_local(links, kind, limit, rack_limit)
    links = run(src, ALL_LINKS_SQL, {"at": at, "window_s": window_s})
    con = _local_con()
    con.register("links", links)
    try:
        worst = con.execute(WORST_LINKS_SQL, {"kind": kind, "limit": limit}).to_arrow_table()
        racks = con.execute(RACKS_SQL, {"limit": rack_limit}).to_arrow_table()
        row = con.execute("SELECT count(*) FILTER (WHERE NOT link_up) FROM links").fetchone()
        down = row[0] if row else 0
    finally:
        con.unregister("links")
    return Fabric(racks, worst, links.num_rows, int(down or 0))


# WORST_LINKS_SQL's order (DuckDB: NULLS LAST either way, as Arrow's select_k and sort)
_WORST_ORDER = [
    ("link_up", "ascending"),
    ("errors_per_s", "descending"),
    ("util_pct", "descending"),
    ("host", "ascending"),
    ("port", "ascending"),
]
_RACKS_ORDER_SQL = """
SELECT * FROM r
ORDER BY links_down DESC, errors_per_s DESC, max_util_pct DESC NULLS LAST, rack NULLS LAST
LIMIT $limit
"""


def _fabric_local(links: pa.Table, kind: str, limit: int, rack_limit: int) -> Fabric:
    """WORST_LINKS_SQL and RACKS_SQL over the live path's links, in Arrow and numpy
    (DuckDB over 180,000 links with their strings cost 40 ms each at 100k GPUs)."""
    pick = links if not kind else links.filter(pc.equal(links.column("kind"), kind))
    if limit > 0 and pick.num_rows:
        top = pick.take(pc.select_k_unstable(pick, min(limit, pick.num_rows), _WORST_ORDER))
        order = [(c, o, "at_end") for c, o in _WORST_ORDER]
        worst = top.take(pc.sort_indices(top, sort_keys=order))
    else:
        worst = pick.slice(0, 0)
    up = links.column("link_up")
    down = pc.sum(pc.equal(up, False)).as_py() or 0
    return Fabric(_racks_local(links, rack_limit), worst, links.num_rows, int(down))


def _racks_local(links: pa.Table, limit: int) -> pa.Table:
    """RACKS_SQL: per rack, from numpy sums over the links' rack codes."""
    enc = pc.dictionary_encode(links.column("rack"), null_encoding="encode")
    enc = enc.combine_chunks() if isinstance(enc, pa.ChunkedArray) else enc
    code = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    m = len(enc.dictionary)

    def f64(c: str) -> tuple[np.ndarray, np.ndarray]:
        a = links.column(c)
        return (
            pc.fill_null(a, 0).to_numpy(zero_copy_only=False).astype(np.float64),
            pc.is_valid(a).to_numpy(zero_copy_only=False),
        )

    def summed(v: np.ndarray, ok: np.ndarray, mean: bool = False) -> pa.Array:
        n = np.bincount(code[ok], minlength=m)
        total = np.bincount(code[ok], weights=v[ok], minlength=m)
        out = total / np.maximum(n, 1) if mean else total
        return pa.array(out.astype(np.float64), mask=n == 0)

    nvlink = pc.equal(links.column("kind"), "nvlink").to_numpy(zero_copy_only=False)
    util, util_ok = f64("util_pct")
    err, err_ok = f64("errors_per_s")
    tx, tx_ok = f64("tx_bytes_per_s")
    rx, rx_ok = f64("rx_bytes_per_s")
    top = np.full(m, -np.inf)
    np.maximum.at(top, code[util_ok], util[util_ok])
    has_top = np.bincount(code[util_ok], minlength=m) > 0
    # any_value(nvlink_domain) FILTER (kind = 'nvlink'): the first in the links' order
    dom = links.column("nvlink_domain")
    dom_ok = nvlink & pc.is_valid(dom).to_numpy(zero_copy_only=False)
    idx = np.flatnonzero(dom_ok)
    first_code, first_at = np.unique(code[idx], return_index=True)
    dom_row = np.full(m, -1)
    dom_row[first_code] = idx[first_at]
    domain = dom.take(pa.array(np.maximum(dom_row, 0)))
    domain = pc.if_else(pa.array(dom_row >= 0), domain, pa.scalar(None, dom.type))
    down = pc.fill_null(pc.equal(links.column("link_up"), False), False)
    r = pa.table(
        {
            "rack": enc.dictionary,
            "nvlink_domain": domain,
            "links": pa.array(np.bincount(code, minlength=m)),
            "links_down": pa.array(
                np.bincount(code, weights=down.to_numpy(zero_copy_only=False), minlength=m)
            ).cast(pa.int64()),
            "errors_per_s": summed(err, err_ok),
            "nvlink_util_pct": summed(util, util_ok & nvlink, mean=True),
            "net_util_pct": summed(util, util_ok & ~nvlink, mean=True),
            "max_util_pct": pa.array(top, mask=~has_top),
            "bytes_per_s": summed(tx + rx, tx_ok & rx_ok),
        }
    ).filter(pa.array(np.bincount(code, minlength=m) > 0))
    con = _local_con()
    con.register("r", r)
    try:
        return con.execute(_RACKS_ORDER_SQL, {"limit": limit}).to_arrow_table()
    finally:
        con.unregister("r")


def fabric_links(
    src: Source,
    at: datetime | None = None,
    *,
    kind: str = "",
    window_s: float = 30.0,
    limit: int = 500,
) -> pa.Table:
    """Links worst first (down, erroring, hottest); at most `limit` rows."""
    return fabric(src, at, kind=kind, window_s=window_s, limit=limit).links


def fabric_racks(src: Source, at: datetime | None = None, *, window_s: float = 30.0) -> pa.Table:
    """Per rack: links, links down, error rate, NVLink and network utilisation."""
    return fabric(src, at, window_s=window_s, limit=0).racks
