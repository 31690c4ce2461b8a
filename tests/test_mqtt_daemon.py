"""The real thing, as processes: `fleettui daemon` with a `kind = "mqtt"` source and
`fleettui agent` on the fake NVML, through Mosquitto, then SQL on the daemon's file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from storage.store import Store
from tests.services.mosquitto import Broker, mosquitto  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_daemon_stores_what_agents_publish(mosquitto: Broker, tmp_path):  # noqa: F811
    db = tmp_path / "fleet.duckdb"
    config = tmp_path / "fleet.toml"
    config.write_text(
        f'[daemon]\ndb = "{db}"\n\n'
        f'[[sources]]\nkind = "mqtt"\nbroker = "{mosquitto.address}"\n'
        'flush_interval_s = 0.2\nreconnect_max_s = 1.0\nclient_id = "test-daemon"\n'
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "fleettui.cli", "daemon", "--config", str(config), "--no-serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # agents send their inventory on connect (then every 60 reports): start them once
    # the daemon is subscribed, as the test is about what it stores, not about start order
    seen = []
    while not any("fleettui daemon: store" in line for line in seen):
        line = daemon.stderr.readline()
        assert line, f"the daemon stopped before it started: {seen}"
        seen.append(line)
    time.sleep(0.5)
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleettui.agent",
            "--broker",
            mosquitto.address,
            "--nvml",
            "fake",
            "--fake-hosts",
            "hgx-03-n1,rtx-07-n1",
            "--interval",
            "0.5",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(6)
        assert agent.poll() is None and daemon.poll() is None, (agent.stderr, daemon.stderr)
    finally:
        agent.send_signal(signal.SIGINT)
        agent_out = agent.communicate(timeout=30)
        time.sleep(1.0)  # the offline status and the last reports reach the daemon
        daemon.send_signal(signal.SIGTERM)
        daemon_out = daemon.communicate(timeout=30)
    assert agent.returncode == 0, agent_out
    assert daemon.returncode == 0, daemon_out
    store = Store.open(db, read_only=True)
    rows = dict(
        store.con.execute(
            "SELECT host, count(DISTINCT ts) FROM gpu_samples WHERE source = 'nvml' GROUP BY host"
        ).fetchall()
    )
    assert set(rows) == {"hgx-03-n1", "rtx-07-n1"} and min(rows.values()) >= 6
    assert store.con.execute("SELECT host, state FROM host_status ORDER BY host").fetchall() == [
        ("hgx-03-n1", "offline"),
        ("rtx-07-n1", "offline"),
    ]
    assert store.con.execute("SELECT count(*) FROM gpus").fetchone()[0] == 16
    assert store.con.execute("SELECT count(*) FROM rejects").fetchone()[0] == 0
    store.close()
