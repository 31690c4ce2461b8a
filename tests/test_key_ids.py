"""Link ids kept by the writer (storage/key_ids.py): rows written with the ids it looks
up are the rows the join wrote, a key it cannot tell apart goes to the join, and ids
that retention's prune hands out again are not taken for the old keys."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa

from storage.batch import make_batch
from storage.keyed import LINKS, Keyed
from storage.retention import prune_keys
from storage.store import Store

T0 = datetime(2026, 12, 3, 5, 0, 0)
COLS = ("ts", "host", "kind", "port", "gpu_uuid", "tx_bytes_per_s", "errors", "source")


def links(rows):
    return make_batch("link_samples", {c: [r[i] for r in rows] for i, c in enumerate(COLS)})


def rows(store, where: str = "true"):
    sql = (
        "SELECT ts, host, kind, port, gpu_uuid, tx_bytes_per_s, errors, source, link_id "
        f"FROM link_values JOIN link_info USING (link_id) WHERE {where} ORDER BY ALL"
    )
    return store.cursor().execute(sql).fetchall()


def physical(store):
    """link_values in stored order, and link_info: what the writer decided."""
    cur = store.cursor()
    return (
        cur.execute("SELECT * FROM link_values").fetchall(),
        cur.execute("SELECT * FROM link_info ORDER BY link_id").fetchall(),
    )


def fleet(step: int):
    """Per-link rows of GPUs in runs (as agents send them), IB ports without a GPU next to
    a port of the same name with one, NULL and non-NULL sources, hosts joining late."""
    t = T0 + timedelta(seconds=step)
    out = []
    for h in range(2 + min(step, 1)):
        for g in range(2):
            out += [
                (t, f"h{h}", "nvlink", f"nvlink{p}", f"GPU-{h}-{g}", 1e9 * p + step, 0, "nvml")
                for p in range(3)
            ]
        out.append((t, f"h{h}", "ib", "mlx5_0/1", None, 5.0 + step, 1, "scrape"))
        out.append((t, f"h{h}", "ib", "mlx5_0/1", f"GPU-{h}-0", 6.0 + step, 2, "scrape"))
        out.append((t, f"h{h}", "ib", "mlx5_0/1", f"GPU-{h}-0", 7.0 + step, 3, None))
    return out[::-1] if step % 2 else out  # the other order too: ids out of (ts, id) order


def test_rows_written_with_kept_ids_are_the_rows_the_join_writes(tmp_path, monkeypatch):
    joins = []
    join = Keyed.write
    monkeypatch.setattr(
        Keyed, "write", lambda self, *a, **k: joins.append(1) or join(self, *a, **k)
    )
    kept = Store.open(tmp_path / "kept.duckdb")
    joined = Store.open(tmp_path / "joined.duckdb")
    joined._key_ids = {}  # every write joins, as before
    try:
        for step in range(4):
            joins.clear()
            kept.write([links(fleet(step))])
            assert len(joins) == (step < 2)  # new links (steps 0, 1) join, known ones do not
            joined.write([links(fleet(step))])
        assert physical(kept) == physical(joined)
        assert len(physical(kept)[1]) == 3 * 9  # every link once
        # steady state: every key known (read at the lookup), the writer's ids are used
        ids = kept._key_ids["link_samples"]
        assert ids.lookup(kept.cursor(), links(fleet(3)).data) is not None
        assert ids.rows == ids.top == 3 * 9
    finally:
        kept.close()
        joined.close()


def test_a_key_the_separators_would_confuse_goes_to_the_join(tmp_path):
    store = Store.open(tmp_path / "s.duckdb")
    try:
        # joined with the separators, both groups would read "ib␟h␟x␟y␟␞"
        a = (T0, "h", "ib", "p", "x\x1fy", 1.0, 1, None)
        b = (T0, "h", "ib", "p", "x", 2.0, 2, "y\x1f\x1e")
        store.write([links([a])])
        store.write([links([b])])
        store.write([links([(T0 + timedelta(seconds=1), *a[1:])])])
        store.write([links([(T0 + timedelta(seconds=1), *b[1:])])])
        # a GPU written as the NULL marker is not the IB port without a GPU
        no_gpu = (T0, "h", "ib", "q", None, 3.0, 3, "s")
        marker = (T0, "h", "ib", "q", "\x1e", 4.0, 4, "s")
        for row in (marker, no_gpu, no_gpu, marker):  # each after the other is kept
            store.write([links([row])])
        assert len(rows(store, "port = 'q'")) == 4
        assert len(rows(store, "port = 'q' AND gpu_uuid = '\x1e' AND errors = 4")) == 2
        assert len({r[8] for r in rows(store, "port = 'q'")}) == 2
        got = rows(store, "port = 'p'")
        assert [r[:8] for r in got] == sorted(
            [a, b, (T0 + timedelta(seconds=1), *a[1:]), (T0 + timedelta(seconds=1), *b[1:])]
        )
        assert len({(r[4], r[7], r[8]) for r in got}) == 2  # one id per key
    finally:
        store.close()


def test_ids_retention_hands_out_again_are_not_taken_for_the_pruned_keys(tmp_path):
    store = Store.open(tmp_path / "s.duckdb")
    try:
        a = (T0, "h1", "nvlink", "nvlink0", "GPU-a", 1.0, 0, "nvml")
        b = (T0, "h1", "nvlink", "nvlink1", "GPU-a", 2.0, 0, "nvml")
        c = (T0, "h2", "nvlink", "nvlink0", "GPU-c", 3.0, 0, "nvml")
        store.write([links([a, b])])  # a: 1, b: 2
        store.write([links([a, b])])  # the writer now holds both ids
        cur = store.cursor()
        cur.execute("DELETE FROM link_values WHERE link_id = 2")
        assert prune_keys(store)["link_info"] == 1  # b's id 2 leaves: 1 row, top id 1
        assert store._key_ids["link_samples"].rows == 0  # the ids kept are dropped
        store.write([links([c])])  # c takes id 2: 2 rows, top id 2, as before the prune
        later = T0 + timedelta(seconds=1)
        store.write([links([(later, *b[1:])])])
        got = rows(store, f"ts = '{later}'")
        assert got == [(later, *b[1:], 3)]  # a new id, not c's
        assert rows(store, "host = 'h2'") == [(*c, 2)]
    finally:
        store.close()


def test_an_unknown_member_or_group_is_no_id():
    import pyarrow as pa

    from storage.key_ids import KeyIds
    from storage.keyed import LINKS

    store = Store.open(":memory:")
    try:
        a = (T0, "h1", "nvlink", "nvlink0", "GPU-a", 1.0, 0, "nvml")
        other = (T0, "h2", "nvlink", "nvlink1", "GPU-c", 1.0, 0, "nvml")
        store.write([links([a, other])])
        ids = KeyIds(LINKS, "port")
        cur = store.cursor()
        assert ids.lookup(cur, links([a, other]).data) == pa.array([1, 2])
        # GPU-a's group and the port nvlink1 are both known, the pair is not
        pair = (T0, "h1", "nvlink", "nvlink1", "GPU-a", 1.0, 0, "nvml")
        assert ids.lookup(cur, links([pair]).data) is None
        assert (
            ids.lookup(cur, links([(T0, "h1", "nvlink", "nvlink0", "GPU-b", 1.0, 0, "nvml")]).data)
            is None
        )
        assert (
            ids.lookup(cur, links([(T0, "h1", "nvlink", "nvlink0", "GPU-a", 1.0, 0, None)]).data)
            is None
        )
    finally:
        store.close()


def test_keys_deleted_by_another_path_are_read_again(tmp_path):
    """The dimension lost its highest id without `prune_keys`: the kept ids follow it."""
    store = Store.open(tmp_path / "s.duckdb")
    try:
        a = (T0, "h1", "nvlink", "nvlink0", "GPU-a", 1.0, 0, "nvml")
        b = (T0, "h1", "nvlink", "nvlink1", "GPU-a", 2.0, 0, "nvml")
        c = (T0, "h2", "nvlink", "nvlink0", "GPU-c", 3.0, 0, "nvml")
        store.write([links([a, b])])
        store.write([links([a, b])])
        cur = store.cursor()
        cur.execute("DELETE FROM link_values WHERE link_id = 2")
        cur.execute(LINKS.prune_sql())
        store.write([links([c])])  # c: id 2
        later = T0 + timedelta(seconds=1)
        store.write([links([(later, *b[1:])])])
        assert rows(store, f"ts = '{later}'") == [(later, *b[1:], 3)]
    finally:
        store.close()


def link_table(step: int, hosts: list[str]) -> pa.Table:
    """Per-link rows as agents send them (one host's ports together), one link twice,
    errors and a link down on some, the other order on odd steps."""
    t = T0 + timedelta(seconds=step)
    out = []
    for h in hosts:
        for p in range(3):
            out.append(
                (
                    t,
                    h,
                    "nvlink",
                    f"nvlink{p}",
                    f"GPU-{h}",
                    float(step * 10 + p),
                    step % 2,
                    p != 1 or step != 2,
                )
            )
        out.append((t, h, "ib", "nvlink0", None, 1.0 + step, 0, True))  # same port, another kind
    out.append(
        (
            t - timedelta(milliseconds=1),
            hosts[0],
            "nvlink",
            "nvlink0",
            f"GPU-{hosts[0]}",
            -1.0,
            7,
            True,
        )
    )
    if step % 2:
        out = out[::-1]
    cols = ("ts", "host", "kind", "port", "gpu_uuid", "tx_bytes_per_s", "errors", "link_up")
    t = pa.table({c: [r[i] for r in out] for i, c in enumerate(cols)})
    # in chunks, as the publish folds them (one cut inside a host's run)
    return pa.concat_tables([t.slice(0, 5), t.slice(5, 7), t.slice(12)])


def state(s) -> tuple:
    return (
        s.keys.to_pylist(),
        s.ts.tolist(),
        {c: v.to_pylist() for c, v in s.values.items()},
        {c: v.tolist() for c, v in s.value_ts.items()},
        s.marks.to_pylist(),
        s.keys_n,
    )


def test_the_live_link_state_by_runs_is_the_state_by_strings(monkeypatch):
    """storage/live_window.py LinkState: links found by their runs of rows give the
    state that one string per row gives, with links joining, a host name holding the
    separator, and a state loaded from history in between."""
    from storage.key_ids import RunKeys
    from storage.live_window import LINK_KEY, LinkState

    by_runs, by_strings = LinkState(), LinkState()
    found = []
    real_find = RunKeys.find

    def find(self, data):
        if by_strings._rows is self:
            return None
        out = real_find(self, data)
        found.append(out is not None)
        return out

    monkeypatch.setattr(RunKeys, "find", find)
    plan = [["h1", "h2"], ["h1", "h2"], ["h1", "h2", "h3"], ["h1", "h2", "h3"], ["h\x1fx", "h1"]]
    for step, hosts in enumerate(plan):
        for s in (by_runs, by_strings):
            s.fold(link_table(step, hosts))
        assert state(by_runs) == state(by_strings)
    assert found == [False, True, False, True, False]
    # loaded from history: other links at other rows
    agg = pa.table(
        {
            c: ["h9", "h1"]
            if c == "host"
            else ["nvlink", "nvlink"]
            if c == "kind"
            else ["nvlink1", "nvlink2"]
            for c in LINK_KEY
        }
    )
    agg = agg.append_column("ts", pa.array([T0, T0], pa.timestamp("us")))
    for c in ("gpu_uuid", "tx_bytes_per_s", "rx_bytes_per_s", "line_rate_bytes_per_s", "link_up"):
        typ = pa.string() if c == "gpu_uuid" else pa.bool_() if c == "link_up" else pa.float64()
        agg = agg.append_column(c, pa.nulls(2, typ)).append_column(
            f"{c}_ts", pa.nulls(2, pa.timestamp("us"))
        )
    agg = agg.append_column("errors_ts", pa.nulls(2, pa.timestamp("us")))
    empty = by_runs.marks.select(["ts"]).slice(0, 0)
    marks = pa.table(
        {
            "ts": empty.column("ts"),
            "host": pa.array([], pa.string()),
            "kind": pa.array([], pa.string()),
            "port": pa.array([], pa.string()),
            "errors": pa.array([], pa.int64()),
            "down": pa.array([], pa.bool_()),
        }
    )
    for s in (by_runs, by_strings):
        s.load(agg, marks)
    for step in (5, 6):
        for s in (by_runs, by_strings):
            s.fold(link_table(step, ["h1", "h9"]))
        assert state(by_runs) == state(by_strings)
