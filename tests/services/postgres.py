"""A real PostgreSQL server on a free 127.0.0.1 port, for the DuckLake catalog tests.

`Postgres` runs `initdb` into its own directory and starts `postgres` on a
free port with a password (scram) for one user, and stops it again. PostgreSQL
refuses to run as root, and CI runs tests as root: then the server runs as the
`postgres` system user the Debian package creates (its directory is handed to
that user). The binaries are found through `pg_config --bindir`, then
Debian's /usr/lib/postgresql/<version>/bin, then PATH.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "postgresql"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_bindir() -> str | None:
    """The folder holding initdb and postgres, or None."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    # Debian keeps the server binaries out of PATH, one folder per major version
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
        reverse=True,
    )
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for d in candidates:
        if (Path(d) / "initdb").exists() and (Path(d) / "postgres").exists():
            return d
    return None


def require_postgres() -> str:
    """The binaries' folder; skips without PostgreSQL on a developer's machine, fails under CI."""
    found = find_bindir()
    if found:
        return found
    message = f"PostgreSQL (initdb, postgres) is not installed (Debian package `{PACKAGE}`; `make test` installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Postgres:
    def __init__(self, workdir: Path, bindir: str, *, user: str = "fleet"):
        self.bindir = Path(bindir)
        self.dir = Path(workdir)
        self.data = self.dir / "data"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = user
        self.password = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "postgres.log"
        self._run_as: int | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres").pw_uid
            except KeyError:
                pytest.fail("running as root and there is no `postgres` user to run PostgreSQL as")

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq key=value connection string (what DuckDB's postgres extension takes)."""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={dbname}"
        )

    def create_database(self, name: str) -> str:
        """A fresh database (one lake per test); returns its DSN without the password."""
        subprocess.run(
            [str(self.bindir / "psql"), "-q", "-d", self.dsn(), "-c", f'CREATE DATABASE "{name}"'],
            check=True,
            capture_output=True,
        )
        return f"host={self.host} port={self.port} user={self.user} dbname={name}"

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as, -1)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # the server user must reach its data folder
        self._chown(self.dir)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        user = self._run_as
        init = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--pwfile",
                str(pwfile),
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            user=user,
            cwd=self.dir,
        )
        pwfile.unlink()
        if init.returncode:
            # e.g. the server's user cannot enter a parent folder (mkdtemp makes them 0700)
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-1000:]}")
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the server's life
        self._chown(self.log_path)
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-k",
                str(self.dir),  # its unix socket beside the data, not /var/run
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            cwd=self.dir,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", self.host, "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"postgres did not accept connections on {self.host}:{self.port}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: ends any client session
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    bindir = require_postgres()
    # not under pytest's tmp_path: its root folder is 0700, which the `postgres` user
    # (when tests run as root) cannot enter
    workdir = Path(tempfile.mkdtemp(prefix="fleettui-pg-"))
    server = Postgres(workdir, bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
