"""The daemon's own /metrics and `fleettui status`, on a real daemon process.

The exposition is parsed by prometheus_client's parser and scraped by a real
Prometheus; `fleettui status` shows the same for a person, with a failing
source's error; with no daemon it says so in one line."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleettui.config import ConfigError, DaemonOptions, parse_config
from tests.services.prometheus import ScrapeTarget, free_port, prometheus_server  # noqa: F401


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def daemon(tmp_path, fleettui):
    """`fleettui daemon` with the simulated fleet, an mqtt source whose broker is down,
    and metrics on a fixed free loopback port."""
    port = free_port()
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        f'[daemon]\ndb = "{tmp_path / "fleet.duckdb"}"\nmetrics_listen = "127.0.0.1:{port}"\n'
        "status_interval_s = 0\n\n"
        '[[sources]]\nkind = "sim"\ninterval_s = 0.5\n\n'
        f'[[sources]]\nkind = "mqtt"\nbroker = "127.0.0.1:{closed_port()}"\n'
        'reconnect_max_s = 0.5\nclient_id = "metrics-test"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleettui.cli", "daemon", "--config", str(cfg)],
        env=fleettui.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    info = tmp_path / "fleet.duckdb.daemon.json"
    try:
        deadline = time.monotonic() + 30
        while not info.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        assert json.loads(info.read_text())["metrics"] == f"127.0.0.1:{port}"
        yield f"127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def scrape(address: str) -> dict[str, list]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(m, name, **labels):
    (v,) = [v for lab, v in m[name] if all(lab.get(k) == x for k, x in labels.items())]
    return v


def wait_until(check, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.integration
def test_metrics_parse_and_report_rows_sources_failures_and_alerts(daemon):
    address, _ = daemon
    m = wait_until(
        lambda: (
            (m := scrape(address))
            and any(
                lab.get("source") == "mqtt"
                for lab, _ in m.get("fleettui_source_last_error_info", [])
            )
            and value(m, "fleettui_source_runs_total", source="sim") >= 3
            and sum(
                v
                for lab, v in m.get("fleettui_rows_written_total", [])
                if lab.get("table") == "gpu_samples"
            )
            >= 304
            and m
        ),
        60,
        "sim runs written and the mqtt failure",
    )
    assert value(m, "fleettui_rows_written_total", table="gpu_samples") >= 304
    assert value(m, "fleettui_source_run_failures_total", source="sim") == 0
    assert value(m, "fleettui_source_interval_seconds", source="sim") == 0.5
    assert value(m, "fleettui_source_run_failures_total", source="mqtt") >= 1
    (err,) = [lab["error"] for lab, _ in m["fleettui_source_last_error_info"]]
    assert err.startswith("broker 127.0.0.1:") and "refused" in err.lower()
    assert value(m, "fleettui_source_last_success_time_seconds", source="mqtt") == 0
    assert value(m, "fleettui_mqtt_reports_received_total", source="mqtt") == 0
    assert value(m, "fleettui_write_queue_capacity") > 0
    assert value(m, "fleettui_alerts", state="firing", severity="critical") >= 0
    assert value(m, "fleettui_store_retention_hours") == DaemonOptions().retention_h
    assert value(m, "fleettui_store_file_bytes") > 0
    assert time.time() - 60 < value(m, "fleettui_start_time_seconds") < time.time()
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        first = r.read()
    later = scrape(address)  # counters only go up
    assert value(later, "fleettui_source_runs_total", source="sim") >= value(
        m, "fleettui_source_runs_total", source="sim"
    )
    assert first.count(b"# TYPE") >= 25
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"http://{address}/other", timeout=5)


@pytest.mark.integration
def test_a_real_prometheus_scrapes_the_daemon(daemon, prometheus_server):  # noqa: F811
    address, _ = daemon
    prom = prometheus_server([ScrapeTarget(address)], interval_s=1.0)
    assert prom.wait_for_series('up{job="fleettui-test"} == 1', 1) == 1
    assert prom.wait_for_series('fleettui_rows_written_total{table="gpu_samples"} > 0', 1) == 1
    assert prom.wait_for_series('fleettui_source_run_failures_total{source="mqtt"} > 0', 1) == 1
    # nothing in the exposition that Prometheus dropped or refused
    with urllib.request.urlopen(f"{prom.url}/api/v1/targets", timeout=5) as r:
        (target,) = json.load(r)["data"]["activeTargets"]
    assert target["health"] == "up" and target["lastError"] == ""


@pytest.mark.integration
def test_status_shows_the_daemon_for_a_person(daemon, fleettui, tmp_path):
    address, _ = daemon
    wait_until(
        lambda: any(
            lab.get("source") == "mqtt"
            for lab, _ in scrape(address).get("fleettui_source_last_error_info", [])
        ),
        30,
        "the mqtt failure",
    )
    res = fleettui("status", "--db", str(tmp_path / "fleet.duckdb"), "--interval", "1", check_rc=0)
    out = res.stdout
    assert res.stderr == ""
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "pid" in lines["daemon"] and "quack:127.0.0.1:" in lines["daemon"]
    assert f"metrics http://{address}/metrics" in lines["up"]
    keep_h = DaemonOptions().retention_h
    assert "on disk" in lines["store"] and f"at the {keep_h:g} h retention" in lines["store"]
    rate = float(lines["writes"].split()[1].replace(",", ""))
    assert rate > 100, out  # 304 GPUs every 0.5 s: hundreds of rows a second
    table = [ln for ln in out.splitlines() if ln.startswith("          ")]
    (sim,) = [ln for ln in table if ln.split()[0] == "sim"]
    (mqtt,) = [ln for ln in table if ln.split()[0] == "mqtt"]
    assert sim.split()[1] == "healthy"
    assert mqtt.split()[1] == "failing" and "never" in mqtt and "broker 127.0.0.1:" in mqtt
    assert "alerts" in lines
    assert lines["mqtt"].startswith("mqtt      mqtt: 0 reports/s; 0 received")
    print(out)
    once = fleettui(
        "status", "--db", str(tmp_path / "fleet.duckdb"), "--interval", "0", check_rc=0
    ).stdout
    assert "writes    - rows/s;" in once and "rows/s    " not in once


def test_status_without_a_daemon_is_one_line_and_exit_1(fleettui, tmp_path):
    res = fleettui("status", "--db", str(tmp_path / "none.duckdb"))
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("fleettui status: error: no daemon running for ")
    res = fleettui("status", "--metrics", f"127.0.0.1:{closed_port()}", "--interval", "0")
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "no answer from the daemon's metrics" in res.stderr


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:9465", "10.1.2.3:9465", "example.com:1", "9465", "127.0.0.1:99999"]
)
def test_metrics_listen_must_be_a_loopback_host_port(listen):
    with pytest.raises(ConfigError, match=r"fleet.toml \[daemon\]: metrics_listen"):
        parse_config({"daemon": {"metrics_listen": listen}}, "fleet.toml")
    assert parse_config({"daemon": {"metrics_listen": ""}}, "f").daemon.metrics_listen == ""
    assert parse_config({"daemon": {"metrics_listen": "[::1]:0"}}, "f").daemon


def test_status_never_prints_control_characters_from_the_fleet():
    from fleettui.status_cli import render

    hostile = "\x1b]0;pwned\x07\x1b[2J"
    m = {
        "fleettui_source_runs_total": [({"source": "evil" + hostile}, 3.0)],
        "fleettui_source_last_error_info": [
            ({"source": "evil" + hostile, "error": "boom" + hostile}, 1.0)
        ],
        "fleettui_rejects_total": [({"source": "mqtt", "reason": hostile}, 2.0)],
    }
    out = render(m, m, 1.0, "127.0.0.1:1", [], time.time())
    assert "\x1b" not in out and "\x07" not in out
    assert "boom\\x1b]0;pwned\\x07" in out
