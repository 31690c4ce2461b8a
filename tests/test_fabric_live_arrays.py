"""The fabric's live path from numbers (`storage/views/fabric.py` `_fabric_live`:
the links' values as numpy arrays read from the Arrow buffers, the worst links'
candidates picked before any string is taken, the rack sums from the layout's
counts) gives the rows of WORST_LINKS_SQL and RACKS_SQL over the same links: with
ties, NaN, infinities and NULLs whose buffers hold misleading values (a NULL
`link_up` over a true or false bit, a NULL utilisation over 1e9), links missing from the
window, and the link kind filter."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from storage.views.arrow_np import bools, f64
from storage.views.fabric import (
    RACKS_SQL,
    WORST_LINKS_SQL,
    _fabric_live,
    _LinkState,
    _worst_rows,
    rack_codes,
)


def _links(rng: np.random.Generator, n: int, quiet_share: float) -> pa.Table:
    util = rng.choice([0.0, 12.5, 50.0, 99.0, 100.0], n) + np.where(
        rng.random(n) < 0.5, 0.0, rng.random(n)
    )
    special = rng.random(n)
    util = np.where(special < 0.03, np.nan, util)
    util = np.where((special >= 0.03) & (special < 0.04), np.inf, util)
    util = np.where((special >= 0.04) & (special < 0.05), -np.inf, util)  # ties NULL's key
    util_null = (special >= 0.05) & (special < 0.08)
    util = np.where(util_null, 1e9, util)  # under a NULL: would rank first if read
    noisy = rng.random(n) > quiet_share
    errors = np.where(noisy, rng.choice([0.0, 0.1, 2.0], n), 0.0)
    errors_null = noisy & (rng.random(n) < 0.3)
    up_null = rng.random(n) < 0.05
    up = np.where(noisy, rng.random(n) < 0.7, True)
    up = np.where(up_null, rng.random(n) < 0.5, up)  # NULL over a true or false bit
    tx = rng.random(n) * 1e9
    rx_null = rng.random(n) < 0.05
    kind = rng.choice(["nvlink", "ib"], n)
    rack = np.array([f"r{i // 40:03d}" for i in range(n)], dtype=object)
    rack[rng.random(n) < 0.02] = None  # unplaced
    return pa.table(
        {
            "rack": pa.array(rack, pa.string()),
            "host": pa.array([f"h{i % 37:02d}" for i in range(n)]),
            "nvlink_domain": pa.array(
                [None if k != "nvlink" or i % 7 == 0 else f"d{i // 10}" for i, k in enumerate(kind)]
            ),
            "kind": pa.array(kind),
            "port": pa.array([f"p{i:05d}" for i in range(n)]),  # unique (host, port)
            "gpu_uuid": pa.array([None] * n, pa.string()),
            "tx_bytes_per_s": pa.array(tx),
            "rx_bytes_per_s": pa.array(tx / 2, mask=rx_null),
            "line_rate_bytes_per_s": pa.array(np.full(n, 2e9)),
            "util_pct": pa.array(util, mask=util_null),
            "errors_per_s": pa.array(errors, mask=errors_null),
            "link_up": pa.array(up, mask=up_null),
            "down_samples": pa.array(np.zeros(n, dtype=np.int64)),
            "tenants": pa.array([f"t{i % 3}" for i in range(n)]),
        }
    )


def _state(links: pa.Table, present: np.ndarray | None) -> _LinkState:
    layout = links.select(["host", "kind", "port", "gpu_uuid", "rack", "nvlink_domain"])
    layout = layout.append_column("gpu_tenants", links.column("tenants"))
    layout = layout.append_column("host_tenants", links.column("tenants"))
    n = links.num_rows
    util, util_ok = f64(links.column("util_pct"))
    err, err_ok = f64(links.column("errors_per_s"))
    up, up_ok = bools(links.column("link_up"))
    tx, tx_ok = f64(links.column("tx_bytes_per_s"))
    rx, rx_ok = f64(links.column("rx_bytes_per_s"))
    return _LinkState(
        layout,
        rack_codes(layout),
        links.select(["tx_bytes_per_s", "rx_bytes_per_s", "line_rate_bytes_per_s", "link_up"]),
        present,
        util,
        util_ok,
        err,
        err_ok,
        np.zeros(n, dtype=np.int64),
        up,
        up_ok,
        np.zeros(n, dtype=np.bool_),
        tx + rx,
        tx_ok & rx_ok,
    )


def _nan(rows: list[dict]) -> list[dict]:
    return [{k: "NaN" if v != v else v for k, v in r.items()} for r in rows]


def _approx(rows: list[dict]) -> list[dict]:
    return [
        {k: pytest.approx(v, rel=1e-9) if isinstance(v, float) else v for k, v in r.items()}
        for r in _nan(rows)
    ]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("quiet_share", [1.0, 0.98, 0.5])
@pytest.mark.parametrize("missing", [False, True])
def test_live_arrays_give_the_sql_rows(seed: int, quiet_share: float, missing: bool) -> None:
    rng = np.random.default_rng(seed)
    links = _links(rng, 3000, quiet_share)
    present = rng.random(links.num_rows) > 0.1 if missing else None
    s = _state(links, present)
    shown = links if present is None else links.filter(pa.array(present))
    con = duckdb.connect()
    con.register("links", shown)
    want_racks = con.execute(RACKS_SQL, {"limit": 1000}).to_arrow_table()
    for kind, limit in (("", 60), ("", 7), ("ib", 60), ("nvlink", 500)):
        got = _fabric_live(s, kind, limit, 1000)
        want = con.execute(WORST_LINKS_SQL, {"kind": kind, "limit": limit}).to_arrow_table()
        assert got.links.schema == want.schema
        assert _nan(got.links.to_pylist()) == _nan(want.to_pylist())
        assert _approx(got.racks.to_pylist()) == _nan(want_racks.to_pylist())
        down = con.execute("SELECT count(*) FILTER (WHERE NOT link_up) FROM links").fetchone()
        assert (got.links_total, got.links_down) == (shown.num_rows, down[0])


def test_the_worst_candidates_are_fewer_where_most_links_are_quiet() -> None:
    links = _links(np.random.default_rng(7), 20_000, quiet_share=0.99)
    # utilisations as a live fleet has them: spread, few exact ties
    util = np.random.default_rng(8).random(links.num_rows) * 100.0
    links = links.set_column(links.schema.get_field_index("util_pct"), "util_pct", pa.array(util))
    s = _state(links, None)
    picked = _worst_rows(s, None, 60)
    quiet = s.up_ok & s.up & s.errors_ok & (s.errors_per_s == 0)
    # every other link stays; of the quiet ones, only the 60 busiest (no ties here)
    assert np.array_equal(picked, np.flatnonzero(~quiet | (util >= np.sort(util[quiet])[-60])))
    assert int(quiet[picked].sum()) == 60 and picked.size < links.num_rows // 10
    con = duckdb.connect()
    con.register("links", links)
    want = con.execute(WORST_LINKS_SQL, {"kind": "", "limit": 60}).to_arrow_table()
    assert _fabric_live(s, "", 60, 1000).links.to_pylist() == want.to_pylist()
