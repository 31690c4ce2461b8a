"""Two `fleettui daemon` processes share the agents through one MQTT 5 shared
subscription and write one DuckLake (catalog in a real PostgreSQL, data in a shared
directory); SQL over the lake finds every report stored exactly once, even the ones
the broker delivered twice, and the app on the lake shows every host."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time

import aiomqtt
import pytest

from collectors.mqtt_source import MqttOptions, MqttSource
from collectors.nvml.report import encode_status
from collectors.sim.topology import build_fleet
from fleettui.sql_cli import open_config_reader
from fleettui.tui.app import FleetApp
from fleettui.tui.widgets.rack_grid import RackGrid
from storage.lake import SAMPLE_KEYS
from storage.reader import LocalReader
from storage.store import Store
from tests.services.mosquitto import Broker, mosquitto  # noqa: F401  (fixture)
from tests.services.postgres import Postgres, postgres  # noqa: F401  (fixture)
from tests.test_mqtt_source import NOW, reports, states  # noqa: F401  (fixture)
from tests.tui_support import settle

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_HOSTS = 6
N_REPORTS = 12  # per host
N_REPEATS = 24  # reports published a second time (QoS 1 redelivery, agent replay)


def daemon_config(tmp_path, name, dsn, pw_file, broker, evaluator):
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[daemon]\ndb = "{tmp_path / name}.duckdb"\nstatus_interval_s = 0\nmetrics_listen = ""\n'
        f'[store]\nbackend = "ducklake"\ncatalog = "{dsn}"\npassword_file = "{pw_file}"\n'
        f'data_path = "{tmp_path / "lake"}"\nevaluator = {"true" if evaluator else "false"}\n'
        # both daemons run the same source (same name): they are one collector, split
        f'[[sources]]\nkind = "mqtt"\nname = "agents"\nbroker = "{broker}"\n'
        f'shared_group = "daemons"\nclient_id = "daemon-{name}"\nflush_interval_s = 0.2\n'
        "max_age_s = 1e9\nreconnect_max_s = 1.0\n"
    )
    return path


class Daemon:
    def __init__(self, config, cwd):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleettui.cli",
                "-v",
                "daemon",
                "--config",
                str(config),
                "--no-serve",
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)[-3000:]
            assert time.monotonic() < deadline, f"no {text!r}: " + "".join(self.lines)[-3000:]
            time.sleep(0.1)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=10)
        return "".join(self.lines)


def reference_counts(hosts, payloads) -> dict[str, int]:
    """Rows per table when one MQTT source decodes every report once into a file store."""
    src = MqttSource(MqttOptions(name="agents", max_age_s=1e9), clock=lambda: NOW)
    for seq in range(N_REPORTS):
        for h in hosts:
            src.handle(f"fleettui/{h}/report", payloads[h][seq])
    batches, _, n = src.take_batches()
    assert n == N_HOSTS * N_REPORTS
    store = Store.open(":memory:")
    try:
        store.write(batches)
        tables = sorted({b.table for b in batches} & (set(SAMPLE_KEYS) | {"hosts", "gpus"}))
        assert "report_seqs" in tables  # one row per report stored
        assert "link_samples" in tables and "gpu_samples" in tables
        return {
            t: store.cursor().execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables
        }
    finally:
        store.close()


def lake_skipped(log: str) -> int:
    m = re.search(r"stopped; .*lake: ([\d,]+) rows already stored", log)
    return int(m.group(1).replace(",", "")) if m else -1


def appended_gpu_rows(log: str) -> int:
    m = re.search(r"stopped; .*?gpu_samples ([\d,]+)", log)
    return int(m.group(1).replace(",", "")) if m else 0


async def test_two_daemons_on_one_lake_store_each_report_once(
    mosquitto: Broker,  # noqa: F811
    postgres: Postgres,  # noqa: F811
    states,  # noqa: F811
    tmp_path,
):
    dsn = postgres.create_database("fleet_lake")
    pw_file = tmp_path / "catalog.password"
    pw_file.write_text(postgres.password + "\n")
    pw_file.chmod(0o600)
    configs = [
        daemon_config(tmp_path, n, dsn, pw_file, mosquitto.address, evaluator=(n == "a"))
        for n in ("a", "b")
    ]
    # reports of real sim hosts (8 GPUs each) from the fake NVML, as agents send them
    fleet = build_fleet()
    hosts = [h for h in fleet.host if h.startswith("hgx-")][:N_HOSTS]
    gpus = sum(1 for i in fleet.gpu_host_idx if fleet.host[i] in hosts)
    payloads = {
        h: reports(states, h, N_REPORTS, t0=NOW - 200, processes_every=10**6) for h in hosts
    }
    daemons = [Daemon(c, tmp_path) for c in configs]
    logs = ["", ""]
    try:
        for d in daemons:
            d.wait_for("subscribed to $share/daemons/")
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="agents") as pub:
            for h in hosts:
                await pub.publish(
                    f"fleettui/{h}/status",
                    encode_status("online", ts=NOW - 200, boot="b1"),
                    qos=1,
                    retain=True,
                )
            for seq in range(N_REPORTS):
                for h in hosts:
                    await pub.publish(f"fleettui/{h}/report", payloads[h][seq], qos=1)
            # some reports twice more: round robin hands one copy to the daemon that did
            # not see it the first time, whose own dedupe window cannot know it
            for h, seq in [(h, s) for s in range(N_REPORTS) for h in hosts][: N_REPEATS // 2]:
                for _ in range(2):
                    await pub.publish(f"fleettui/{h}/report", payloads[h][seq], qos=1)
        reader = open_config_reader(str(configs[0]))
        assert isinstance(reader, LocalReader)
        try:
            expected = N_REPORTS * gpus
            deadline = time.monotonic() + 120
            while True:
                (n,) = reader.rows("SELECT count(*) FROM gpu_samples")[1][0]
                if n >= expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)  # the repeats, flushed after the originals, too
            _, holders = reader.rows("SELECT daemon FROM lake_evaluator")
            assert len(holders) == 1 and holders[0][0].endswith("a.duckdb"), holders
            # a second evaluating daemon refuses to start, with one line
            third = daemon_config(tmp_path, "c", dsn, pw_file, mosquitto.address, True)
            out = subprocess.run(
                [sys.executable, "-m", "fleettui.cli", "daemon", "--config", str(third)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode != 0 and "already evaluates this lake" in out.stderr
            assert "Traceback" not in out.stderr and postgres.password not in out.stderr
            for i, d in enumerate(daemons):
                logs[i] = d.stop()
            _, [(stored, keys, hosts_seen)] = reader.rows(
                "SELECT count(*), count(DISTINCT (ts, gpu_uuid, source)), count(DISTINCT host) "
                "FROM gpu_samples"
            )
            print(
                f"\nlake: {N_HOSTS * N_REPORTS} reports sent + {N_REPEATS} repeated, "
                f"{stored} GPU samples stored ({expected} expected), "
                f"{stored - keys} duplicates, {hosts_seen} hosts; "
                f"daemon a handed {appended_gpu_rows(logs[0])} to the lake, "
                f"b {appended_gpu_rows(logs[1])}; rows the lake found stored already: "
                f"a {lake_skipped(logs[0])}, b {lake_skipped(logs[1])}"
            )
            assert stored == keys == expected
            assert hosts_seen == N_HOSTS
            assert reader.rows("SELECT count(*) FROM hosts")[1][0][0] == N_HOSTS
            assert reader.rows("SELECT count(*) FROM gpus")[1][0][0] == gpus
            # every table holds what one daemon decoding each report once would write
            ref = reference_counts(hosts, payloads)
            for table, want in ref.items():
                got = reader.rows(f"SELECT count(*) FROM {table}")[1][0][0]
                assert got == want, f"{table}: {got} rows in the lake, {want} expected"
            # redelivered reports reached the other daemon, and the lake kept them out
            assert lake_skipped(logs[0]) + lake_skipped(logs[1]) > 0
            # each daemon took a share of the agents
            assert appended_gpu_rows(logs[0]) > 0 and appended_gpu_rows(logs[1]) > 0
            # one evaluator: only daemon a runs alerts, rollups and retention, and holds
            # the lease while it runs (released on its clean stop above)
            assert reader.rows("SELECT count(*) FROM lake_evaluator")[1][0][0] == 0
            assert "left to the lake's evaluator" in logs[1]
            assert "left to the lake's evaluator" not in logs[0]
            # the app on the lake: every GPU of every host, whichever daemon wrote it
            newest = reader.rows("SELECT max(ts) FROM gpu_samples")[1][0][0]
            app = FleetApp(reader, refresh_s=3600.0, clock=lambda: newest)
            async with app.run_test(size=(120, 40)) as pilot:
                await settle(pilot)
                grid = app.screen.query_one(RackGrid)
                assert grid.table.num_rows == gpus
                assert app.totals["gpus"] == gpus
        finally:
            reader.close()
    finally:
        for i, d in enumerate(daemons):
            out = d.stop()
            logs[i] = logs[i] or out
    for log in logs:
        assert "Traceback" not in log, log[-3000:]
        assert postgres.password not in log
