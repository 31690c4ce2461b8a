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
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.live import LIVE_CATALOG
from storage.live_window import LINK_NEWEST, MARKS_KEEP_S
from storage.views.arrow_np import bools, f64
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
# Per link in the snapshot's row order: the newest non-NULL value of each column
# where its time is inside the window `(at - window_s, at]` (NULL outside); masked
# here, in one pass, not column by column in Arrow. _UTIL_PCT over those values is
# `util_pct` below (numpy: a column fewer to convert from DuckDB, ~3 ms at 100k).
_EDGE = "$at - to_seconds($window_s)"
_LINK_VALUES = ", ".join(
    f"CASE WHEN {c}_ts > {_EDGE} THEN {c} END AS {c}" for c in LINK_NEWEST if c != "gpu_uuid"
)
LINK_VALUES_LIVE_SQL = f"""
SELECT coalesce(ts > {_EDGE}, false) AS present,
       coalesce(errors_ts > {_EDGE}, false) AS errors_in,
       coalesce(gpu_uuid_ts > {_EDGE}, false) AS gpu_uuid_in,
       {_LINK_VALUES}
FROM {L}.link_latest
"""


def util_pct(tx: pa.ChunkedArray, rx: pa.ChunkedArray, line_rate: pa.ChunkedArray) -> pa.Array:
    """_UTIL_PCT, bit for bit as DuckDB computes it (`_util_np`), as an Arrow array."""
    out, ok = _util_np(*f64(tx), *f64(rx), *f64(line_rate))
    return pa.array(out, mask=~ok)


