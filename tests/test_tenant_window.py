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
    """The (first, last) slot runs read from the rows tables, in order."""
    got: list[tuple[str, int, int]] = []
    plain = window_mod._slots_of

    def spy(src, table, first, last):
        got.append((table, first, last))
        return plain(src, table, first, last)

    monkeypatch.setattr(window_mod, "_slots_of", spy)
    return got


def test_the_cursor_moving_reads_only_new_seconds(stored, reads):  # noqa: F811
    store, _, last, _ = stored
    cur = store.cursor()
    reader = LocalReader(store.con)
    _same(reader, cur, last - timedelta(seconds=3))
    assert len(reads) == 2  # each table's window in one read
    reads.clear()
    _same(reader, cur, last - timedelta(seconds=3))  # nothing changed: nothing read
    assert reads == []
    _same(reader, cur, last - timedelta(seconds=2))
    j = int((last - timedelta(seconds=3) - window_mod._EPOCH).total_seconds())
    assert sorted(reads) == [("gpu_samples", j, j), ("slice_samples", j, j)]
    reads.clear()
    # a step back within the margin, part seconds at either end: no slot read again
    for dt in (-3.0, -2.5, -3.5, -2.75):
        _same(reader, cur, last + timedelta(seconds=dt))
    assert reads == []
    cur.close()


def test_rows_written_late_into_a_kept_second(stored, reads):  # noqa: F811
    store, _, last, (g2, gm) = stored
    cur = store.cursor()
    reader = LocalReader(store.con)
    at = last - timedelta(seconds=1)
    _same(reader, cur, at)
    reads.clear()
    host = cur.execute("SELECT host FROM gpus WHERE gpu_uuid = ?", [g2]).fetchone()[0]
    late = at - timedelta(seconds=9.5)
    store.write(
        [
            make_batch(
                "gpu_samples",
                {
                    "ts": pa.array([late, late], TS),
                    "host": [host, host],
                    "gpu_uuid": [g2, g2],
                    "source": ["late", "late"],
                    "util_pct": pa.array([97.0, None], pa.float64()),
                    "mem_used_bytes": pa.array([None, 2**45], pa.int64()),
                },
            )
        ]
    )
    _same(reader, cur, at)
    j = int((late - window_mod._EPOCH).total_seconds())
    assert reads == [("gpu_samples", j, j)]  # that second alone, again
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
            len(ids),
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
