"""The live snapshot's fold of committed batches (storage/live.py `_Latest.fold`).

The usual fold (every key already in the snapshot) picks each key's newest row by row
number; a batch with a new or NULL key takes the general path. Both must give the
same snapshot: newest row per key, the first of equal times, never an older row over
a newer one, and `keys_n` bumped when a key changed group.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from storage.live import _Latest

T0 = 1_700_000_000_000_000  # µs


def table(uuids: list[str | None], hosts: list[str], ts: list[int], vals: list[float]) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([T0 + t for t in ts], pa.int64()).cast(pa.timestamp("us")),
            "host": pa.array(hosts, pa.string()),
            "gpu_uuid": pa.array(uuids, pa.string()),
            "util_pct": pa.array(vals, pa.float64()),
        }
    )


def snapshot() -> _Latest:
    return _Latest(
        "gpu_samples", table(["a", "b", "c"], ["h1", "h1", "h2"], [10, 10, 10], [0, 0, 0])
    )


def rows(latest: _Latest) -> list[tuple]:
    s = latest.state
    return list(
        zip(
            s.column("gpu_uuid").to_pylist(),
            s.column("host").to_pylist(),
            s.column("util_pct").to_pylist(),
            strict=True,
        )
    )


def test_each_keys_newest_row_first_of_equal_times_never_an_older_one():
    latest = snapshot()
    latest.fold(
        table(
            ["a", "a", "a", "b", "c", "a"],
            ["h1", "h1", "h1", "h1", "h2", "h1"],
            [12, 15, 15, 9, 10, 14],
            [1, 2, 3, 4, 5, 6],
        )
    )
    # a: the first of its two rows at 15; b: 9 is older than the snapshot's 10; c: same time wins
    assert rows(latest) == [("a", "h1", 2.0), ("b", "h1", 0.0), ("c", "h2", 5.0)]
    assert latest.keys_n == 1
    assert (
        latest.state.column("ts").to_pylist()[0]
        == pa.scalar(T0 + 15, pa.int64()).cast(pa.timestamp("us")).as_py()
    )


def test_a_key_that_moved_host_keeps_its_row_and_bumps_keys_n():
    latest = snapshot()
    latest.fold(table(["b"], ["h9"], [11], [7]))
    assert rows(latest) == [("a", "h1", 0.0), ("b", "h9", 7.0), ("c", "h2", 0.0)]
    assert latest.keys_n == 2
    latest.fold(table(["b"], ["h9"], [12], [8]))  # same host again: no bump
    assert latest.keys_n == 2


def test_a_new_key_is_appended():
    latest = snapshot()
    latest.fold(table(["d", "a"], ["h3", "h1"], [11, 11], [1, 2]))
    assert rows(latest) == [("a", "h1", 2.0), ("b", "h1", 0.0), ("c", "h2", 0.0), ("d", "h3", 1.0)]
    assert latest.keys_n == 2


def test_the_usual_fold_equals_the_general_one_on_random_batches():
    rng = np.random.default_rng(7)
    keys = [f"GPU-{i}" for i in range(50)]
    hosts = [f"h{i // 8}" for i in range(50)]
    for _ in range(30):
        start = table(keys, hosts, rng.integers(0, 5, 50).tolist(), rng.random(50).tolist())
        fast, general = _Latest("gpu_samples", start), _Latest("gpu_samples", start)
        n = int(rng.integers(1, 200))
        pick = rng.integers(0, 50, n)
        moved = rng.random(n) < 0.02
        batch = table(
            [keys[i] for i in pick],
            [f"m{i}" if m else hosts[i] for i, m in zip(pick, moved, strict=True)],
            rng.integers(0, 8, n).tolist(),  # many equal times, some older than the state
            rng.random(n).tolist(),
        )
        assert fast._fold_known(batch)  # every key known: the usual path
        general._fold_any(batch)
        assert fast.state.equals(general.state)
        assert fast.keys_n == general.keys_n


def test_a_snapshot_row_without_a_time_is_replaced_as_by_the_general_fold():
    start = table(["a", "b"], ["h1", "h1"], [10, 10], [0, 0])
    start = start.set_column(0, "ts", pa.array([None, T0], pa.timestamp("us")))
    fast, general = _Latest("gpu_samples", start), _Latest("gpu_samples", start)
    batch = table(["a", "b"], ["h1", "h1"], [-5, -5], [1, 2])
    assert fast._fold_known(batch)
    general._fold_any(batch)
    assert fast.state.equals(general.state)
    assert fast.state.column("util_pct").to_pylist() == [1.0, 0.0]
