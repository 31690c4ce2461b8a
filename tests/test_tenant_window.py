"""The tenants' history path through a reader that keeps the window's 1 s slots
(storage/views/tenant_window.py) returns the rows of the one statement (TENANTS_SQL)
as the cursor moves, when rows land late in a kept second or leave it, and reads
again only the seconds that are new or changed."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

import storage.views.tenant_window as window_mod
from storage import views
from storage.batch import make_batch
from storage.reader import LocalReader
from tests.test_tenants_history import stored  # noqa: F401 - the fixture
from tests.test_views_windows import _approx

TS = pa.timestamp("us")


def _same(reader, cur, at) -> list[dict]:
    a = views.tenant_summary(reader, at, live=False)
    b = views.tenant_summary(cur, at, one_statement=True)
    assert a.schema == b.schema
    assert _approx(a.to_pylist()) == b.to_pylist()
    return b.to_pylist()


@pytest.fixture()
def reads(monkeypatch):
    """What was read from the rows tables, in order: ("slots" or "block", table,
    first second, last second)."""
    got: list[tuple[str, str, int, int]] = []
    slots, block = window_mod._slots_of, window_mod._block

    def spy_slots(src, table, first, last):
        got.append(("slots", table, first, last))
        return slots(src, table, first, last)

    def spy_block(cur, table, first, counts):
        got.append(("block", table, first, first + len(counts) - 1))
        return block(cur, table, first, counts)

    monkeypatch.setattr(window_mod, "_slots_of", spy_slots)
    monkeypatch.setattr(window_mod, "_block", spy_block)
    return got


def _second(t) -> int:
    """The slot (second) whose span ends at `t` (a whole second)."""
    return int((t - window_mod._EPOCH).total_seconds()) - 1


def test_the_cursor_moving_reads_only_new_seconds(stored, reads):  # noqa: F811
    store, _, last, _ = stored
    cur = store.cursor()
    reader = LocalReader(store.con)
    at = last - timedelta(seconds=3)
    _same(reader, cur, at)
    b = _second(at)
    assert reads == [("block", t, b - 29, b) for t in ("gpu_samples", "slice_samples")]
    reads.clear()
    _same(reader, cur, at)  # nothing changed: nothing read
    assert reads == []
    _same(reader, cur, at + timedelta(seconds=1))
    # the second that left read and taken away from the block, the new one read
    for t in ("gpu_samples", "slice_samples"):
        assert [r for r in reads if r[1] == t] == [
            ("slots", t, b - 29, b - 29),
            ("slots", t, b + 1, b + 1),
        ]
    reads.clear()
    # a step back within the margin, part seconds at either end: nothing read again
    for dt in (0.0, 0.5, 0.25, 0.75):
        _same(reader, cur, at + timedelta(seconds=dt))
    assert reads == []
    cur.close()


def test_memory_leaving_with_a_blocks_seconds(stored):  # noqa: F811
    """A key's newest memory in the seconds a block loses: none left (the quiet
    GPU's at -12.25 s); the cursor stepping back past the block's newest second reads
    it again."""
    store, _, last, _ = stored
    cur = store.cursor()
    reader = LocalReader(store.con)
    for dt in (0.0, 11.0, 12.0, 18.0, 13.0):
        _same(reader, cur, last + timedelta(seconds=dt))
    cur.close()


def test_rows_written_late_into_a_kept_second(stored, reads):  # noqa: F811
    store, _, last, (g2, _) = stored
    cur = store.cursor()
    reader = LocalReader(store.con)
    at = last - timedelta(seconds=3)
    for dt in (0, 1, 2):
        _same(reader, cur, at + timedelta(seconds=dt))
    reads.clear()
    host = cur.execute("SELECT host FROM gpus WHERE gpu_uuid = ?", [g2]).fetchone()[0]
    late = at + timedelta(seconds=0.5)  # in the second read on its own
    early = at - timedelta(seconds=20.5)  # in the block's
    for ts, mem in ((late, 2**45), (early, 2**44)):
        store.write(
            [
                make_batch(
                    "gpu_samples",
                    {
                        "ts": pa.array([ts, ts], TS),
                        "host": [host, host],
                        "gpu_uuid": [g2, g2],
                        "source": ["late", "late"],
                        "util_pct": pa.array([97.0, None], pa.float64()),
                        "mem_used_bytes": pa.array([None, mem], pa.int64()),
                    },
                )
            ]
        )
        _same(reader, cur, at + timedelta(seconds=2))
    b = _second(at + timedelta(seconds=2))
    j = _second(at + timedelta(seconds=1))
    assert reads == [
        ("slots", "gpu_samples", j, j),  # that second alone, again
        ("block", "gpu_samples", b - 29, b - 2),  # the block's seconds, again
    ]
    cur.close()


def test_rows_deleted_from_a_kept_second(stored):  # noqa: F811
    store, _, last, _ = stored
    cur = store.cursor()
    reader = LocalReader(store.con)
    at = last - timedelta(seconds=1)
    before = _same(reader, cur, at)
    # retention-like: the window's rows of one second gone (here all of them)
    gone = at - timedelta(seconds=20)
    cur.execute(
        "DELETE FROM gpu_values WHERE ts > ? AND ts <= ?", [gone - timedelta(seconds=1), gone]
    )
    assert _same(reader, cur, at) != before
    cur.close()


def test_rows_at_a_second_bound_and_within_it(stored):  # noqa: F811
    """A row at a whole second is in the second that ends there; two rows of a key in
    one second: the newer's memory."""
    store, _, last, (g2, _) = stored
    cur = store.cursor()
    reader = LocalReader(store.con)
    host = cur.execute("SELECT host FROM gpus WHERE gpu_uuid = ?", [g2]).fetchone()[0]
    whole = last - timedelta(seconds=6)
    times = [whole, whole - timedelta(seconds=0.25), whole - timedelta(seconds=0.75)]
    store.write(
        [
            make_batch(
                "gpu_samples",
                {
                    "ts": pa.array(times, TS),
                    "host": [host] * 3,
                    "gpu_uuid": [g2] * 3,
                    "source": ["edge"] * 3,
                    "util_pct": pa.array([3.0, 99.0, 51.0], pa.float64()),
                    "mem_used_bytes": pa.array([7, 2**43, 5], pa.int64()),
                },
            )
        ]
    )
    for dt in (0.0, 6.0, -24.0, -23.75, 1.0):  # the window's start at `whole` and after
        _same(reader, cur, whole + timedelta(seconds=30 + dt))
    cur.close()


