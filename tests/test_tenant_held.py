"""The tenants' per-tenant figures in numpy (storage/views/tenant_held.py) equal the SQL
they stand for: `held` equals `_HELD` over the same allocations (NULL and NaN
utilisation, NULL and zero fractions, no memory, byte sums past 2^53, a NULL tenant,
the 95th percentile between two ranks), and `tenant_rows` equals `TENANTS_HELD_SQL`
(tenants without holdings, holdings of no listed tenant, NaN and tied GPU counts)."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import storage.views.tenants as tenants_mod
from storage.views.tenant_held import held, tenant_codes, tenant_rows
from tests.test_views_windows import _approx, _nan

BIG = 2**53 + 1  # a float64 sum would lose the 1

# (tenant, fraction, is_slice, util_pct, mem_used_bytes)
ALLOCS = [
    ("a", 1.0, False, 50.0, BIG),
    ("a", 1.0, False, 1.0, BIG),
    ("a", 0.5, True, None, None),
    ("a", 0.25, True, 90.0, 7),
    ("a", None, False, 3.0, 1),
    ("b", 1.0, False, None, None),  # no utilisation, no memory
    ("c", 0.0, True, 2.0, 5),  # only a zero fraction: the mean is NULL
    ("d", 1.0, False, float("nan"), 9),
    ("d", 1.0, False, 4.0, 9),
    ("d", 1.0, False, 80.0, 9),
    (None, 1.0, False, 10.0, 3),
    ("f", 1.0, False, 20.0, 1),
    ("f", None, False, float("nan"), 2),  # a NULL fraction: not in the mean, even NaN
] + [("e", 1.0, i % 3 == 0, float(i * 7 % 101), i) for i in range(23)]


def _alloc() -> pa.Table:
    cols = list(zip(*ALLOCS, strict=True))
    return pa.table(
        {
            "tenant": pa.array(cols[0], pa.string()),
            "fraction": pa.array(cols[1], pa.float64()),
            "is_slice": pa.array(cols[2], pa.bool_()),
            "util_pct": pa.array(cols[3], pa.float64()),
            "mem_used_bytes": pa.array(cols[4], pa.int64()),
        }
    )


def _np(a: pa.Array, fill) -> tuple[np.ndarray, np.ndarray]:
    return (
        pc.fill_null(a, fill).to_numpy(zero_copy_only=False),
        pc.is_valid(a).to_numpy(zero_copy_only=False),
    )


def _held_numpy(alloc: pa.Table) -> pa.Table:
    frac, frac_ok = _np(alloc.column("fraction"), 0.0)
    u, u_ok = _np(alloc.column("util_pct"), 0.0)
    m, m_ok = _np(alloc.column("mem_used_bytes"), 0)
    is_slice = alloc.column("is_slice").to_numpy(zero_copy_only=False)
    tc = tenant_codes(alloc.column("tenant"))
    return held(tc, frac, frac_ok, is_slice, u, u_ok, m, m_ok)


def _rows(t: pa.Table) -> list[dict]:
    return sorted(t.to_pylist(), key=lambda r: (r["tenant"] is None, r["tenant"] or ""))


def test_held_equals_the_sql():
    alloc = _alloc()
    con = duckdb.connect()
    con.register("alloc", alloc)
    want = con.execute(tenants_mod._HELD).to_arrow_table()
    got = _held_numpy(alloc)
    assert got.schema == want.schema
    assert _approx(_rows(got)) == _nan(_rows(want))
    a = next(r for r in got.to_pylist() if r["tenant"] == "a")
    assert a["mem_used_bytes"] == 2 * BIG + 8  # exact
    e = next(r for r in got.to_pylist() if r["tenant"] == "e")
    assert not e["util_p95_pct"].is_integer()  # between two ranks


def test_held_of_no_allocations():
    got = _held_numpy(_alloc().slice(0, 0))
    con = duckdb.connect()
    con.register("alloc", _alloc().slice(0, 0))
    assert got.schema == con.execute(tenants_mod._HELD).to_arrow_table().schema
    assert got.num_rows == 0


def test_tenant_rows_equal_the_sql():
    rest = pa.table(
        {
            "tenant": ["t1", "t2", "t3", "t4", "t5", "t6"],
            "display_name": ["one", None, "three", "four", "five", "six"],
            "tier": ["gold", "gold", None, "silver", "silver", "gold"],
            "gpu_hours": pa.array([1.5, None, 2.0, 0.0, 3.0, None], pa.float64()),
            "itl_p50_ms": pa.array([None, 1.0, 2.0, None, 3.0, 4.0], pa.float64()),
            "itl_p99_ms": pa.array([None, 5.0, 6.0, None, 7.0, 8.0], pa.float64()),
            "itl_target_ms": pa.array([None, 9.0, 9.0, None, 9.0, 9.0], pa.float64()),
            "endpoints_over_target": pa.array([None, 1, 0, None, 2, 0], pa.int64()),
            "firing": pa.array([None, 2, None, 1, None, 0], pa.int64()),
        }
    )
    h = pa.table(
        {
            "tenant": ["t5", "t2", "t3", "zz", "t6"],  # zz: no such tenant listed
            "gpus": pa.array([2.0, math.nan, 2.0, 99.0, None], pa.float64()),
            "slices": pa.array([1, 0, 3, 4, 0], pa.int64()),
            "util_mean_pct": pa.array([1.0, None, 3.0, 4.0, None], pa.float64()),
            "util_p95_pct": pa.array([1.0, None, 3.0, 4.0, None], pa.float64()),
            "mem_used_bytes": pa.array([1, None, 3, 4, None], pa.int64()),
            "idle_allocations": pa.array([0, 1, 2, 3, 0], pa.int64()),
            "idle_gpus": pa.array([None, 1.0, 2.0, 3.0, None], pa.float64()),
        }
    )
    con = duckdb.connect()
    con.register("rest", rest)
    con.register("held", h)
    want = con.execute(tenants_mod.TENANTS_HELD_SQL).to_arrow_table()
    got = tenant_rows(rest, h)
    assert got.schema == want.schema
    # NaN first, then 2.0 (t3, t5 by name), then the zeros by name
    assert [r["tenant"] for r in got.to_pylist()] == ["t2", "t3", "t5", "t1", "t4", "t6"]
    assert _approx(got.to_pylist()) == _nan(want.to_pylist())


@pytest.mark.parametrize("n", [1, 2, 3, 20, 21, 101])
def test_quantile_is_duckdbs(n):
    from storage.views.tenant_held import P95, _quantile_cont

    v = np.random.default_rng(n).normal(50, 20, n)
    want = duckdb.execute(f"SELECT quantile_cont(x, {P95}) FROM unnest(?) t(x)", [list(v)])
    assert _quantile_cont(v.copy(), P95) == pytest.approx(want.fetchone()[0], rel=1e-12)