def _util_np(
    a: np.ndarray,
    a_ok: np.ndarray,
    b: np.ndarray,
    b_ok: np.ndarray,
    line: np.ndarray,
    line_ok: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """_UTIL_PCT over tx (a), rx (b) and the line rate with their validity: `greatest`
    skips a NULL, takes NaN above every number and the first of equal values (0.0 and
    -0.0), then `100.0 * g / nullif(line_rate, 0)` (NULL where either side is). The
    values and where they are valid (elsewhere anything)."""
    with np.errstate(all="ignore"):
        if a_ok.all() and b_ok.all():  # every rate known (nearly always): 4 passes fewer
            g = np.where((b > a) | np.isnan(b), b, a)
            ok = line_ok & (line != 0)
        else:
            g = np.where(a_ok & b_ok, np.where((b > a) | np.isnan(b), b, a), np.where(a_ok, a, b))
            ok = (a_ok | b_ok) & line_ok & (line != 0)
        return 100.0 * g / (line if ok.all() else np.where(ok, line, 1.0)), ok


# The window's error sum and down samples: only rows with errors or down are kept.
LINK_MARKS_LIVE_SQL = f"""
SELECT row, sum(errors) AS errors, count(*) FILTER (WHERE down) AS down_samples
FROM {L}.link_marks WHERE ts > {_EDGE} AND ts <= $at GROUP BY row
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


@dataclass(frozen=True, slots=True)
class RackCodes:
    """Per link row of a layout: its rack's code (into `racks`) and whether it is an
    NVLink; per rack the row of its first NVLink with a domain (-1: none). Computed
    once per link layout: the rack sums then need no string work per refresh."""

    code: np.ndarray  # int64 per link
    racks: pa.Array  # rack per code (NULL: unplaced)
    nvlink: np.ndarray  # bool per link
    domain_row: np.ndarray  # int64 per rack
    by_rack: np.ndarray  # the links' rows ordered by rack code
    starts: np.ndarray  # where each rack with links starts in by_rack
    split: np.ndarray  # per link 2 * code + nvlink: a rack's NVLinks and other links apart
    links: np.ndarray  # int64 per rack: its links
    nvlinks: np.ndarray  # int64 per rack: its NVLinks


def rack_codes(links: pa.Table) -> RackCodes:
    enc = pc.dictionary_encode(links.column("rack"), null_encoding="encode")
    enc = enc.combine_chunks() if isinstance(enc, pa.ChunkedArray) else enc
    code = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    m = len(enc.dictionary)
    nvlink = pc.equal(links.column("kind"), "nvlink").to_numpy(zero_copy_only=False)
    by_rack = np.argsort(code, kind="stable")
    starts = np.flatnonzero(np.diff(code[by_rack], prepend=-1))
    split = 2 * code + nvlink
    return RackCodes(
        code,
        enc.dictionary,
        nvlink,
        _domain_rows(links, code, nvlink, m),
        by_rack,
        starts,
        split,
        np.bincount(code, minlength=m).astype(np.int64),
        np.bincount(code, weights=nvlink, minlength=m).astype(np.int64),
    )


def _domain_rows(links: pa.Table, code: np.ndarray, nvlink: np.ndarray, m: int) -> np.ndarray:
    """any_value(nvlink_domain) FILTER (kind = 'nvlink') per rack: the first in the
    links' order."""
    dom_ok = nvlink & pc.is_valid(links.column("nvlink_domain")).to_numpy(zero_copy_only=False)
    idx = np.flatnonzero(dom_ok)
    first_code, first_at = np.unique(code[idx], return_index=True)
    dom_row = np.full(m, -1)
    dom_row[first_code] = idx[first_at]
    return dom_row


_codes_kept: list[tuple[pa.Table, RackCodes]] = []  # the newest layout's (one)
_codes_lock = threading.Lock()


def _layout_codes(layout: pa.Table) -> RackCodes:
    with _codes_lock:
        for kept, codes in _codes_kept:
            if kept is layout:
                return codes
    codes = rack_codes(layout)
    with _codes_lock:
        _codes_kept[:] = [(layout, codes)]
    return codes


def _link_layout(src: Source, at: datetime, version: str) -> pa.Table:
    compute = lambda: run(src, LINK_LAYOUT_LIVE_SQL, {"at": at})  # noqa: E731
    return layout_cached(src, at, _link_layouts, version, compute, kept=1)[0]


def links_live(src: Source, at: datetime, window_s: float) -> pa.Table | None:
    """Every link at the cursor from the writer's state: ALL_LINKS_SQL's rows and
    columns; None where the state does not cover the window (read history)."""
    got = _links_live(src, at, window_s)
    return None if got is None else got[0]


def _links_live(
    src: Source, at: datetime, window_s: float
) -> tuple[pa.Table, RackCodes | None] | None:
    """links_live's table, with the rack codes of its rows when every link of the
    layout is in it (None otherwise)."""
    state = _link_state(src, at, window_s)
    if state is None:
        return None
    return _link_rows(state, None), state.codes if state.present is None else None


@dataclass(frozen=True, slots=True)
class _LinkState:
    """The links at the cursor from the writer's state, per row of the link layout:
    numbers only (numpy, each with where it is valid); the strings stay in the layout
    until a row is shown (`_link_rows`)."""

    layout: pa.Table  # LINK_LAYOUT_LIVE_SQL's
    codes: RackCodes  # the layout's
    vals: pa.Table  # LINK_VALUES_LIVE_SQL's
    present: np.ndarray | None  # the link has a row in the window (None: every link)
    util: np.ndarray
    util_ok: np.ndarray
    errors_per_s: np.ndarray
    errors_ok: np.ndarray
    down_samples: np.ndarray  # int64
    up: np.ndarray
    up_ok: np.ndarray
    gpu_in: np.ndarray  # the link's GPU was reported in the window
    bytes_per_s: np.ndarray  # tx + rx
    bytes_ok: np.ndarray


def _link_state(src: Source, at: datetime, window_s: float) -> _LinkState | None:
    if window_s > MARKS_KEEP_S:
        return None
    version = snapshot_state(src, at, window_s, "link_samples")
    if version is None:
        return None
    layout = _link_layout(src, at, version)
    params = {"at": at, "window_s": window_s}
    vals = run(src, LINK_VALUES_LIVE_SQL, params)
    marks = run(src, LINK_MARKS_LIVE_SQL, params)
    if vals.num_rows != layout.num_rows:  # published in between: the next refresh
        return None
    n = vals.num_rows
    row = marks.column("row").to_numpy(zero_copy_only=False)
    err = np.zeros(n, dtype=np.int64)
    down = np.zeros(n, dtype=np.int64)
    err[row] = pc.fill_null(marks.column("errors"), 0).to_numpy(zero_copy_only=False)
    down[row] = marks.column("down_samples").to_numpy(zero_copy_only=False)
    present = bools(vals.column("present"))[0]  # coalesced: never NULL
    tx, tx_ok = f64(vals.column("tx_bytes_per_s"))
    rx, rx_ok = f64(vals.column("rx_bytes_per_s"))
    util, util_ok = _util_np(tx, tx_ok, rx, rx_ok, *f64(vals.column("line_rate_bytes_per_s")))
    up, up_ok = bools(vals.column("link_up"))
    with np.errstate(all="ignore"):  # anything under a NULL
        both = tx + rx
    return _LinkState(
        layout,
        _layout_codes(layout),
        vals,
        None if present.all() else present,
        util,
        util_ok,
        err / window_s,
        bools(vals.column("errors_in"))[0],
        down,
        up,
        up_ok,
        bools(vals.column("gpu_uuid_in"))[0],
        both,
        tx_ok & rx_ok,
    )


def _link_rows(s: _LinkState, rows: np.ndarray | None) -> pa.Table:
    """ALL_LINKS_SQL's columns for the layout's `rows` (None: every link present), in
    that order: the strings taken only for these."""
    if rows is None:
        rows = np.arange(s.layout.num_rows) if s.present is None else np.flatnonzero(s.present)
    whole = len(rows) == s.layout.num_rows
    take = pa.array(rows, pa.int64())

    def pick(a: pa.ChunkedArray) -> pa.ChunkedArray:
        return a if whole else a.take(take)

    gpu = pick(s.layout.column("gpu_uuid"))
    gpu_uuid = pc.if_else(pa.array(s.gpu_in[rows]), gpu, pa.scalar(None, gpu.type))
    # the history path's _TENANTS
    tenants = pc.if_else(
        pc.is_valid(gpu_uuid),
        pick(s.layout.column("gpu_tenants")),
        pick(s.layout.column("host_tenants")),
    )
    return pa.table(
        {
            "rack": pick(s.layout.column("rack")),
            "host": pick(s.layout.column("host")),
            "nvlink_domain": pick(s.layout.column("nvlink_domain")),
            "kind": pick(s.layout.column("kind")),
            "port": pick(s.layout.column("port")),
            "gpu_uuid": gpu_uuid,
            "tx_bytes_per_s": pick(s.vals.column("tx_bytes_per_s")),
            "rx_bytes_per_s": pick(s.vals.column("rx_bytes_per_s")),
            "line_rate_bytes_per_s": pick(s.vals.column("line_rate_bytes_per_s")),
            "util_pct": pa.array(s.util[rows], mask=~s.util_ok[rows]),
            "errors_per_s": pa.array(s.errors_per_s[rows], mask=~s.errors_ok[rows]),
            "link_up": pick(s.vals.column("link_up")),
            "down_samples": pa.array(s.down_samples[rows]),
            "tenants": tenants,
        }
    )


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
    state = _link_state(src, at, window_s) if live else None
    if state is not None:
        return _fabric_live(state, kind, limit, rack_limit)
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
    ("util_nan", "descending"),  # DuckDB: NaN above every number (Arrow: below)
    ("util_pct", "descending"),
    ("host", "ascending"),
    ("port", "ascending"),
]
# RACKS_SQL's order: DuckDB puts NULLs last either way (as Arrow does, at_end) and
# NaN above every number (Arrow: after them), hence the is_nan keys first
_RACKS_ORDER = [
    ("links_down", "descending", "at_end"),
    ("errors_nan", "descending", "at_end"),
    ("errors_per_s", "descending", "at_end"),
    ("max_nan", "descending", "at_end"),
    ("max_util_pct", "descending", "at_end"),
    ("rack", "ascending", "at_end"),
]


