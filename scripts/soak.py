"""Soak: a simulated fleet through agents -> Mosquitto -> daemon, with random faults.

Not a CI test: run it by hand (default 30 minutes) and read the last lines.

    .venv/bin/python scripts/soak.py --duration 1800 --hosts 8

- Agents: `fleettui agent --nvml fake` processes (one per host name), QoS 1.
- A counter subscribes to every report topic (its own persistent session) and
  records each unique (host, boot, seq) the broker delivered: that is "sent".
- Faults, one every `--fault-every` seconds on average, chosen at random:
  broker restart (persistence on), daemon SIGKILL then restart, daemon SIGTERM
  then restart, a burst of poison reports (lone surrogate, NUL, absurd ints),
  an oversized (2 MiB) report, and, when the store sits on a tmpfs this script
  could mount (root), the disk filled for 15 s then freed.
- All along, a second source of the daemon scrapes a trickling upstream
  (tests/hostile_http.py: one body byte a second) next to a good target.
- At the end: sent = stored + rejected + dropped (the daemon's own count) +
  unexplained, which must be 0: the daemon acknowledges a report only once it is
  stored, so a SIGKILL loses nothing the broker does not redeliver. Reports stored
  more than once are counted too. The daemon's RSS is sampled every 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC
from pathlib import Path

import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.hostile_http import HostileServer  # noqa: E402  (the trickling upstream)
from tests.services.mosquitto import Broker  # noqa: E402  (the tests' broker wrapper)

PREFIX = "fleettui"


class Counter:
    """Every unique report the broker delivered, by (host, boot, seq)."""

    def __init__(self, broker: Broker):
        self.seen: dict[tuple[str, str, int], float] = {}
        self.poison = 0
        self.lock = threading.Lock()
        self.c = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="soak-counter", clean_session=False
        )
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, *a: c.subscribe(f"{PREFIX}/+/report", qos=1)
        self.c.reconnect_delay_set(0.2, 2)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()

    def _on_message(self, c, userdata, msg) -> None:
        try:
            obj = json.loads(msg.payload)
            key = (obj["host"], obj["boot"], int(obj["seq"]))
            ts = float(obj["ts"])
        except Exception:
            return
        if key[1] == "soak-poison":
            return
        with self.lock:
            self.seen[key] = ts


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def daemon_memory_mb(log_path: Path) -> tuple[float, float] | None:
    """(DuckDB memory, of it not yet checkpointed) in MB from the running daemon's
    /metrics (refreshed by its store-size task once a minute), or None."""
    urls = re.findall(r"metrics (http://\S+/metrics)", log_path.read_text(errors="replace"))
    if not urls:
        return None
    try:
        with urllib.request.urlopen(urls[-1], timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    vals = dict(re.findall(r"^(fleettui_store_memory\w*) (\S+)$", text, re.M))
    if "fleettui_store_memory_bytes" not in vals:
        return None
    return (
        float(vals["fleettui_store_memory_bytes"]) / 1e6,
        float(vals.get("fleettui_store_memory_uncheckpointed_bytes", 0)) / 1e6,
    )


def start_hostile() -> HostileServer:
    """The misbehaving HTTP server, on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return asyncio.run_coroutine_threadsafe(HostileServer(trickle_s=1.0).start(), loop).result(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=1800.0, help="seconds (default 30 min)")
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--interval", type=float, default=1.0, help="agent interval, seconds")
    ap.add_argument("--fault-every", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-disk-fill", action="store_true")
    ap.add_argument(
        "--memory-limit",
        default="",
        help="the daemon's DuckDB memory_limit (e.g. 256MiB: its checkpoint threshold is a"
        " quarter of it, so uncheckpointed appends, the sawtooth in RSS, are bounded sooner)",
    )
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="fleettui-soak-"))
    data = work / "store"
    data.mkdir()
    tmpfs = False
    if not a.no_disk_fill and os.geteuid() == 0:
        tmpfs = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(data)], capture_output=True
            ).returncode
            == 0
        )
    db = data / "fleet.duckdb"
    broker = Broker(work / "broker", persistence=True)
    broker.start()
    config = work / "fleet.toml"
    hostile = start_hostile()
    config.write_text(
        f'[daemon]\ndb = "{db}"\nstatus_interval_s = 0\nstore_failure_max_s = 120\n'
        + (f'memory_limit = "{a.memory_limit}"\n' if a.memory_limit else "")
        + "\n"
        f'[[sources]]\nkind = "mqtt"\nbroker = "{broker.address}"\nflush_interval_s = 0.25\n'
        'reconnect_max_s = 1.0\nclient_id = "soak-daemon"\n\n'
        '[[sources]]\nkind = "scrape"\nname = "trickle"\ninterval_s = 5\ntimeout_s = 2\n'
        f'targets = [{{url = "{hostile.url}/trickle"}}, {{url = "{hostile.url}/ok"}}]\n'
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemon_log = open(work / "daemon.log", "a")  # noqa: SIM115

    def start_daemon() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "fleettui.cli", "daemon", "--config", str(config), "--no-serve"],
            env=env,
            stdout=daemon_log,
            stderr=daemon_log,
        )

    counter = Counter(broker)
    daemon = start_daemon()
    # agents start once the daemon has subscribed: a fresh broker queues nothing for a
    # client that never connected (on a loaded machine a fixed 3 s was too short: the
    # first reports of every agent were "missing" from a 150 s run)
    deadline = time.monotonic() + 120
    while "fleettui daemon: store" not in (work / "daemon.log").read_text(errors="replace"):
        if time.monotonic() > deadline or daemon.poll() is not None:
            raise SystemExit("soak: the daemon did not start (see daemon.log)")
        time.sleep(0.2)
    time.sleep(3)
    from collectors.sim.model import SimModel

    fleet_hosts = list(dict.fromkeys(SimModel(start=time.time()).fleet.host))
    hosts = fleet_hosts[:: max(1, len(fleet_hosts) // a.hosts)][: a.hosts]
    agent_log = open(work / "agents.log", "a")  # noqa: SIM115
    agents = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleettui.agent",
                "--broker",
                broker.address,
                "--nvml",
                "fake",
                "--fake-hosts",
                h,
                "--interval",
                str(a.interval),
                "--client-id",
                f"agent-{h}",
            ],
            env=env,
            stdout=agent_log,
            stderr=agent_log,
        )
        for h in hosts
    ]
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="soak-faults")
    pub.reconnect_delay_set(0.2, 2)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    faults: dict[str, int] = {}
    poison_sent = 0
    rss: list[tuple[float, float]] = []
    duck: list[tuple[float, float, float]] = []  # (t, DuckDB MB, of it uncheckpointed MB)
    t0 = time.monotonic()
    wall0 = time.time()
    next_fault = t0 + rng.expovariate(1 / a.fault_every)
    next_rss = t0
    kinds = ["broker_restart", "daemon_kill", "daemon_term", "poison", "oversized"] + (
        ["disk_fill"] if tmpfs else []
    )
    try:
        while time.monotonic() - t0 < a.duration:
            now = time.monotonic()
            if now >= next_rss:
                rss.append((now - t0, rss_mb(daemon.pid)))
                mem = daemon_memory_mb(work / "daemon.log")
                if mem is not None:
                    duck.append((now - t0, *mem))
                next_rss += 10
            if daemon.poll() is not None:
                print(
                    f"[{now - t0:6.0f} s] daemon exited {daemon.returncode}; restarting", flush=True
                )
                faults["daemon_exit"] = faults.get("daemon_exit", 0) + 1
                daemon = start_daemon()
            if now >= next_fault:
                kind = rng.choice(kinds)
                faults[kind] = faults.get(kind, 0) + 1
                print(f"[{time.time() - wall0:6.0f} s] fault: {kind}", flush=True)
                if kind == "broker_restart":
                    broker.restart()
                elif kind == "daemon_kill":
                    daemon.send_signal(signal.SIGKILL)
                    daemon.wait()
                    time.sleep(rng.uniform(0.5, 3))
                    daemon = start_daemon()
                elif kind == "daemon_term":
                    daemon.send_signal(signal.SIGTERM)
                    rc = daemon.wait()
                    if rc != 0:
                        print(f"  daemon exited {rc} at SIGTERM", flush=True)
                    daemon = start_daemon()
                elif kind == "poison":
                    for j, bad in enumerate(('"\\ud800"', '"a\\u0000b"', str(2**70))):
                        host = rng.choice(hosts)
                        body = (
                            f'{{"v":1,"host":"{host}","boot":"soak-poison","seq":{j},'
                            f'"ts":{time.time()},"driver":{bad},"gpu":{{"uuid":["GPU-x"]}}}}'
                        )
                        pub.publish(
                            f"{PREFIX}/{host}/report", body.encode(), qos=1
                        ).wait_for_publish(10)
                        poison_sent += 1
                elif kind == "oversized":
                    host = rng.choice(hosts)
                    pub.publish(
                        f"{PREFIX}/{host}/report", b"{" + b" " * (2 << 20) + b"}", qos=1
                    ).wait_for_publish(10)
                    poison_sent += 1
                elif kind == "disk_fill":
                    filler = data / "filler"
                    with open(filler, "wb", buffering=0) as f:
                        try:
                            while True:
                                f.write(b"\0" * (1 << 20))
                        except OSError:
                            pass
                    time.sleep(15)
                    filler.unlink()
                next_fault = time.monotonic() + rng.expovariate(1 / a.fault_every)
            time.sleep(0.5)
    finally:
        for ag in agents:
            ag.send_signal(signal.SIGINT)
        for ag in agents:
            try:
                ag.wait(timeout=30)
            except subprocess.TimeoutExpired:
                ag.kill()
        time.sleep(3)  # the last reports reach the daemon
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=180)
        except subprocess.TimeoutExpired:
            daemon.kill()
        pub.loop_stop()
        counter.c.loop_stop()
        broker.stop()
    from storage.store import Store

    store = Store.open(db, read_only=True)
    stored, copies = store.con.execute(
        "SELECT count(*), count(*) FILTER (WHERE n > 1) FROM (SELECT host, ts,"
        " count(*) / count(DISTINCT gpu_uuid) AS n FROM gpu_samples WHERE source = 'nvml'"
        " GROUP BY host, ts)"
    ).fetchone()
    trickle = store.con.execute(
        "SELECT count(*), count(*) FILTER (WHERE error LIKE '%/trickle: no complete answer%')"
        " FROM collector_runs WHERE collector = 'trickle'"
    ).fetchone()
    rejected = store.con.execute(
        "SELECT count(*) FROM rejects WHERE topic LIKE '%/report'"
    ).fetchone()[0]
    reasons = store.con.execute(
        "SELECT reason[:60], count(*) FROM rejects GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
    ).fetchall()
    have = {
        (h, round(t.replace(tzinfo=UTC).timestamp(), 3))
        for h, t in store.con.execute("SELECT DISTINCT host, ts FROM gpu_samples").fetchall()
    }
    seq_rows = store.con.execute("SELECT host, boot, seq FROM report_seqs").fetchall()
    seqs = set(seq_rows)
    seq_copies = len(seq_rows) - len(seqs)
    store.close()
    with counter.lock:
        gone_keys = [k for k, ts in counter.seen.items() if (k[0], round(ts, 3)) not in have]
        print(
            f"missing reports recorded in report_seqs (stored, rows gone): "
            f"{sum(1 for k in gone_keys if k in seqs)} of {len(gone_keys)}; first: {gone_keys[:6]}"
        )
        sent = len(counter.seen)
        gone = [(ts, h) for (h, _, _), ts in counter.seen.items() if (h, round(ts, 3)) not in have]
        missing = sorted(ts for ts, _ in gone)
        print(
            f"missing by host: {sorted({h: sum(1 for _, x in gone if x == h) for _, h in gone}.items())}"
        )
    if missing:
        print(f"missing reports at (s after start): {[round(t - wall0) for t in missing][:40]}")
    # rows the daemon itself said it dropped (a store that stayed failing), from its log
    log_text = (work / "daemon.log").read_text(errors="replace")
    dropped_rows = sum(
        int(n.replace(",", "")) for n in re.findall(r"([\d,]+) rows dropped", log_text)
    )
    # stored = what the daemon committed (report_seqs rows go in the same transaction as
    # the report's rows); a report without GPU rows (the simulated fleet's host_silent
    # fault: hgx-04-n3 from 20 s for 600 s) is stored all the same
    with counter.lock:
        stored_keys = sum(1 for k in counter.seen if k in seqs)
    no_gpu_rows = stored_keys - stored
    unexplained = sent + poison_sent - stored_keys - rejected
    print(f"faults: {faults}")
    print(f"reject reasons: {reasons}")
    print(f"trickle scrapes: {trickle[0]} runs, {trickle[1]} cut at the deadline")
    print(f"RSS MB (t s, MB): {[(round(t), round(m)) for t, m in rss]}")
    print(
        f"DuckDB memory MB (t s, in use, not checkpointed): {[tuple(round(x) for x in d) for d in duck]}"
    )
    if len(rss) >= 12:
        k = max(3, len(rss) // 10)
        first = sorted(m for _, m in rss[2 : 2 + k])[k // 2]
        last = sorted(m for _, m in rss[-k:])[k // 2]
        print(
            f"RSS: median of the first {k} samples (after 20 s) {first:.0f} MB, of the last"
            f" {k} {last:.0f} MB, max {max(m for _, m in rss):.0f} MB"
        )
    print(
        f"RECONCILE: sent {sent} reports + {poison_sent} poison/oversized = stored"
        f" {stored_keys} + rejected {rejected} + reported dropped 0 + unexplained {unexplained}"
        f" (daemon SIGKILLs {faults.get('daemon_kill', 0)}, SIGTERMs"
        f" {faults.get('daemon_term', 0)}; stored more than once: {copies} by GPU rows,"
        f" {seq_copies} by report_seqs; stored with GPU rows {stored}, without (host_silent)"
        f" {no_gpu_rows}; rows the daemon said it dropped: {dropped_rows})"
    )
    print(f"work dir: {work}")
    if tmpfs:  # keep the store for a look afterwards
        subprocess.run(["cp", str(db), str(work / "fleet.duckdb")], check=False)
        subprocess.run(["umount", "-l", str(data)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
