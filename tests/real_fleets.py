"""Two fleets as real deployments have them, with no simulator in the store, for the
end-to-end app tests and the screenshots (scripts/real_fleet_screenshots.py):

- agent-only: `fleettui agent` on fake NVML for eight hosts -> real Mosquitto -> a
  runtime built from a daemon config whose only source is `mqtt`, placing hosts by a
  topology file, the agent's own `--rack`, and a host-name pattern (one host none of
  them places); tenants from the agents' process cgroups and an assignments file;
  latency targets from the config.
- exporter-only: real dcgm-exporter and vLLM captures (tests/upstream_samples.py)
  served over HTTP -> real Prometheus -> a runtime whose only source is `prometheus`,
  racks from a topology file and from a `rack` target label, tenants from the
  captures' Kubernetes namespaces.

Each returns the filled store and the time the app should look from.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from collectors.nvml.collector import NvmlCollector
from collectors.nvml.fake import SimStates
from collectors.nvml.library import open_library
from collectors.sim.model import SimModel
from fleettui.agent import Agent, AgentOptions
from fleettui.config import load_config
from fleettui.daemon import build_enrichment_from, build_sources, build_tasks
from fleettui.runtime import Runtime, utcnow
from storage.store import Store
from tests.upstream_samples import scrapes_in, upstream

# -- agent-only ---------------------------------------------------------------------------
AGENT_HOSTS = (
    "nvl72-01-t01",
    "nvl72-01-t02",
    "nvl72-01-t03",
    "nvl72-01-t04",  # file
    "hgx-03-n1",  # the agent's own --cluster/--rack
    "hgx-04-n1",
    "hgx-04-n2",  # the host-name pattern
    "rtx-07-n1",
)  # nothing: unplaced
AGENT_TOPOLOGY = """\
[hosts."nvl72-01-t01"]
cluster = "east"
rack = "nvl72-01"
rack_slot = 1
nvlink_domain = "nvl72-01"
model = "GB200 NVL72"
[hosts."nvl72-01-t02"]
cluster = "east"
rack = "nvl72-01"
rack_slot = 2
nvlink_domain = "nvl72-01"
[hosts."nvl72-01-t03"]
cluster = "east"
rack = "nvl72-01"
rack_slot = 3
nvlink_domain = "nvl72-01"
[hosts."nvl72-01-t04"]
cluster = "east"
rack = "nvl72-01"
rack_slot = 4
nvlink_domain = "nvl72-01"
"""
AGENT_PATTERN = r"(?P<rack>hgx-04)-n(?P<slot>[0-9]+)"
# a contract by host + GPU index, resolved when the agent's inventory arrives
AGENT_ASSIGNMENTS = "tenant,host,gpu_index,since\ncontract-co,rtx-07-n1,0,2026-01-01T00:00:00Z\n"


@dataclass
class Fleet:
    store: Store
    at: datetime  # look at the fleet from here (the newest data)
    workdir: Path


def _agent_config(workdir: Path, broker: str) -> Path:
    (workdir / "topology.toml").write_text(AGENT_TOPOLOGY)
    (workdir / "assignments.csv").write_text(AGENT_ASSIGNMENTS)
    cfg = workdir / "fleet.toml"
    cfg.write_text(f"""
[[sources]]
kind = "mqtt"
broker = "{broker}"
flush_interval_s = 0.2
reconnect_max_s = 1.0

[topology]
file = "topology.toml"
host_pattern = '{AGENT_PATTERN}'

[tenancy]
assignments = "assignments.csv"

