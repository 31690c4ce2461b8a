"""The CLI as a new user meets it: DuckDB's hints kept in errors, the same text through
the daemon and on a file; EXPLAIN plans whole; the daemon's status line counts hosts."""

from __future__ import annotations

import signal
import subprocess
from datetime import datetime, timedelta

import pytest

from collectors.sim.source import SimSource
from fleettui.daemon import status_line
from fleettui.runtime import Runtime
from storage.reader import error_text
from storage.store import Store

MISTAKES = {
    "SELECT * FROM gpu_sample": "Table with name gpu_sample does not exist! "
    'Did you mean "gpu_samples"?',
    "SELECT utl_pct FROM gpu_samples": 'Referenced column "utl_pct" not found in FROM clause! '
    'Candidate bindings: "util_pct"',
}


def test_error_text_keeps_hints_drops_kind_and_context():
    raw = (
        'Binder Error: Referenced column "x" not found in FROM clause!\n'
        'Candidate bindings: "ts", "host"\n\nLINE 1: SELECT x FROM gpu_samples\n   ^'
    )
    assert error_text(raw) == (
        'Referenced column "x" not found in FROM clause! Candidate bindings: "ts", "host"'
    )
    quack = (
        'Invalid Input Error: Table with name t does not exist!\nDid you mean "tenants"?\n\n'
        "LINE 1: SELECT * FROM t\n ^\n\nLINE 1: SELECT * FROM quack_query(?, ?, token := ?)"
    )
    assert error_text(quack) == 'Table with name t does not exist! Did you mean "tenants"?'
    assert error_text('Parser Error: syntax error at or near "SELEC"') == (
        'syntax error at or near "SELEC"'
    )


def _seed(db):
    store = Store.open(db)
    store.write(
        SimSource(start=datetime(2026, 11, 26, 12)).sample(datetime(2026, 11, 26, 12)).batches
    )
    store.close()


@pytest.mark.parametrize("query", list(MISTAKES))
def test_sql_errors_keep_duckdbs_hints_on_a_file(tmp_path, fleettui, query):
    _seed(tmp_path / "fleet.duckdb")
    res = fleettui("sql", query)
    assert res.returncode == 1
    assert res.stderr.startswith(f"fleettui sql: error: {MISTAKES[query]}")
    assert len(res.stderr.strip().splitlines()) == 1


def test_sql_errors_read_the_same_through_the_daemon(sim_daemon, fleettui):
    for query, want in MISTAKES.items():
        res = fleettui("sql", query)
        assert res.returncode == 1, res.stdout
        assert res.stderr.startswith(f"fleettui sql: error: {want}"), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    plan = fleettui("sql", "EXPLAIN SELECT host, count(*) FROM gpu_samples GROUP BY host")
    assert plan.returncode == 0
    assert "HASH_GROUP_BY" in plan.stdout and "SEQ_SCAN" in plan.stdout
    assert len(plan.stdout.splitlines()) > 10  # the whole plan, not its first line


def test_explain_prints_the_whole_plan_on_a_file(tmp_path, fleettui):
    _seed(tmp_path / "fleet.duckdb")
    res = fleettui("sql", "EXPLAIN SELECT host, count(*) FROM gpu_samples GROUP BY host")
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[0] == "physical_plan" and len(lines) > 10
    # gpu_samples is a view (0019): the plan scans the table under it
    assert any("SEQ_SCAN" in ln for ln in lines) and any("gpu_values" in ln for ln in lines)
    csv = fleettui("sql", "--format", "csv", "EXPLAIN SELECT 1")
    assert csv.stdout.startswith("explain_key,explain_value")  # other formats unchanged


def test_status_line_counts_hosts_not_merges():
    store = Store.open(":memory:")
    src = SimSource(start=datetime(2026, 11, 26, 12))
    runtime = Runtime(store, [])
    for k in range(5):
        runtime._write(src.sample(datetime(2026, 11, 26, 12) + timedelta(seconds=k)).batches)
    hosts = store.cursor().execute("SELECT count(*) FROM hosts").fetchone()[0]
    gpus = store.cursor().execute("SELECT count(*) FROM gpus").fetchone()[0]
    line = status_line(runtime, store)
    assert f"hosts {hosts}," in line and f"gpus {gpus}" in line
    assert f"gpu_samples {5 * gpus:,}" in line
    assert runtime.stats.rows_by_table["hosts"] > hosts  # what the old line printed


def test_daemon_stop_line_names_hosts_once(sim_daemon):
    import time

    time.sleep(3)
    sim_daemon.proc.send_signal(signal.SIGTERM)
    try:
        _, err = sim_daemon.proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        sim_daemon.proc.kill()
        raise
    stopped = [ln for ln in err.splitlines() if "stopped;" in ln]
    assert stopped and "known: " in stopped[0] and "hosts 56," in stopped[0], err[-800:]
