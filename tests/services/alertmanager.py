"""A real Prometheus Alertmanager (Debian package `prometheus-alertmanager`) for tests.

`AlertmanagerServer` writes a minimal config (one receiver that notifies
nobody), starts the binary on a free 127.0.0.1 port with its storage in the
test's tmp dir and gossip off (`--cluster.listen-address=`), waits until it is
ready, and can be stopped and started again on the SAME port (outage tests).
`alerts()` reads what it holds through its own API v2.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import require_binary
from tests.services.prometheus import free_port

# JSON is valid YAML. group_wait 0s: nothing to wait for in tests.
CONFIG = {
    "route": {"receiver": "null", "group_by": ["alertname"], "group_wait": "0s"},
    "receivers": [{"name": "null"}],
}


class AlertmanagerServer:
    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "alertmanager.log"

    def start(self, timeout_s: float = 20.0) -> None:
        binary = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
        cfg = self.dir / "alertmanager.yml"
        cfg.write_text(json.dumps(CONFIG))
        (self.dir / "data").mkdir(exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115  closed with the process
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"alertmanager exited with {self.proc.returncode}: "
                    + self.log_path.read_text()[-500:]
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"alertmanager did not become ready in {timeout_s:g} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def alerts(self, active: bool = True) -> list[dict]:
        """GET /api/v2/alerts (only active alerts by default; resolved ones are dropped)."""
        q = "active=true&silenced=true&inhibited=true&unprocessed=true"
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{q}", timeout=5) as r:
            return json.load(r)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[AlertmanagerServer]:
    server = AlertmanagerServer(tmp_path / "alertmanager")
    server.start()
    try:
        yield server
    finally:
        server.stop()