[latency_targets]
itl_p99_ms = 50.0
ttft_p99_ms = 2000.0
[latency_targets.endpoints."contract-chat"]
tenant = "contract-co"
model = "llama-3.1-8b"
itl_p99_ms = 25.0
""")
    return cfg


async def agent_only_fleet(workdir: Path, broker: str, reports: int = 3) -> Fleet:
    """Agents -> `broker` -> an mqtt-only runtime, until every agent sent `reports`."""
    cfg = load_config(_agent_config(workdir, broker))
    store = Store.open(":memory:")
    # as the daemon runs it: the config's sources, tasks (retention, alert engine), enrichment
    runtime = Runtime(
        store, build_sources(cfg), build_tasks(cfg, store), enrich=build_enrichment_from(cfg)
    )
    src = runtime.sources[0]
    stop_daemon = asyncio.Event()
    daemon = asyncio.create_task(runtime.run(stop_daemon))
    await asyncio.wait_for(src.connected.wait(), 10)
    states = SimStates(SimModel(start=time.time() - 30))
    agents = []
    for host in AGENT_HOSTS:
        extra = {"cluster": "west", "rack": "hgx-03", "rack_slot": 1} if host == "hgx-03-n1" else {}
        o = AgentOptions(
            broker=broker, interval_s=0.5, max_backoff_s=1.0, processes_every=1, **extra
        )
        lib = open_library("fake", host=host, states=states)
        agents.append(Agent(o, NvmlCollector(lib, processes_every=1), host=host))
    stop_agents = asyncio.Event()
    tasks = [asyncio.create_task(a.run(stop_agents)) for a in agents]
    deadline = time.monotonic() + 30
    while not all(a.sent >= reports for a in agents):
        if time.monotonic() > deadline:
            raise AssertionError("agents did not publish in 30 s")
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.6)  # the source's last flush
    stop_agents.set()
    await asyncio.gather(*tasks)
    stop_daemon.set()
    await daemon
    return Fleet(store, utcnow(), workdir)


# -- exporter-only ------------------------------------------------------------------------
# (path served, capture under the upstream folder, extra Prometheus target labels)
CAPTURES = (
    ("/h100", ("dcgm-exporter", "nvidia-aicr-8xH100", "dcgm-exporter-sampled.prom"), {}),
    ("/l4", ("dcgm-exporter", "cncf-kops-1xL4", "dcgm-exporter-full-default-counters.prom"), {}),
    (
        "/t4",
        ("dcgm-exporter", "runai-a100-mig", "t4-2gpu-k8s-pod-labels.txt"),
        {"rack": "k8s-rack-7"},
    ),
    ("/a100-mig", ("dcgm-exporter", "runai-a100-mig", "a100-mig-4-active-workloads.txt"), {}),
    # a scrape config names the server's service and namespace (Kubernetes SD would)
    (
        "/vllm",
        ("vllm", "vllm-v1-qwen2.5-0.5b-kops-metrics.txt"),
        {"service": "qwen-chat", "namespace": "inference"},
    ),
    # node_exporter's own InfiniBand fixture output, as the node "ib-node-1"
    ("/ib", ("node_exporter", "e2e-output-infiniband.txt"), {"instance": "ib-node-1:9100"}),
)
EXPORTER_TOPOLOGY = """\
host,cluster,rack,rack_slot,nvlink_domain,model
gpu-node-1,aicr,h100-rack-1,1,gpu-node-1,HGX H100 8-GPU
i-030791dc5a37cd257,kops,l4-rack-1,3,,g6.xlarge
ib-node-1,aicr,h100-rack-1,2,,
"""
EXPORTER_HOSTS = {
    "gpu-node-1",
    "i-030791dc5a37cd257",
    "nvidia-dcgm-exporter-s228n",
    "nvidia-dcgm-exporter-tl46n",
    "ib-node-1",
}


def exposition(text: str) -> str:
    """The capture without the title a person wrote above it (`4 Active Workloads`)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("#") or "{" in line), 0)
    return "\n".join(lines[start:]) + "\n"


class CaptureServer:
    """The captures over HTTP, each as its first scrape, on a free 127.0.0.1 port."""

    def __init__(self) -> None:
        pages = {
            path: exposition(scrapes_in(upstream(*parts))[0]).encode()
            for path, parts, _ in CAPTURES
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = pages.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *_args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def exporter_config(workdir: Path, prometheus_url: str) -> Path:
    (workdir / "topology.csv").write_text(EXPORTER_TOPOLOGY)
    cfg = workdir / "fleet.toml"
    cfg.write_text(f"""
[[sources]]
kind = "prometheus"
url = "{prometheus_url}"
interval_s = 1.0
backfill_s = 0.0

[topology]
file = "topology.csv"

[latency_targets]
itl_p99_ms = 50.0
ttft_p99_ms = 2000.0
""")
    return cfg


async def exporter_only_fleet(workdir: Path, prometheus_url: str, gathers: int = 3) -> Fleet:
    """A prometheus-only runtime over `prometheus_url` for `gathers` gathers."""
    cfg = load_config(exporter_config(workdir, prometheus_url))
    store = Store.open(":memory:")
    runtime = Runtime(
        store, build_sources(cfg), build_tasks(cfg, store), enrich=build_enrichment_from(cfg)
    )
    stop = asyncio.Event()
    daemon = asyncio.create_task(runtime.run(stop))
    deadline = time.monotonic() + 30
    while runtime.stats.gathers < gathers:
        if time.monotonic() > deadline:
            raise AssertionError("the prometheus source did not gather 3 times in 30 s")
        await asyncio.sleep(0.1)
    stop.set()
    await daemon
    return Fleet(store, utcnow(), workdir)


def wait_for_captures(prom_url: str, timeout_s: float = 30.0) -> None:
    """Until Prometheus has scraped every capture target at least once and up."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout_s
    targets: list = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{prom_url}/api/v1/targets", timeout=2) as r:
            targets = json.load(r)["data"]["activeTargets"]
        if len(targets) == len(CAPTURES) and all(t["health"] == "up" for t in targets):
            return
        time.sleep(0.25)
    raise AssertionError(
        f"Prometheus did not scrape all {len(CAPTURES)} captures up in "
        f"{timeout_s:.0f} s: "
        + "; ".join(f"{t['scrapeUrl']} {t['health']} {t['lastError']}"[:200] for t in targets)
    )
