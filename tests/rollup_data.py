"""Synthetic sample rows for every rolled-up table, as Arrow tables.

Values are awkward on purpose: doubles with many digits, NULLs, counters that
reset, duplicate timestamps per key (ties), NULL keys, booleans and bitmasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from storage.columns import TABLE_COLUMNS
from storage.rollups import COUNTER, SPECS

EPOCH = datetime(1970, 1, 1)


def _keys(table: str, n: int, rng: np.random.Generator) -> dict[str, list]:
    spec = SPECS[table]
    out: dict[str, list] = {}
    for k in spec.keys:
        # the first key column is unique per key; the others are shared by pairs
        div = 1 if k == spec.keys[0] else 2
        vals = [f"{k}-{i // div}" for i in range(n)]
        if k == "kind":
            vals = [("nvlink", "ib", "efa", "roce")[i % 4] for i in range(n)]
        if k in ("gpu_uuid", "tenant", "model") and table in ("link_samples", "latency_samples"):
            vals[0] = None  # a NULL key (NIC ports have no GPU; endpoints without a tenant)
        out[k] = vals
    return out


def sample_rows(
    table: str, start: datetime, hours: float, interval_s: float, n_keys: int, seed: int
) -> pa.Table:
    """Rows for `n_keys` keys every `interval_s` (jittered) from `start`, sorted by ts."""
    rng = np.random.default_rng(seed)
    spec = SPECS[table]
    ticks = int(hours * 3600 / interval_s)
    n = ticks * n_keys
    base = (start - EPOCH) // timedelta(microseconds=1)
    tick_us = (np.arange(ticks, dtype=np.int64) * int(interval_s * 1e6)).repeat(n_keys)
    jitter = rng.integers(0, int(interval_s * 1e6), n)
    ts = base + tick_us + jitter
    key_idx = np.tile(np.arange(n_keys), ticks)
    # ties: 0.5 % of rows repeat the previous row's timestamp for the same key
    dup = rng.random(n) < 0.005
    dup[:n_keys] = False
    ts[dup] = ts[np.flatnonzero(dup) - n_keys]
    cols: dict[str, pa.Array] = {"ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us"))}
    keys = _keys(table, n_keys, rng)
    for k, vals in keys.items():
        cols[k] = pa.array(vals, pa.string()).take(pa.array(key_idx))
    kinds = dict(spec.metrics)
    for c, typ in TABLE_COLUMNS[table].items():
        if c in cols or c == "source":
            continue
        null = rng.random(n) < 0.03
        if kinds.get(c) == COUNTER:
            inc = rng.exponential(50.0, (ticks, n_keys))
            if typ == pa.int64():
                inc = np.floor(inc)
            reset = rng.random((ticks, n_keys)) < 0.0005
            val = np.zeros((ticks, n_keys))
            acc = np.zeros(n_keys)
            for i in range(ticks):  # a few thousand steps; keeps resets honest
                acc = np.where(reset[i], inc[i], acc + inc[i])
                val[i] = acc
            v = val.reshape(-1)
            if typ == pa.float64():
                v = v * 1.000000123  # many digits
            arr = v.astype(np.int64) if typ == pa.int64() else v
        elif typ == pa.float64():
            arr = rng.normal(50.0, 20.0, n) * 1.0000001 + rng.random(n) * 1e-9
        elif typ == pa.int64():
            arr = rng.integers(0, 80 * 2**30, n) if "bytes" in c else rng.integers(0, 256, n)
            if c == "throttle_reasons":
                arr = rng.choice(np.array([0, 1, 4, 8, 0x20, 0x40, 0x80]), n)
        elif typ == pa.bool_():
            arr = rng.random(n) < 0.9
        else:
            continue
        cols[c] = pa.array(arr, mask=null)
    cols["source"] = pa.array(["synthetic"] * n, pa.string())
    t = pa.table(cols)
    return t.take(pa.compute.sort_indices(t, [("ts", "ascending")]))
