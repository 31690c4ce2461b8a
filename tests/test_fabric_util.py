"""The fabric's live path computes a link's utilisation in numpy
(`storage/views/fabric.py::util_pct`); the history path in SQL (`_UTIL_PCT`). Both
must give the same value, bit for bit, for any values a source can send."""

from __future__ import annotations

import itertools
import math
import struct

import duckdb
import pyarrow as pa

from storage.views.fabric import _UTIL_PCT, util_pct

VALUES = [None, 0.0, -0.0, 1.0, 2.5, 2.5000000000000004, -3.0, math.nan, math.inf, -math.inf]
VALUES += [1e308, 5e-324]


def bits(v: float | None) -> object:
    if v is None:
        return None
    return "nan" if math.isnan(v) else struct.pack("<d", v)


def test_util_pct_is_duckdbs_expression_bit_for_bit():
    rows = list(itertools.product(VALUES, repeat=3))
    t = pa.table(
        {
            c: pa.array([r[i] for r in rows], pa.float64())
            for i, c in enumerate(("tx_bytes_per_s", "rx_bytes_per_s", "line_rate_bytes_per_s"))
        }
    )
    con = duckdb.connect()
    con.register("w", t)
    sql = con.execute(f"SELECT {_UTIL_PCT} AS u FROM w").to_arrow_table().column("u")
    got = util_pct(*(pa.chunked_array([t.column(i).combine_chunks()]) for i in range(3)))
    want = [bits(v) for v in sql.to_pylist()]
    have = [bits(v) for v in got.to_pylist()]
    diff = [(r, w, h) for r, w, h in zip(rows, want, have, strict=True) if w != h]
    assert not diff, diff[:5]
