"""NVLink rows built for many reports at once (numpy/Arrow, issue 13) against the rules
they replace, written out per GPU and per value below: ragged, missing and null lists,
both `nvlink_rows` modes, and the overflow that must still reject its report alone."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.nvml.batches import ReportBatcher
from collectors.nvml.report import Report

UUIDS = ["GPU-a", "GPU-b", "GPU-c"]


def _report(host: str, ts: float, tx, rx, errs, ups) -> Report:
    gpu = {"uuid": UUIDS[: len(tx if tx is not None else rx)]}
    for k, v in (
        ("nvlink_tx_bytes_per_s", tx),
        ("nvlink_rx_bytes_per_s", rx),
        ("nvlink_errors", errs),
        ("nvlink_up", ups),
    ):
        if v is not None:
            gpu[k] = v
    return Report(host, "b", 1, ts, 1.0, 0, None, gpu, {}, None, None, [], None)


def _expected(reports: list[Report], per_gpu: bool) -> list[tuple]:
    """The link rows as the per-GPU loop made them before issue 13."""
    rows = []
    for r in reports:
        g, ts = r.gpu, int(r.ts * 1e6)
        tx, rx = g.get("nvlink_tx_bytes_per_s"), g.get("nvlink_rx_bytes_per_s")
        errs, ups = g.get("nvlink_errors"), g.get("nvlink_up")
        if tx is None and rx is None:
            continue
        for i, uuid in enumerate(g["uuid"]):
            t = tx[i] if tx is not None else None
            x = rx[i] if rx is not None else None
            e = errs[i] if errs is not None else None
            u = ups[i] if ups is not None else None
            k = max(len(t or ()), len(x or ()))
            if not k:
                continue
            if per_gpu:

                def total(vals):
                    known = [v for v in vals or () if v is not None]
                    return sum(known) if known else None

                known_up = [v for v in u or () if v is not None]
                up = all(known_up) if known_up else None
                rows.append((ts, r.host, "nvlink", uuid, total(t), total(x), total(e), up))
                continue
            cols = [(c or []) + [None] * k for c in (t, x, e, u)]
            for j in range(k):
                rows.append(
                    (ts, r.host, f"nvlink{j}", uuid, cols[0][j], cols[1][j], cols[2][j], cols[3][j])
                )
    return rows


def _built(reports: list[Report], per_gpu: bool) -> list[tuple]:
    b = ReportBatcher("per_gpu" if per_gpu else "per_link")
    for r in reports:
        b.add(r, False)
    links = [x for x in b.take() if x.table == "link_samples"]
    if not links:
        return []
    d = links[0].data.to_pydict()
    ts = links[0].data.column("ts").cast(pa.int64()).to_pylist()
    names = ("host", "port", "gpu_uuid", "tx_bytes_per_s", "rx_bytes_per_s", "errors", "link_up")
    return list(zip(ts, *(d[n] for n in names), strict=True))


def _close(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra[:4] == rb[:4]
        for x, y in zip(ra[4:], rb[4:], strict=True):
            assert (x is None) == (y is None) and (x is None or x == pytest.approx(y))


def test_common_reports_per_link_and_per_gpu():
    tx = [[1.0] * 18, [2.0] * 18]
    reports = [
        _report(
            "h1",
            1_764_000_000.0,
            tx,
            tx,
            [[0] * 18, [1] * 18],
            [[True] * 18, [True] * 17 + [False]],
        ),
        _report("h2", 1_764_000_001.0, tx, None, None, None),
    ]
    for per_gpu in (False, True):
        _close(_built(reports, per_gpu), _expected(reports, per_gpu))
    rows = _built(reports, True)
    assert [r[4] for r in rows] == [18.0, 36.0, 18.0, 36.0] and [r[7] for r in rows][:2] == [
        True,
        False,
    ]


def test_ragged_missing_and_null_lists():
    reports = [
        _report(
            "h1",
            1_764_000_000.0,
            [[1.0, None, 3.0], None, []],
            [[1.0], [5.0, 6.0], None],
            [None, [1, 2, 3, 4], [7]],
            [[True, None], [None, None], None],
        ),
        _report("h2", 1_764_000_002.0, None, [[None, None]], [[None]], [[False]]),
        _report("h3", 1_764_000_003.0, [[], []], [[], []], None, None),
    ]
    for per_gpu in (False, True):
        got = _built(reports, per_gpu)
        _close(got, _expected(reports, per_gpu))
        assert got  # the reference makes rows here, so must the batcher


links = st.one_of(
    st.none(),
    st.lists(st.one_of(st.none(), st.floats(0, 1e13)), max_size=5),
)
ints = st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(0, 2**40)), max_size=5))
bools = st.one_of(st.none(), st.lists(st.one_of(st.none(), st.booleans()), max_size=5))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.integers(1, 3).flatmap(
            lambda n: st.tuples(
                st.one_of(st.none(), st.lists(links, min_size=n, max_size=n)),
                st.lists(links, min_size=n, max_size=n),
                st.one_of(st.none(), st.lists(ints, min_size=n, max_size=n)),
                st.one_of(st.none(), st.lists(bools, min_size=n, max_size=n)),
            )
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_fuzz_link_rows_match_the_per_gpu_rules(parts, per_gpu):
    reports = [
        _report(f"h{i}", 1_764_000_000.0 + i, tx, rx, errs, ups)
        for i, (tx, rx, errs, ups) in enumerate(parts)
    ]
    _close(_built(reports, per_gpu), _expected(reports, per_gpu))


def test_error_sums_beyond_int64_fail_the_take_as_before():
    big = [[2**62] * 4]
    r = _report("h1", 1_764_000_000.0, [[1.0] * 4], None, big, None)
    b = ReportBatcher("per_gpu")
    b.add(r, False)
    with pytest.raises(OverflowError):
        b.take()
