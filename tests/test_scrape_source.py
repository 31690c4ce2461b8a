"""Pull source "scrape": direct /metrics scrapes, against the simulated exporters and
against an HTTP server that answers every kind of bad scrape."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from collectors.base import build_source
from collectors.options import OptionsError
from collectors.scrape_source import ScrapeOptions, ScrapeSource, ScrapeTarget
from collectors.sim.exporters import SimExporters
from collectors.sim.model import SimModel
from storage.store import Store
from tests.simfleet_truth import HOSTS, truth_inventory


def gpu_lines(uuid: str, host: str, power: float) -> str:
    lab = (
        f'gpu="0",UUID="{uuid}",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",'
        f'Hostname="{host}"'
    )
    return (
        f"DCGM_FI_DEV_POWER_USAGE{{{lab}}} {power}\n"
        f"DCGM_FI_DEV_GPU_TEMP{{{lab}}} 40\n"
        f"DCGM_FI_DEV_GPU_UTIL{{{lab}}} 50\n"
    )


class BadServer:
    """Serves one kind of trouble per path; /ib goes backwards on its second answer."""

    def __init__(self) -> None:
        self.ib_calls = 0
        many = ",".join(f'l{i}="v"' for i in range(60))
        self.bodies = {
            "/good": gpu_lines("GPU-good", "h-good", 100.0),
            "/html": "<!DOCTYPE html><html><body>Sign in</body></html>",
            "/trunc": gpu_lines("GPU-trunc", "h-trunc", 200.0) + 'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUI',
            "/nan": gpu_lines("GPU-nan", "h-nan", 300.0)
            .replace(" 40\n", " NaN\n")
            .replace(" 50\n", " +Inf\n"),
            "/labels60": gpu_lines("GPU-wide", "h-wide", 400.0)
            + f"DCGM_FI_DEV_GPU_TEMP{{{many}}} 1\n",
            "/hist": 'vllm:inter_token_latency_seconds_bucket{model_name="m",le="0.1"} 5\n',
        }
        server = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/slow":
                    time.sleep(2.0)
                if self.path == "/ib":
                    server.ib_calls += 1
                    v = 1e12 if server.ib_calls == 1 else 5e9
                    body = (
                        f'node_infiniband_port_data_transmitted_bytes_total{{device="mlx5_0",'
                        f'port="1"}} {v}\n'
                    )
                elif self.path == "/cut":  # promises more than it sends, then hangs up
                    data = gpu_lines("GPU-cut", "h-cut", 500.0).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data) + 500))
                    self.end_headers()
                    self.wfile.write(data[:-7])
                    self.close_connection = True
                    return
                elif self.path == "/500":
                    self.send_error(500, "exporter broke")
                    return
                else:
                    body = server.bodies.get(self.path, "")
                data = body.encode()
                self.send_response(200)
                ctype = "text/html" if "html" in self.path else "text/plain; version=0.0.4"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *a) -> None:
                return None

        self.httpd = _Server(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Server(ThreadingHTTPServer):
    request_queue_size = 64  # every target is fetched at once


@pytest.fixture
def bad_server():
    s = BadServer()
    yield s
    s.close()


async def test_bad_scrapes_are_skipped_with_reasons_and_the_rest_is_kept(bad_server):
    paths = [
        "/good",
        "/html",
        "/trunc",
        "/nan",
        "/labels60",
        "/hist",
        "/slow",
        "/500",
        "/ib",
        "/cut",
    ]
    src = build_source(
        "scrape",
        {
            "name": "bad",
            "interval_s": 1.0,
            "timeout_s": 0.5,
            "targets": [
                {"url": bad_server.url + p, "labels": {"instance": "node-ib"}} for p in paths
            ],
        },
        "test [[sources]] #1",
    )
    assert isinstance(src, ScrapeSource)
    store = Store.open(":memory:")
    first = await src.gather(datetime.now(UTC))
    store.write(first.batches)
    second = await src.gather(datetime.now(UTC))
    store.write(second.batches)
    reasons = "\n".join(first.skipped)
    u = bad_server.url
    assert f"{u}/html: body is HTML, not metrics; scrape skipped" in reasons
    assert f"{u}/trunc: truncated body, partial last line dropped" in reasons
    n = len(gpu_lines("GPU-cut", "h-cut", 500.0))
    assert f"{u}/cut: connection closed after {n - 7} of {n + 500} bytes" in reasons
    assert f"{u}/cut: truncated body, partial last line dropped" in reasons
    assert (
        f"{u}/nan: DCGM_FI_DEV_GPU_TEMP{{Hostname=h-nan,gpu=0,device=nvidia0}}: value nan, "
        "sample skipped" in reasons
    )
    assert (
        f"{u}/nan: DCGM_FI_DEV_GPU_UTIL{{Hostname=h-nan,gpu=0,device=nvidia0}}: value inf, "
        "sample skipped" in reasons
    )
    assert f"{u}/labels60: DCGM_FI_DEV_GPU_TEMP: 61 labels (limit 40), series skipped" in reasons
    assert f"{u}/slow: no complete answer within the 0.5 s deadline" in reasons
    assert f"{u}/500: HTTP 500" in reasons
    assert "histogram without its +Inf bucket" in reasons
    assert any("counter went backwards (1e+12 -> 5e+09)" in s for s in second.skipped)
    # every good sample of every target was kept
    rows = dict(
        store.cursor()
        .execute("SELECT gpu_uuid, max(power_w) FROM gpu_samples GROUP BY 1")
        .fetchall()
    )
    assert rows == {
        "GPU-good": 100.0,
        "GPU-trunc": 200.0,
        "GPU-nan": 300.0,
        "GPU-wide": 400.0,
        "GPU-cut": 500.0,
    }
    temps = dict(
        store.cursor()
        .execute("SELECT gpu_uuid, max(temp_c) FROM gpu_samples GROUP BY 1")
        .fetchall()
    )
    assert temps["GPU-nan"] is None and temps["GPU-trunc"] == 40.0
    await src.close()


async def test_all_targets_down_is_one_error():
    src = ScrapeSource(ScrapeOptions(timeout_s=0.5), [ScrapeTarget("http://127.0.0.1:9/metrics")])
    with pytest.raises(
        RuntimeError, match=r"scrape: no target answered \(http://127.0.0.1:9/metrics: "
    ):
        await src.gather(datetime.now(UTC))


def test_options_are_validated():
    with pytest.raises(OptionsError, match=r"x: unknown key 'target'"):
        build_source("scrape", {"target": []}, "x")
    with pytest.raises(OptionsError, match=r"x: key 'targets' needs at least one"):
        build_source("scrape", {}, "x")
    with pytest.raises(OptionsError, match=r"x targets\[0\]: url must be http"):
        build_source("scrape", {"targets": [{"url": "ftp://a"}]}, "x")
    with pytest.raises(OptionsError, match=r"x targets\[0\]: missing required key 'url'"):
        build_source("scrape", {"targets": [{"labels": {}}]}, "x")


async def test_direct_scrape_of_the_simulated_exporters_matches_the_simulator():
    model = SimModel(start=float(int(time.time()) - 130))
    with SimExporters(model, HOSTS) as exp:
        targets = [ScrapeTarget(exp.base_url + t.path, t.labels) for t in exp.targets()]
        src = ScrapeSource(ScrapeOptions(name="direct", interval_s=1.0), targets)
        store = Store.open(":memory:")
        for _ in range(3):  # the later gathers go through each target's layout
            g = await src.gather(datetime.now(UTC))
            assert g.skipped == []
            store.write(g.batches)
            time.sleep(1.05)
        # keep-alive: the simulator serves HTTP/1.1, its connections wait for the next gather
        assert len(src._conns) >= 1
        assert all(layout is not None for layout in src._layouts)
        await src.close()
    truth = truth_inventory(model, HOSTS)
    con = store.cursor()
    assert {r[0] for r in con.execute("SELECT gpu_uuid FROM gpus").fetchall()} == set(truth["gpus"])
    assert {r[0] for r in con.execute("SELECT slice_id FROM slices").fetchall()} == set(
        truth["slices"]
    )
    got = {
        (r[0], r[1]): r[2]
        for r in con.execute("SELECT gpu_uuid, slice_id, tenant FROM assignments").fetchall()
    }
    assert got == truth["assignments"]
    n_lat = con.execute(
        "SELECT count(*) FROM latency_samples WHERE itl_p99_ms IS NOT NULL"
    ).fetchone()[0]
    assert n_lat == 10  # two intervals, five endpoints


async def test_runtime_records_skip_reasons_in_collector_runs(bad_server):
    """Config -> scrape source -> Runtime -> store: bad samples are counted and named
    in collector_runs, good ones stored, and the collector keeps gathering."""
    import asyncio
    import tomllib

    from fleettui.config import parse_config
    from fleettui.runtime import Runtime

    toml = f"""
    [[sources]]
    kind = "scrape"
    name = "dcgm-direct"
    interval_s = 0.5
    timeout_s = 0.3
    targets = [{{ url = "{bad_server.url}/nan" }}, {{ url = "{bad_server.url}/html" }},
               {{ url = "{bad_server.url}/good" }}]
    """
    cfg = parse_config(tomllib.loads(toml), "fleet.toml")
    sources = [build_source(s.kind, s.options, s.where) for s in cfg.sources]
    store = Store.open(":memory:")
    stop = asyncio.Event()
    run = asyncio.create_task(Runtime(store, sources).run(stop))
    await asyncio.sleep(1.4)
    stop.set()
    await run
    runs = (
        store.cursor()
        .execute("SELECT ok, skipped, error FROM collector_runs WHERE collector = 'dcgm-direct'")
        .fetchall()
    )
    assert len(runs) >= 2 and all(ok for ok, _, _ in runs)
    assert all(skipped == 3 for _, skipped, _ in runs)  # NaN, +Inf, HTML
    assert "body is HTML" in runs[0][2] and "value nan" in runs[0][2]
    n = store.cursor().execute("SELECT count(DISTINCT gpu_uuid) FROM gpu_samples").fetchone()[0]
    assert n == 2  # GPU-good and GPU-nan (its good fields)


async def test_no_more_than_max_connections_fetches_at_once_and_every_target_is_fetched():
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            time.sleep(0.15)
            n = self.path.strip("/")
            data = gpu_lines(f"GPU-{n}", f"h-{n}", 100.0).encode()
            with lock:
                state["now"] -= 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a) -> None:
            return None

    httpd = _Server(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        targets = [ScrapeTarget(f"{url}/{i}") for i in range(12)]
        src = ScrapeSource(ScrapeOptions(max_connections=3, timeout_s=30), targets)
        g = await src.gather(datetime.now(UTC))
        await src.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert state["most"] == 3  # reached, never passed
    gpus = [b for b in g.batches if b.table == "gpu_samples"][0].data.to_pydict()
    assert sorted(gpus["gpu_uuid"]) == sorted(f"GPU-{i}" for i in range(12))
    assert not g.skipped


async def test_learned_layouts_are_frozen_out_of_gc_scans_once_not_every_gather(bad_server):
    import gc

    gc.unfreeze()
    src = ScrapeSource(ScrapeOptions(), [ScrapeTarget(bad_server.url + "/good")])
    try:
        await src.gather(datetime.now(UTC))  # learns the target's layout
        layout = src._layouts[0]
        assert layout is not None and gc.get_freeze_count() > 0
        assert id(layout.names) not in {id(o) for o in gc.get_objects()}  # frozen
        gc.unfreeze()
        g = await src.gather(datetime.now(UTC))  # read through it: nothing learned
        assert src._layouts[0] is layout and gc.get_freeze_count() == 0
        assert [b.data.to_pydict()["power_w"] for b in g.batches if b.table == "gpu_samples"] == [
            [100.0]
        ]
    finally:
        gc.unfreeze()
        await src.close()
