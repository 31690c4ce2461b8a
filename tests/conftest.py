import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fleettui(tmp_path):
    """Run the `fleettui` CLI in a subprocess with its data dir in tmp_path."""
    env = {
        **os.environ,
        "FLEETTUI_DB": str(tmp_path / "fleet.duckdb"),
        "PYTHONUNBUFFERED": "1",
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }  # the daemon registry: this test's own

    def run(
        *args: str, timeout: float = 60, check_rc: int | None = None
    ) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [sys.executable, "-m", "fleettui.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=tmp_path,
        )
        if check_rc is not None:
            assert res.returncode == check_rc, (res.stdout, res.stderr)
        return res

    run.env = env
    return run


@dataclass
class RunningDaemon:
    proc: subprocess.Popen
    db: Path
    info: Path  # the daemon's info file (endpoint + token)


@pytest.fixture
def sim_daemon(tmp_path, fleettui):
    """A real `fleettui daemon --sim` on tmp_path's store, ready when its info file
    exists; stopped with SIGTERM (killed if it hangs) after the test."""
    db = tmp_path / "fleet.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleettui.cli", "daemon", "--sim"],
        env=fleettui.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    info = Path(str(db) + ".daemon.json")
    try:
        deadline = time.monotonic() + 30
        while not info.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        assert info.exists(), "the daemon wrote no info file in 30 s"
        yield RunningDaemon(proc, db, info)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
