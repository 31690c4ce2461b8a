"""End to end: the daemon collects the simulated fleet, `fleettui sql` reads it live."""

import json
import signal
import time

import pytest

from collectors.sim.topology import build_fleet

pytestmark = pytest.mark.integration


def _wait_for(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_live_queries_while_the_daemon_runs_then_clean_stop(sim_daemon, fleettui):
    proc, info = sim_daemon.proc, sim_daemon.info
    assert oct(info.stat().st_mode & 0o777) == "0o600"  # the token is for the owner only

    def rows():
        res = fleettui("sql", "--format", "json", "SELECT count(*) AS n FROM gpu_samples")
        return res.returncode == 0 and json.loads(res.stdout)[0]["n"] >= 3 * 304

    _wait_for(rows, 30, "three ticks of samples")
    res = fleettui(
        "sql",
        "--format",
        "json",
        "SELECT (SELECT count(*) FROM gpus) AS gpus, (SELECT count(*) FROM slices) AS slices,"
        " (SELECT count(DISTINCT tenant) FROM assignments) AS tenants,"
        " (SELECT count(DISTINCT gpu_uuid) FROM gpu_samples) AS gpus_seen,"
        " (SELECT count(DISTINCT slice_id) FROM slice_samples) AS slices_seen",
        check_rc=0,
    )
    fleet = build_fleet()
    got = json.loads(res.stdout)[0]
    assert got == {
        "gpus": fleet.n_gpus,
        "slices": len(fleet.slice_id),
        "tenants": 8,
        "gpus_seen": fleet.n_gpus,
        "slices_seen": len(fleet.slice_id),
    }

    # read-only through the daemon: a write is refused and changes nothing
    bad = fleettui("sql", "DELETE FROM gpus")
    assert bad.returncode == 1 and "only SELECT" in bad.stderr
    wrong = fleettui(
        "sql",
        "--connect",
        json.loads(info.read_text())["endpoint"],
        "--token",
        "not-the-token",
        "SELECT 1",
    )
    assert wrong.returncode == 1 and "authentication failed" in wrong.stderr
    assert wrong.stderr.count("\n") == 1  # one line, no traceback

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not info.exists()
    after = fleettui("sql", "--format", "csv", "SELECT count(*) FROM gpus", check_rc=0)
    assert after.stdout.splitlines()[1] == str(fleet.n_gpus)


def test_bad_query_is_one_line_and_non_zero(sim_daemon, fleettui):
    res = fleettui("sql", "SELEC 1")
    assert res.returncode == 1
    assert res.stderr.startswith("fleettui sql: error: syntax error")
    assert "Traceback" not in res.stderr


def test_second_daemon_on_the_same_store_is_refused(sim_daemon, fleettui):
    res = fleettui("daemon", "--sim", "--no-serve", timeout=30)
    assert res.returncode == 1
    assert "in use by another process" in res.stderr