def test_a_cursor_far_away_drops_the_kept_seconds(stored):  # noqa: F811
    store, _, last, _ = stored
    cur = store.cursor()
    reader = LocalReader(store.con)
    _same(reader, cur, last)
    _same(reader, cur, last - timedelta(seconds=11))
    kept = reader.__dict__["_tenant_window"]["gpu_samples"].slots
    top = int((last - window_mod._EPOCH).total_seconds()) - 11
    assert min(kept) >= top - 30 - window_mod.MARGIN_SLOTS
    assert max(kept) < top + window_mod.MARGIN_SLOTS
    cur.close()


def test_combine_takes_each_keys_newest_memory():
    """Spans newest first: an older one fills only keys no newer one had."""

    def span(ids, mem, ts):
        ids = pa.array(ids, pa.int64()).to_numpy()
        return window_mod._Slot(
            0,
            (len(ids),),
            4,
            window_mod.np.ones(4),
            window_mod.np.ones(4, dtype="int64"),
            ids,
            window_mod.np.array(mem, dtype="int64"),
            window_mod.np.array(ts, dtype="int64"),
        )

    kept = window_mod._Kept()
    newest, older = span([1, 2], [10, 20], [9, 9]), span([1, 2], [11, 21], [5, 5])
    for s in (newest, older):
        kept.share_keys(s)
    assert older.mem_ids is newest.mem_ids  # the same keys: one array
    spans = [newest, older, span([0, 2], [1, 2], [1, 1])]
    out = window_mod._combine(spans, window_mod.Sums.empty(0))
    assert out.mem.tolist() == [1, 10, 20, 0]
    assert out.has_mem.tolist() == [True, True, True, False]
    assert out.mem_ts.tolist() == [1, 9, 9, 0]
    assert out.total.tolist() == [3.0] * 4


def test_spans_share_keys_only_when_the_same():
    def span(ids, ts):
        return window_mod._Slot(
            0,
            (len(ids),),
            4,
            window_mod.np.zeros(4),
            window_mod.np.zeros(4, dtype="int64"),
            window_mod.np.array(ids, dtype="int64"),
            window_mod.np.array([7] * len(ids), dtype="int64"),
            window_mod.np.array([ts] * len(ids), dtype="int64"),
        )

    kept = window_mod._Kept()
    newer, older = span([1, 2], 9), span([1, 3], 5)  # as many keys, not the same
    for s in (newer, older):
        kept.share_keys(s)
    assert older.mem_ids is not newer.mem_ids
    out = window_mod._combine([newer, older], window_mod.Sums.empty(0))
    assert out.has_mem.tolist() == [False, True, True, True]
    assert out.mem_ts.tolist() == [0, 9, 9, 5]
