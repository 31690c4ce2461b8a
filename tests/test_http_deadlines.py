"""Deadlines, not per-read timeouts: outbound requests against real local servers
that trickle, hang, send huge bodies or lie about their length."""

from __future__ import annotations

import asyncio
import time

import pytest

from collectors import http_get
from collectors.prometheus_source import PrometheusOptions, PrometheusSource
from collectors.scrape_source import ScrapeOptions, ScrapeSource, ScrapeTarget
from collectors.sim.source import SimSource
from fleettui.runtime import Runtime
from storage.store import Store
from tests.hostile_http import OK_BODY, HostileServer

MIB = 1 << 20


@pytest.fixture
async def hostile():
    s = await HostileServer(trickle_s=3.0).start()
    yield s
    await s.stop()


async def timed_get(
    url: str, deadline_s: float, max_bytes: int = MIB
) -> tuple[http_get.Response, float]:
    t0 = time.monotonic()
    r = await http_get.get(url, deadline_s=deadline_s, max_bytes=max_bytes)
    return r, time.monotonic() - t0


async def test_a_trickling_body_is_cut_at_the_deadline(hostile):
    """One byte every 3 s never trips a per-read timeout; the deadline cuts it at 2 s."""
    r, took = await timed_get(hostile.url + "/trickle", 2.0)
    assert 1.9 < took < 2.8
    assert r.body is None
    assert r.reason == (
        f"{hostile.url}/trickle: no complete answer within the 2 s deadline "
        "(after 1 of 100000 body bytes)"
    )


@pytest.mark.parametrize("path", ["/trickle-headers", "/hang"])
async def test_headers_that_never_come_are_cut_at_the_deadline(hostile, path):
    r, took = await timed_get(hostile.url + path, 1.0)
    assert 0.9 < took < 1.8
    assert r.body is None and r.status is None
    assert (
        r.reason == f"{hostile.url}{path}: no complete answer within the 1 s deadline "
        "(waiting for the answer)"
    )


async def test_a_declared_length_over_the_limit_is_refused_before_reading(hostile):
    r, took = await timed_get(hostile.url + "/huge-declared", 5.0)
    assert took < 1.0 and r.body is None
    assert r.reason == (
        f"{hostile.url}/huge-declared: body of {200 * MIB} bytes over the {MIB}-byte limit, "
        "not read"
    )


@pytest.mark.parametrize("path", ["/huge-chunked", "/huge-unframed"])
async def test_an_endless_body_is_cut_at_the_limit_while_streaming(hostile, path):
    r, took = await timed_get(hostile.url + path, 5.0)
    assert took < 2.0
    assert r.reason == f"{hostile.url}{path}: body over {MIB} bytes, cut"
    assert len(r.body) == MIB  # what came up to the limit, for the parser
    await asyncio.sleep(0.2)
    assert hostile.sent[path] < 16 * MIB  # we stopped reading: the server stopped sending


async def test_lying_content_lengths(hostile):
    short, _ = await timed_get(hostile.url + "/short", 2.0)
    assert short.reason == f"{hostile.url}/short: connection closed after 100 of 1000 bytes"
    assert short.body == OK_BODY[:100]
    long, _ = await timed_get(hostile.url + "/long", 2.0)
    assert long.reason is None and long.body == OK_BODY[:30]  # what the length said, no more


async def test_scrape_source_reasons_name_the_target_and_the_deadline(hostile):
    paths = ["/ok", "/trickle", "/hang", "/huge-declared", "/huge-chunked"]
    src = ScrapeSource(
        ScrapeOptions(name="hostile", timeout_s=1.5, max_body_bytes=MIB),
        [ScrapeTarget(hostile.url + p) for p in paths],
    )
    from datetime import UTC, datetime

    t0 = time.monotonic()
    g = await src.gather(datetime.now(UTC))
    assert time.monotonic() - t0 < 4.0
    u = hostile.url
    assert (
        f"{u}/trickle: no complete answer within the 1.5 s deadline (after 1 of 100000 body bytes)"
        in g.skipped
    )
    assert (
        f"{u}/hang: no complete answer within the 1.5 s deadline (waiting for the answer)"
        in g.skipped
    )
    assert (
        f"{u}/huge-declared: body of {200 * MIB} bytes over the {MIB}-byte limit, not read"
        in g.skipped
    )
    assert f"{u}/huge-chunked: body over {MIB} bytes, cut" in g.skipped
    gpus = {
        u for b in g.batches if b.table == "gpu_samples" for u in b.data["gpu_uuid"].to_pylist()
    }
    assert gpus == {"GPU-ok", "GPU-huge"}  # the cut body's whole lines are kept
    await src.close()


async def test_a_stuck_source_is_recorded_and_the_others_keep_their_schedule(hostile):
    """Issue 11: a trickling upstream held threads the store writer shared: 1 simulator
    tick stored in 90 s, no error recorded, SIGTERM hung. Now: its own deadline, its
    own executor, its failure in collector_runs, and the sim ticks on."""
    scrape = ScrapeSource(
        ScrapeOptions(name="stuck", interval_s=1.0, timeout_s=2.0),
        [ScrapeTarget(hostile.url + p) for p in ("/trickle", "/hang", "/trickle-headers")],
    )
    sim = SimSource(name="sim", interval_s=0.5)
    store = Store.open(":memory:")
    stop = asyncio.Event()
    run = asyncio.create_task(Runtime(store, [scrape, sim]).run(stop))
    await asyncio.sleep(6.0)
    t0 = time.monotonic()
    stop.set()
    await run
    assert time.monotonic() - t0 < 1.5  # stop does not wait for the stuck peer
    cur = store.cursor()
    sim_runs = cur.execute(
        "SELECT count(*) FROM collector_runs WHERE collector = 'sim' AND ok"
    ).fetchone()[0]
    assert sim_runs >= 10  # every 0.5 s for 6 s, whatever the stuck source does
    ticks = cur.execute("SELECT count(DISTINCT ts) FROM gpu_samples").fetchone()[0]
    assert ticks >= 10
    errors = [
        r[0]
        for r in cur.execute(
            "SELECT error FROM collector_runs WHERE collector = 'stuck' ORDER BY ts"
        ).fetchall()
    ]
    assert errors, "the stuck source's runs are recorded"
    assert all(
        f"{hostile.url}/trickle: no complete answer within the 2 s deadline" in e for e in errors
    )
    store.close()


async def test_prometheus_source_requests_have_a_deadline(hostile):
    """The Prometheus API behind a trickling proxy: each query is cut at the deadline."""
    src = PrometheusSource(
        PrometheusOptions(url=hostile.url + "/trickle", timeout_s=1.5, backfill_s=0)
    )
    from datetime import UTC, datetime

    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as info:
        await src.gather(datetime.now(UTC))
    assert time.monotonic() - t0 < 3.0
    assert "no complete answer within the 1.5 s deadline" in str(info.value)
    await src.close()
