"""Fabric view: NVLink, InfiniBand, EFA and RoCE links, worst first.

Per link over a short window before the cursor: throughput, utilisation of
line rate, error rate (the `errors` column counts errors per sample interval),
whether it is down, and the tenants whose GPUs sit behind it (the GPU's own
NVLink, or every GPU of the host for a NIC).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

from storage.views.latest import ASSIGNED
from storage.views.query import Source, run
from storage.views.when import resolve_at

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
asg AS ({ASSIGNED}),
host_tenants AS (
    SELECT g.host, array_to_string(list_sort(list_distinct(list(a.tenant))), ',') AS tenants
    FROM assignments a JOIN gpus g ON g.gpu_uuid = a.gpu_uuid
    WHERE a.valid_from <= $at AND (a.valid_to IS NULL OR a.valid_to > $at)
    GROUP BY g.host
),
links AS (
    SELECT h.rack, w.host, h.nvlink_domain, w.kind, w.port, w.gpu_uuid,
           w.tx_bytes_per_s, w.rx_bytes_per_s, w.line_rate_bytes_per_s,
           100.0 * greatest(w.tx_bytes_per_s, w.rx_bytes_per_s)
               / nullif(w.line_rate_bytes_per_s, 0) AS util_pct,
           w.errors_per_s, w.link_up, w.down_samples,
           CASE WHEN w.gpu_uuid IS NOT NULL THEN ga.tenants ELSE ht.tenants END AS tenants
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
) -> Fabric:
    """Links worst first and per-rack health from one scan of the link samples.

    The scan and joins run on the store (or the daemon); ordering and the rack
    sums run in a local DuckDB over the Arrow result (one row per link).
    """
    links = run(src, ALL_LINKS_SQL, {"at": resolve_at(at), "window_s": window_s})
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
