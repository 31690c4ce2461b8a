"""SIGTERM while the alert engine evaluates: the cycle is saved before the store closes.

Before: the store closed under the evaluation's worker thread and the cycle was
lost (`alerts: saving 3118 alert(s) failed: Connection Error: Connection already
closed!`). A rule whose query takes about a second keeps the engine evaluating
most of the time, so the signal lands during an evaluation.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.integration

SLOW_RULE = """
[[rules]]
name = "SlowRuleAlwaysTrue"
scope = "fleet"
severity = "info"
sql = '''
SELECT 'fleet' AS scope_key, count(*)::DOUBLE AS value
FROM range(40000000) r WHERE r.range % 7 <> 3
'''
"""


def test_sigterm_during_alert_evaluation_saves_the_cycle_and_logs_clean(tmp_path, fleettui):
    (tmp_path / "slow.toml").write_text(SLOW_RULE)
    db = tmp_path / "fleet.duckdb"
    (tmp_path / "fleet.toml").write_text(
        f'[daemon]\ndb = "{db.name}"\nserve_enabled = false\nstatus_interval_s = 0\n\n'
        '[[sources]]\nkind = "sim"\ninterval_s = 3.0\n\n'
        '[alerts]\ninterval_s = 0.2\nrules = ["slow.toml"]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleettui.cli", "daemon", "--config", "fleet.toml"],
        env=fleettui.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        time.sleep(14)  # several evaluations, each ~1 s of query (more on a loaded machine)
        assert proc.poll() is None, proc.stderr.read()
        t_term = time.time()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        stop_s = time.time() - t_term
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert rc == 0, err
    assert stop_s < 20, f"stop took {stop_s:.1f} s"
    # A clean log: the start line and the stop line, nothing between (no
    # "saving N alert(s) failed", no traceback).
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 2, err
    assert lines[0].startswith("fleettui daemon: store ")
    assert lines[1].startswith("fleettui daemon: stopped; ") and "0 batches refused" in lines[1]
    con = duckdb.connect(str(Path(db)), read_only=True)
    try:
        (evaluated,) = con.execute(
            "SELECT epoch(max(evaluated_at)) FROM alerts WHERE rule = 'SlowRuleAlwaysTrue'"
        ).fetchone()
        (last_run,) = con.execute("SELECT epoch(max(ts)) FROM collector_runs").fetchone()
    finally:
        con.close()
    # The cycle under way at SIGTERM was saved: the alert was evaluated within
    # about one cycle of the last collection before the stop.
    assert evaluated is not None and abs(last_run - evaluated) < 6.0, (last_run, evaluated)
