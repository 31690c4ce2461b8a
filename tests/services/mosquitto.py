"""A real Mosquitto broker on a free 127.0.0.1 port, for integration tests and benchmarks.

`Broker` writes its own config, starts `mosquitto -c`, waits until the port
accepts connections, and can be stopped and started again on the SAME port
(outage tests). The `mosquitto` fixture yields a started broker and stops it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import require_binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        persistence: bool = False,
        max_queued_messages: int = 100_000,
        tls: bool = False,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        client_certs: bool = False,
    ):
        self.binary: str | None = None
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.persistence = persistence
        self.max_queued_messages = max_queued_messages
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "mosquitto.log"
        self.tls = tls
        self.users = users or {}
        self.acl = acl  # text of a Mosquitto acl_file (with users: who may use which topics)
        self.ca_path = self.dir / "ca.crt"  # with tls: the CA clients verify the broker with
        self.client_certs = client_certs  # with tls: clients must show a certificate of the CA

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            f"max_queued_messages {self.max_queued_messages}",
            "max_inflight_messages 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type subscribe",  # "<client id> <qos> <filter>": tests wait on it
        ]
        if self.tls:
            self._make_certs()
            lines += [
                f"cafile {self.ca_path}",
                f"certfile {self.dir / 'server.crt'}",
                f"keyfile {self.dir / 'server.key'}",
            ]
            if self.client_certs:
                lines.append("require_certificate true")
        if self.users:
            pw = self.dir / "passwords"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pw), user, password],
                    check=True,
                    capture_output=True,
                )
            lines[1] = "allow_anonymous false"
            lines.append(f"password_file {pw}")
        if self.acl is not None:
            acl = self.dir / "acl"
            acl.write_text(self.acl)
            lines.append(f"acl_file {acl}")
        if os.geteuid() == 0:
            # started as root, mosquitto switches to user "mosquitto", which cannot write
            # (persistence, log) into a root-owned temporary directory
            lines.append("user root")
        path = self.dir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _make_certs(self) -> None:
        """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
        if self.ca_path.exists():
            return
        d = self.dir

        def run(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        run(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=fleettui-test-ca",
        )
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        )
        run(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        )

    def client_cert(self, name: str) -> tuple[Path, Path]:
        """A client certificate and key signed by the broker's CA: (cert, key)."""
        self._make_certs()
        d = self.dir
        subprocess.run(
            [
                "openssl",
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.csr",
                "-subj",
                f"/CN={name}",
            ],
            check=True,
            capture_output=True,
            cwd=d,
        )
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                f"{name}.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                f"{name}.crt",
                "-days",
                "2",
            ],
            check=True,
            capture_output=True,
            cwd=d,
        )
        return d / f"{name}.crt", d / f"{name}.key"

    def start(self, timeout_s: float = 10.0) -> None:
        if self.binary is None:
            self.binary = require_binary("mosquitto", "mosquitto")
        conf = self._config()
        deadline = time.monotonic() + timeout_s
        while True:  # after a stop the port can take a moment to be free again
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if self._wait_ready(deadline):
                return
            err = self._stop_proc()
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start on {self.address}: {err}")
            time.sleep(0.2)

    def _wait_ready(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def _stop_proc(self) -> str:
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        return err.strip()[-300:]

    def stop(self) -> None:
        self._stop_proc()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_persistent(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "mosquitto", persistence=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
