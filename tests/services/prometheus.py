"""A real Prometheus server (Debian package `prometheus`) for integration tests.

`prometheus_server(targets)` (a fixture factory) writes a config scraping the
given targets every second, starts the binary on a free 127.0.0.1 port with
its storage in the test's tmp dir, waits until it is ready and stops it after
the test. Skips with a clear reason where the binary is missing.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import require_binary


@dataclass
class ScrapeTarget:
    address: str  # host:port
    metrics_path: str = "/metrics"
    labels: dict | None = None


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen
    config_path: Path

    def wait_for_series(self, query: str, count: int, timeout_s: float = 20.0) -> int:
        """Wait until `query` returns at least `count` series; returns how many it saw."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"{self.url}/api/v1/query?query={urllib.request.quote(query)}", timeout=2
                ) as r:
                    seen = len(json.load(r)["data"]["result"])
                if seen >= count:
                    return seen
            except OSError:
                pass
            time.sleep(0.25)
        return seen


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, targets: list[ScrapeTarget], interval_s: float = 1.0) -> None:
    # JSON is valid YAML: no YAML library needed.
    cfg = {
        "global": {
            "scrape_interval": f"{interval_s:g}s",
            "scrape_timeout": f"{interval_s:g}s",
            "evaluation_interval": "15s",
        },
        "scrape_configs": [
            {
                "job_name": "fleettui-test",
                "honor_timestamps": True,
                "static_configs": [
                    {
                        "targets": [t.address],
                        "labels": {"__metrics_path__": t.metrics_path, **(t.labels or {})},
                    }
                    for t in targets
                ],
            }
        ],
    }
    path.write_text(json.dumps(cfg, indent=1))


def start(targets: list[ScrapeTarget], workdir: Path, interval_s: float = 1.0) -> PrometheusServer:
    binary = require_binary("prometheus", "prometheus")
    port = free_port()
    cfg = workdir / "prometheus.yml"
    write_config(cfg, targets, interval_s)
    (workdir / "data").mkdir(exist_ok=True)
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115  closed with the process
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(
                f"prometheus exited with {proc.returncode}: "
                + (workdir / "prometheus.log").read_text()[-500:]
            )
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                if r.status == 200:
                    return PrometheusServer(url, proc, cfg)
        except OSError:
            time.sleep(0.1)
    stop(PrometheusServer(url, proc, cfg))
    raise RuntimeError("prometheus did not become ready in 20 s")


def stop(server: PrometheusServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator:
    """Factory: `prometheus_server(targets, interval_s=1.0) -> PrometheusServer`."""
    started: list[PrometheusServer] = []

    def make(targets: list[ScrapeTarget], interval_s: float = 1.0) -> PrometheusServer:
        d = tmp_path / f"prometheus{len(started)}"
        d.mkdir()
        server = start(targets, d, interval_s)
        started.append(server)
        return server

    yield make
    for s in started:
        stop(s)