def _fabric_live(s: _LinkState, kind: str, limit: int, rack_limit: int) -> Fabric:
    """WORST_LINKS_SQL and RACKS_SQL over the live path's links, in numpy and Arrow
    (DuckDB over 180,000 links with their strings cost 40 ms each at 100k GPUs): the
    worst links' candidates picked in numpy, only those rows built as a table."""
    present = s.present
    pick = present
    if kind:
        is_kind = _kind_rows(s.layout, kind)
        pick = is_kind if pick is None else pick & is_kind
    worst = _worst(_link_rows(s, _worst_rows(s, pick, limit)), limit)
    down = s.up_ok & ~s.up
    if present is not None:
        down &= present
    total = s.layout.num_rows if present is None else int(present.sum())
    return Fabric(_racks_live(s, rack_limit), worst, total, int(down.sum()))


def _kind_rows(layout: pa.Table, kind: str) -> np.ndarray:
    return pc.fill_null(pc.equal(layout.column("kind"), kind), False).to_numpy(zero_copy_only=False)


def _worst_rows(s: _LinkState, pick: np.ndarray | None, k: int) -> np.ndarray:
    """The rows of `pick` (None: all) that can be among the `k` worst by _WORST_ORDER,
    in the layout's order, from the numbers alone; fewer where that is cheap to know.
    Links up with no errors (nearly all) order among themselves by utilisation, then
    host and port: of those, only the ones whose utilisation key is at least their
    k-th largest can be in the top k (at least k of them rank strictly above any
    other). Every other link (down, erring, errors unknown) stays."""
    rows = np.arange(s.layout.num_rows) if pick is None else np.flatnonzero(pick)
    if k <= 0:
        return rows[:0]
    if rows.size <= 4 * k:
        return rows
    quiet = s.up_ok & s.up & s.errors_ok & (s.errors_per_s == 0)
    if pick is not None:
        quiet = quiet[rows]
    if int(quiet.sum()) <= k:
        return rows
    # one number per link in the order of (util_nan desc, util_pct desc, NULLs last):
    # NaN above every number, NULL below (ties kept: >= below)
    key = np.where(s.util_ok, s.util, -np.inf)
    if pick is not None:
        key = key[rows]
    key[np.isnan(key)] = np.inf
    quiet_key = key[quiet]
    at = quiet_key.size - k
    kth = np.partition(quiet_key, at)[at]
    keep = ~quiet
    keep |= key >= kth
    return rows[keep]


