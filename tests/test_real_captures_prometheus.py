"""The real captures through a real Prometheus (1 s scrapes) and the "prometheus"
source: DCGM blanks and GDDR MEMORY_TEMP 0 are NULL, node_exporter's IB output
makes per-device links and a hosts row, inference servers make endpoints, and a
target Prometheus cannot parse is a recorded failure naming job/instance."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from collectors.prometheus_source import PrometheusOptions, PrometheusSource
from storage.store import Store
from tests.services.prometheus import ScrapeTarget, prometheus_server  # noqa: F401
from tests.test_real_captures import IB, Files
from tests.upstream_samples import ours, scrapes_in, upstream

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]


async def test_real_captures_through_prometheus(prometheus_server):  # noqa: F811
    l4 = upstream("dcgm-exporter", "cncf-kops-1xL4", "dcgm-exporter-full-default-counters.prom")
    readme = upstream("dcgm-exporter", "nvidia-readme", "docker-quickstart-memory-temp-blank.txt")
    vllm_old = scrapes_in(ours("vllm-0.8-v0-tpot-only.txt"))
    files = Files(
        {
            "/l4": l4.read_text(),
            "/readme": readme.read_text(),
            "/ib": upstream(*IB).read_text(),
            "/vllm": vllm_old[0],
            "/bad": "this is not the exposition format\n",
        }
    )
    try:
        addr = f"127.0.0.1:{files.port}"
        prom = prometheus_server(
            [
                ScrapeTarget(addr, "/l4", {"instance": "l4-node"}),
                ScrapeTarget(addr, "/readme", {"instance": "readme-node"}),
                ScrapeTarget(addr, "/ib", {"instance": "ib-host-1"}),
                ScrapeTarget(
                    addr,
                    "/vllm",
                    {"instance": "vllm-node", "service": "chat", "namespace": "team-a"},
                ),
                ScrapeTarget(addr, "/bad", {"instance": "bad-node"}),
            ]
        )
        assert prom.wait_for_series("DCGM_FI_DEV_MEMORY_TEMP", 2) == 2
        assert prom.wait_for_series("node_infiniband_state_id", 3) == 3
        assert prom.wait_for_series('up{instance="bad-node"} == 0', 1) == 1
        src = PrometheusSource(PrometheusOptions(url=prom.url, interval_s=2.0, backfill_s=0))
        store = Store.open(":memory:")
        try:
            g = await src.gather(datetime.now(UTC))
            store.write(g.batches)
            files.bodies["/vllm"] = vllm_old[1]
            # Prometheus has scraped the second vLLM text (a sleep missed it under load)
            second = "vllm:time_per_output_token_seconds_count > 8000"
            assert await asyncio.to_thread(prom.wait_for_series, second, 1) == 1
            g2 = await src.gather(datetime.now(UTC))
            store.write(g2.batches)
        finally:
            await src.close()
        q = store.con.execute
        temps = dict(q("SELECT host, mem_temp_c FROM gpu_samples").fetchall())
        # 9223372036854775794 (README) and 0 on the GDDR L4: both "no value"
        assert temps == {"readme-node": None, "i-030791dc5a37cd257": None}
        assert q(
            "SELECT max(sm_clock_mhz) FROM gpu_samples WHERE gpu_uuid = "
            "'GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52'"
        ).fetchone() == (139.0,)
        assert dict(
            q("SELECT port, kind FROM link_samples WHERE host = 'ib-host-1'").fetchall()
        ) == {"mlx4_0/1": "ib", "mlx4_0/2": "ib", "i40iw0/1": "iwarp"}
        assert "ib-host-1" in {h for (h,) in q("SELECT host FROM hosts").fetchall()}
        (err,) = q(
            "SELECT error FROM collector_runs WHERE NOT ok AND collector LIKE "
            "'prometheus fleettui-test/bad-node'"
        ).fetchone()
        assert err.startswith("target fleettui-test/bad-node is down in Prometheus (up == 0): ")
        assert q("SELECT endpoint, tenant, model, itl_target_ms FROM endpoints").fetchall() == [
            ("chat", "team-a", "meta-llama/Llama-3.1-8B-Instruct", None)
        ]
        itl = q("SELECT itl_p50_ms, itl_p99_ms FROM latency_samples").fetchall()
        assert itl == [(pytest.approx(25.0), pytest.approx(75.0))]
        assert g.dropped and any("DCGM blank" in k for k in g.dropped)
        # node_exporter goes away: a recorded failure, and its host is not refreshed (goes stale)
        (seen,) = q("SELECT last_seen FROM hosts WHERE host = 'ib-host-1'").fetchone()
        gone_at = datetime.now(UTC).replace(tzinfo=None)
        files.bodies.pop("/ib")
        assert prom.wait_for_series('up{instance="ib-host-1"} == 0', 1) == 1
        src = PrometheusSource(PrometheusOptions(url=prom.url, interval_s=2.0, backfill_s=0))
        try:
            for _ in range(2):  # the second gather is past the range window of the old samples
                g4 = await src.gather(datetime.now(UTC))
                store.write(g4.batches)
                await asyncio.sleep(2.5)
        finally:
            await src.close()
        (after,) = q("SELECT last_seen FROM hosts WHERE host = 'ib-host-1'").fetchone()
        assert seen <= after <= gone_at  # never refreshed past the last real sample
        (err,) = q(
            "SELECT error FROM collector_runs WHERE NOT ok AND collector = "
            "'prometheus fleettui-test/ib-host-1' LIMIT 1"
        ).fetchone()
        assert "is down in Prometheus (up == 0)" in err and "404" in err
        # A Prometheus that does not serve /api/v1/targets (managed services): `up == 0`
        proxy = NoTargetsProxy(prom.url)
        try:
            src = PrometheusSource(PrometheusOptions(url=proxy.url, interval_s=2.0, backfill_s=0))
            try:
                g3 = await src.gather(datetime.now(UTC))
            finally:
                await src.close()
        finally:
            proxy.close()
        runs = {
            r["collector"]: r
            for b in g3.batches
            if b.table == "collector_runs"
            for r in b.data.to_pylist()
        }
        assert set(runs) == {
            "prometheus fleettui-test/bad-node",
            "prometheus fleettui-test/ib-host-1",
        }
        run = runs["prometheus fleettui-test/bad-node"]
        assert not run["ok"] and run["error"].startswith(
            "target fleettui-test/bad-node is down in Prometheus (up == 0); no lastError"
        )
    finally:
        files.close()


class NoTargetsProxy:
    """Forwards GETs to a real Prometheus, except /api/v1/targets (404)."""

    def __init__(self, upstream_url: str):
        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/api/v1/targets"):
                    self.send_response(404)
                    self.end_headers()
                    return
                with urllib.request.urlopen(upstream_url + self.path, timeout=10) as r:
                    body, status = r.read(), r.status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
