import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fleettui(tmp_path):
    """Run the `fleettui` CLI in a subprocess with its data dir in tmp_path."""
    env = {**os.environ, "FLEETTUI_DB": str(tmp_path / "fleet.duckdb"), "PYTHONUNBUFFERED": "1"}

    def run(*args: str, timeout: float = 60, check_rc: int | None = None) -> subprocess.CompletedProcess:
        res = subprocess.run([sys.executable, "-m", "fleettui.cli", *args], capture_output=True,
                             text=True, env=env, timeout=timeout, cwd=tmp_path)
        if check_rc is not None:
            assert res.returncode == check_rc, (res.stdout, res.stderr)
        return res

    run.env = env
    return run