def _worst(links: pa.Table, limit: int) -> pa.Table:
    """WORST_LINKS_SQL's rows: the `limit` worst links in _WORST_ORDER (of the
    candidates `_worst_rows` kept: Arrow's select_k over six keys costs ~13 ms at
    182k links)."""
    if limit <= 0 or not links.num_rows:
        return links.slice(0, 0)
    keys = links.append_column("util_nan", pc.is_nan(links.column("util_pct")))
    top = keys.take(pc.select_k_unstable(keys, min(limit, links.num_rows), _WORST_ORDER))
    order = [(c, o, "at_end") for c, o in _WORST_ORDER]
    return top.take(pc.sort_indices(top, sort_keys=order)).drop_columns(["util_nan"])


def _racks_live(s: _LinkState, limit: int) -> pa.Table:
    """RACKS_SQL: per rack, from numpy sums over the layout's rack codes. A value the
    aggregate skips (NULL, a link not in the window, or not an NVLink for the NVLink
    mean) weighs 0 in the sums and counts 0: adding 0.0 leaves a sum as it was. Counts
    that are the layout's (every value known: the usual case) are not counted again,
    and the NVLink and other means are summed in one pass (`RackCodes.split`)."""
    codes, present = s.codes, s.present
    code, m = codes.code, len(codes.racks)

    def only(ok: np.ndarray) -> np.ndarray:
        return ok if present is None else ok & present

    def count(ok: np.ndarray, per_rack: np.ndarray) -> np.ndarray:
        """How many links of each rack are `ok`; `per_rack` where all are."""
        if present is None and ok.all():
            return per_rack
        return np.bincount(code, weights=ok, minlength=m).astype(np.int64)

    def total(v: np.ndarray, ok: np.ndarray, bins: np.ndarray, n: int) -> np.ndarray:
        return np.bincount(bins, weights=np.where(ok, v, 0.0), minlength=n)

    def masked(out: np.ndarray, n: np.ndarray) -> pa.Array:
        return pa.array(out.astype(np.float64), mask=n == 0)

    n_links = codes.links if present is None else count(present, codes.links)
    util_ok = only(s.util_ok)
    # NVLink and other links' utilisation per rack: bins 2 * code + nvlink
    util_sum = total(s.util, util_ok, codes.split, 2 * m).reshape(m, 2)
    if present is None and util_ok.all():
        n_nv, n_net = codes.nvlinks, codes.links - codes.nvlinks
    else:
        n_split = np.bincount(codes.split, weights=util_ok, minlength=2 * m).astype(np.int64)
        n_nv, n_net = n_split[1::2], n_split[0::2]
    # max per rack: over the links sorted by rack, one reduceat
    by_rack, starts = codes.by_rack, codes.starts
    top = np.full(m, -np.inf)
    if len(by_rack):
        top[code[by_rack[starts]]] = np.maximum.reduceat(
            np.where(util_ok, s.util, -np.inf)[by_rack], starts
        )
    err_ok = only(s.errors_ok)
    n_err = count(err_ok, codes.links)
    err_sum = (
        total(s.errors_per_s, err_ok, code, m)
        if s.errors_per_s.any()
        else np.zeros(m)  # no errors anywhere: every sum 0.0
    )
    down = only(s.up_ok & ~s.up)
    bytes_ok = only(s.bytes_ok)
    dom = s.layout.column("nvlink_domain")
    dom_row = codes.domain_row
    if present is not None:  # the first NVLink with a domain among those present
        dom_row = _domain_rows(s.layout, code, codes.nvlink & present, m)
    domain = dom.take(pa.array(np.maximum(dom_row, 0)))
    domain = pc.if_else(pa.array(dom_row >= 0), domain, pa.scalar(None, dom.type))
    with np.errstate(all="ignore"):
        r = pa.table(
            {
                "rack": codes.racks,
                "nvlink_domain": domain,
                "links": pa.array(n_links),
                "links_down": pa.array(
                    count(down, codes.links) if down.any() else np.zeros(m, np.int64)
                ),
                "errors_per_s": masked(err_sum, n_err),
                "nvlink_util_pct": masked(util_sum[:, 1] / np.maximum(n_nv, 1), n_nv),
                "net_util_pct": masked(util_sum[:, 0] / np.maximum(n_net, 1), n_net),
                "max_util_pct": pa.array(top, mask=n_nv + n_net == 0),
                "bytes_per_s": masked(
                    total(s.bytes_per_s, bytes_ok, code, m), count(bytes_ok, codes.links)
                ),
            }
        ).filter(pa.array(n_links > 0))
    keys = r.append_column("errors_nan", pc.is_nan(r.column("errors_per_s"))).append_column(
        "max_nan", pc.is_nan(r.column("max_util_pct"))
    )
    order = pc.sort_indices(keys, sort_keys=_RACKS_ORDER)
    return r.take(order.slice(0, max(limit, 0)))


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
