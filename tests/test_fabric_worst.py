"""The live path's ordering of the worst links (Arrow's select_k and sort) gives the
rows the history path's WORST_LINKS_SQL picks, in its order, on links with ties,
NaN and NULL utilisation, infinities, down links and unknown error counts."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from storage.views.fabric import WORST_LINKS_SQL, _worst


def _links(rng: np.random.Generator, n: int, *, quiet_share: float) -> pa.Table:
    util = rng.choice([0.0, 12.5, 50.0, 99.0, 100.0], n) + np.where(
        rng.random(n) < 0.5, 0.0, rng.random(n)
    )
    special = rng.random(n)
    util = np.where(special < 0.03, np.nan, util)
    util = np.where((special >= 0.03) & (special < 0.04), np.inf, util)
    util = np.where((special >= 0.04) & (special < 0.05), -np.inf, util)
    util_mask = (special >= 0.05) & (special < 0.08)  # NULL
    noisy = rng.random(n) > quiet_share
    errors = np.where(noisy, rng.choice([0.0, 0.1, 2.0], n), 0.0)
    errors_mask = noisy & (rng.random(n) < 0.3)  # errors unknown (NULL)
    up = np.where(noisy, rng.random(n) < 0.7, True)
    up_mask = noisy & (rng.random(n) < 0.1)
    return pa.table(
        {
            "kind": pa.array(rng.choice(["nvlink", "ib"], n)),
            # unique (host, port): the SQL's order is then total
            "host": pa.array([f"h{i % 37:02d}" for i in range(n)]),
            "port": pa.array([f"p{i:05d}" for i in range(n)]),
            "link_up": pa.array(up, mask=up_mask),
            "errors_per_s": pa.array(errors, mask=errors_mask),
            "util_pct": pa.array(util, mask=util_mask),
        }
    )


def _sql_worst(links: pa.Table, limit: int) -> list[tuple[str, str]]:
    con = duckdb.connect()
    con.register("links", links)
    rows = con.execute(WORST_LINKS_SQL, {"kind": "", "limit": limit}).fetchall()
    cols = links.column_names
    return [(r[cols.index("host")], r[cols.index("port")]) for r in rows]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("quiet_share", [1.0, 0.98, 0.5])
@pytest.mark.parametrize("limit", [1, 7, 60, 500])
def test_worst_links_are_the_sql_order(seed: int, quiet_share: float, limit: int) -> None:
    links = _links(np.random.default_rng(seed), 3000, quiet_share=quiet_share)
    got = _worst(links, limit)
    hosts, ports = got.column("host").to_pylist(), got.column("port").to_pylist()
    assert list(zip(hosts, ports, strict=True)) == _sql_worst(links, limit)
