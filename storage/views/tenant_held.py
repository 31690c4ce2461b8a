"""Per tenant over its allocations in numpy: `_HELD`'s columns (storage/views/tenants.py)
without a GROUP BY of tenant strings over every allocation.

The tenants' history path places the window sums on ~123k allocations at 100k GPUs; the
local SQL aggregate over them (string groups, a quantile per tenant) was ~15 ms of the
refresh. Here the allocations' tenants are integer codes read once per placement
(`tenant_codes`), and each figure is a bincount over them; the 95th percentile is DuckDB's
`quantile_cont` (linear between the two nearest ranks, NaN ordered above numbers) over
a partition of each tenant's values. NULLs follow SQL: a sum over no values is NULL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.views.latest import BUSY_PCT

P95 = 0.95
HELD_TYPES = {
    "tenant": pa.string(),
    "gpus": pa.float64(),
    "slices": pa.int64(),
    "util_mean_pct": pa.float64(),
    "util_p95_pct": pa.float64(),
    "mem_used_bytes": pa.int64(),
    "idle_allocations": pa.int64(),
    "idle_gpus": pa.float64(),
}


@dataclass(frozen=True)
class TenantCodes:
    """The allocations' tenants as codes into `names`; `order` groups the allocations
    by code (`starts[c]:starts[c + 1]` of it is tenant c's)."""

    names: pa.Array
    codes: np.ndarray
    order: np.ndarray
    starts: np.ndarray


def tenant_codes(tenant: pa.Array | pa.ChunkedArray) -> TenantCodes:
    # every name is some allocation's (a NULL tenant is a name too: no row joins it)
    enc = pc.dictionary_encode(tenant, null_encoding="encode")
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = enc.dictionary.cast(pa.string())
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(names) + 1))
    return TenantCodes(names, codes, order, starts)


def _sum(codes: np.ndarray, w: np.ndarray, valid: np.ndarray, k: int) -> pa.Array:
    """sum(w) per code over the valid rows; NULL where a code has none."""
    s = np.bincount(codes[valid], weights=w[valid], minlength=k)
    n = np.bincount(codes[valid], minlength=k)
    return pa.array(s, pa.float64(), mask=n == 0)


def _quantile_cont(v: np.ndarray, q: float) -> float:
    """DuckDB's quantile_cont over non-empty `v` (NaN ordered above every number)."""
    rn = (len(v) - 1) * q
    lo, hi = int(np.floor(rn)), int(np.ceil(rn))
    part = np.partition(v, [lo, hi]) if hi != lo else np.partition(v, lo)
    if hi == lo:
        return float(part[lo])
    a, b = float(part[lo]), float(part[hi])
    return a + (rn - lo) * (b - a)


def held(
    tc: TenantCodes,
    frac: np.ndarray,
    frac_ok: np.ndarray,
    is_slice: np.ndarray,
    u: np.ndarray,
    u_ok: np.ndarray,
    m: np.ndarray,
    m_ok: np.ndarray,
) -> pa.Table:
    """One row per tenant holding an allocation: `_HELD`'s columns and types. Per
    allocation: fraction, is_slice, util_pct, mem_used_bytes, each with where it is
    valid (not NULL)."""
    k = len(tc.names)
    if k == 0:
        return pa.table({c: pa.array([], t) for c, t in HELD_TYPES.items()})
    codes = tc.codes
    both = frac_ok & u_ok
    num = np.bincount(codes[both], weights=(u * frac)[both], minlength=k)
    den = np.bincount(codes[both], weights=frac[both], minlength=k)
    has_util = np.bincount(codes[u_ok], minlength=k) > 0
    mean = pa.array(num / np.where(den == 0, 1.0, den), pa.float64(), mask=~has_util | (den == 0))
    idle = u_ok & (u < BUSY_PCT)
    p95 = np.zeros(k)
    for c in np.flatnonzero(has_util):
        rows = tc.order[tc.starts[c] : tc.starts[c + 1]]
        p95[c] = _quantile_cont(u[rows][u_ok[rows]], P95)
    # exact in int64, as DuckDB's sum of BIGINT (a float64 bincount is not past 2^53)
    mem_n = np.bincount(codes[m_ok], minlength=k)
    mem_total = np.add.reduceat(np.where(m_ok, m, 0)[tc.order], tc.starts[:-1])
    return pa.table(
        {
            "tenant": tc.names,
            "gpus": _sum(codes, frac, frac_ok, k),
            "slices": pa.array(np.bincount(codes[is_slice], minlength=k), pa.int64()),
            "util_mean_pct": mean,
            "util_p95_pct": pa.array(p95, pa.float64(), mask=~has_util),
            "mem_used_bytes": pa.array(mem_total, pa.int64(), mask=mem_n == 0),
            "idle_allocations": pa.array(np.bincount(codes[idle], minlength=k), pa.int64()),
            "idle_gpus": _sum(codes, frac, frac_ok & idle, k),
        }
    )


def tenant_rows(rest: pa.Table, held_t: pa.Table) -> pa.Table:
    """`TENANTS_HELD_SQL` in Arrow: each tenant of `rest` with its `held` row (a few
    rows: the local statement's planning cost more than the join), largest holding
    first (NaN above numbers, as DuckDB orders it), then by tenant."""
    at = pc.index_in(rest.column("tenant"), value_set=held_t.column("tenant"))
    h = held_t.take(at)

    def zero(col: pa.ChunkedArray | pa.Array, typ: pa.DataType) -> pa.Array:
        return pc.fill_null(col, pa.scalar(0, typ))

    gpus = zero(h.column("gpus"), pa.float64())
    out = pa.table(
        {
            "tenant": rest.column("tenant"),
            "display_name": rest.column("display_name"),
            "tier": rest.column("tier"),
            "gpus": gpus,
            "slices": zero(h.column("slices"), pa.int64()),
            "util_mean_pct": h.column("util_mean_pct"),
            "util_p95_pct": h.column("util_p95_pct"),
            "mem_used_bytes": h.column("mem_used_bytes"),
            "gpu_hours": zero(rest.column("gpu_hours"), pa.float64()),
            "idle_allocations": zero(h.column("idle_allocations"), pa.int64()),
            "idle_gpus": zero(h.column("idle_gpus"), pa.float64()),
            "itl_p50_ms": rest.column("itl_p50_ms"),
            "itl_p99_ms": rest.column("itl_p99_ms"),
            "itl_target_ms": rest.column("itl_target_ms"),
            "endpoints_over_target": zero(rest.column("endpoints_over_target"), pa.int64()),
            "alerts_firing": zero(rest.column("firing"), pa.int64()),
        }
    )
    g = gpus.to_numpy(zero_copy_only=False)
    # lexsort: the last key first; NaN rows before all others, then gpus descending
    key = np.where(np.isnan(g), 0.0, -g)
    nan_first = ~np.isnan(g)
    name_rank = np.empty(len(g), dtype=np.int64)
    name_rank[pc.sort_indices(out.column("tenant")).to_numpy()] = np.arange(len(g))
    return out.take(np.lexsort((name_rank, key, nan_first)))
