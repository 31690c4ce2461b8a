"""FleetTUI's `scrape` source side by side with a real Prometheus, on the same exporters.

    python benchmarks/bench_vs_prometheus.py [--scale 10] [--interval-s 5] [--duration-s 600]
        [--shards 4] [--workers 0] [--keep DIR]

Starts the simulated exporters at `--scale` (sharded over `--shards`
processes, clock stepped at the interval: both scrapers get identical bodies
in a window), Debian's Prometheus and `fleettui daemon` (the `scrape` source
over every target, alerts off, no Quack serving), both scraping every target
every `--interval-s`, started together. After `--duration-s` it reports, for
both, from one run:

- windows captured: interval windows in which a value stamped with that window
  was stored for >= 99% of the GPUs seen in the best window;
- CPU-s per million exporter samples: the process tree's user+system CPU over
  the measured span (from /proc) / the samples it scraped (Prometheus: its own
  `prometheus_tsdb_head_samples_appended_total` over the span; the daemon:
  sample lines per window x its gathers in the span), and / the samples
  offered (lines per window x windows in the span);
- peak RSS (VmHWM, summed over the process tree);
- bytes per stored value: Prometheus' TSDB after a snapshot of its head
  (a compacted block) / samples appended; the DuckDB file after the daemon's
  checkpoint on stop / non-NULL values in the sample tables;
- values agree: GPU temperatures at the same timestamp in both stores;
- LinkDown on DCGM NVLink rows: the default alert rules replayed over the
  daemon's store every 15 s of the run (expected 0 alerts on NVLink ports).

The measured span starts at the first window boundary after `--warmup-s` and
after the daemon's first gather (which parses every body in full and learns
the layouts and plans the next ones reuse); the first gather's time is printed.

Prints one Markdown table. Needs `prometheus` on PATH (Debian: /usr/bin).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.sim.shards import ShardedExporters  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


# -- process accounting from /proc ------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime
    except (OSError, IndexError):
        return 0.0


def _hwm_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Tree:
    """CPU and peak RSS of a process and its descendants, sampled while they run."""

    def __init__(self, pid: int):
        self.pid = pid
        self.cpu: dict[int, float] = {}
        self.hwm: dict[int, float] = {}

    def sample(self) -> None:
        for p in _tree(self.pid):
            c = _cpu_s(p)
            if c:
                self.cpu[p] = max(self.cpu.get(p, 0.0), c)
            h = _hwm_mib(p)
            if h:
                self.hwm[p] = max(self.hwm.get(p, 0.0), h)

    def cpu_s(self) -> float:
        return sum(self.cpu.values())

    def peak_rss_mib(self) -> float:
        return sum(self.hwm.values())


# -- the two scrapers -------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 120) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def start_prometheus(work: Path, cfg: dict) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    (work / "prometheus.yml").write_text(json.dumps(cfg, indent=1))
    port = _free_port()
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-admin-api",
            "--log.level=warn",
            "--storage.tsdb.retention.time=1d",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("prometheus did not start: " + (work / "prometheus.log").read_text()[-300:])


def start_daemon(work: Path, sources: str) -> subprocess.Popen:
    (work / "fleet.toml").write_text(
        '[daemon]\ndb = "fleet.duckdb"\nserve_enabled = false\nstatus_interval_s = 0\n'
        "retention_h = 24\n\n[alerts]\nenabled = false\n\n" + sources
    )
    repo = str(Path(__file__).resolve().parents[1])  # this checkout's code, whatever is installed
    return subprocess.Popen(
        [sys.executable, "-m", "fleettui.cli", "daemon", "--config", "fleet.toml"],
        cwd=work,
        env={**os.environ, "PYTHONPATH": repo},
        stdout=open(work / "daemon.out", "wb"),
        stderr=open(work / "daemon.err", "wb"),
    )


def daemon_gathers(work: Path) -> int | None:
    """Gathers the daemon has finished, from its own /metrics (None until it serves)."""
    m = re.search(
        r"metrics (http://\S+/metrics)", (work / "daemon.err").read_text("utf-8", "replace")
    )
    if m is None:
        return None
    try:
        with urllib.request.urlopen(m.group(1), timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("fleettui_gathers_total "):
            return int(float(line.split()[1]))
    return None


def offered_samples_per_window(exp: ShardedExporters) -> int:
    """Sample lines across every target's body in one window (what both scrapers were offered)."""
    n = 0
    for t in exp.targets:
        try:
            with urllib.request.urlopen(t.url, timeout=30) as r:
                n += sum(1 for line in r.read().split(b"\n") if line and not line.startswith(b"#"))
        except OSError:
            pass  # a host the simulator silenced (503)
    return n


# -- what each stored -------------------------------------------------------------


def prometheus_temps(url: str, t0: float, t1: float) -> dict[float, dict[str, float]]:
    """ts -> {GPU UUID (+ GPU instance): temperature} for every raw sample in [t0, t1)."""
    span = int(t1 - t0) + 1
    q = urllib.parse.urlencode({"query": f"DCGM_FI_DEV_GPU_TEMP[{span}s]", "time": f"{t1:.3f}"})
    res = _get_json(f"{url}/api/v1/query?{q}")["data"]["result"]
    out: dict[float, dict[str, float]] = {}
    for s in res:
        key = s["metric"].get("UUID", "")
        for ts, v in s["values"]:
            if t0 <= float(ts) < t1:
                out.setdefault(float(ts), {})[key] = float(v)
    return out


def prometheus_appended(url: str) -> float:
    """Samples Prometheus has appended to its head so far (its own /metrics, read now)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=60) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_tsdb_head_samples_appended_total")
    )


def windows_captured(
    per_ts: dict[float, int], t0: float, t1: float, step: float
) -> tuple[int, int]:
    n = int((t1 - t0) // step)
    best = max(per_ts.values(), default=0)
    got = sum(1 for ts, c in per_ts.items() if t0 <= ts < t0 + n * step and c >= 0.99 * best)
    return got, n


def prometheus_bytes_per_value(url: str, work: Path) -> tuple[float, float]:
    """(bytes per sample in a snapshot block of the head, samples appended)."""
    req = urllib.request.Request(f"{url}/api/v1/admin/tsdb/snapshot?skip_head=false", method="POST")
    with urllib.request.urlopen(req, timeout=600) as r:
        name = json.load(r)["data"]["name"]
    snap = work / "prom-data" / "snapshots" / name
    size = sum(p.stat().st_size for p in snap.rglob("*") if p.is_file())
    samples = 0
    for meta in snap.glob("*/meta.json"):
        samples += json.loads(meta.read_text())["stats"]["numSamples"]
    return (size / samples if samples else float("nan")), samples


def daemon_store(db: Path, t0: float, t1: float, interval_s: float) -> dict:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        lo, hi = (
            datetime.fromtimestamp(t0, UTC).replace(tzinfo=None),
            datetime.fromtimestamp(t1, UTC).replace(tzinfo=None),
        )
        per_ts = {
            r[0].replace(tzinfo=UTC).timestamp(): r[1]
            for r in con.execute(
                "SELECT ts, count(DISTINCT gpu_uuid) FROM gpu_samples WHERE ts >= ? AND ts < ? "
                "GROUP BY ts",
                [lo, hi],
            ).fetchall()
        }
        temps: dict[float, dict[str, float]] = {}
        for ts, uuid, temp in con.execute(
            "SELECT ts, gpu_uuid, temp_c FROM gpu_samples WHERE ts >= ? AND ts < ? "
            "AND temp_c IS NOT NULL",
            [lo, hi],
        ).fetchall():
            temps.setdefault(ts.replace(tzinfo=UTC).timestamp(), {})[uuid] = temp
        values = 0
        from storage.columns import TABLE_COLUMNS

        for table in ("gpu_samples", "slice_samples", "link_samples", "latency_samples"):
            cols = [
                c
                for c, t in TABLE_COLUMNS[table].items()
                if c
                not in (
                    "ts",
                    "host",
                    "gpu_uuid",
                    "slice_id",
                    "kind",
                    "port",
                    "source",
                    "tenant",
                    "endpoint",
                    "model",
                )
            ]
            values += con.execute(
                f"SELECT {' + '.join(f'count({c})' for c in cols)} FROM {table}"
            ).fetchone()[0]
        runs = con.execute(
            "SELECT count(*), avg(duration_ms), max(duration_ms), "
            "count(*) FILTER (WHERE duration_ms > ?) FROM collector_runs "
            "WHERE collector = 'sim-scrape' AND ts >= ? AND ts < ?",  # not per-target rows
            [interval_s * 1000, lo, hi],
        ).fetchone()
    finally:
        con.close()
    return {
        "per_ts": per_ts,
        "temps": temps,
        "values": values,
        "runs": runs,
        "bytes": db.stat().st_size
        + (
            db.with_suffix(".duckdb.wal").stat().st_size
            if db.with_suffix(".duckdb.wal").exists()
            else 0
        ),
    }


def link_down_replay(db: Path, t0: float, t1: float) -> tuple[int, int]:
    """Replay the default rules over the daemon's store every 15 s of the run, on a copy.
    Returns (LinkDown instances on NVLink ports, LinkDown instances on other ports)."""
    from fleettui.alerts.engine import AlertEngine
    from fleettui.alerts.rules import default_rules
    from storage.store import Store

    copy = db.with_name("replay.duckdb")
    shutil.copy(db, copy)
    store = Store.open(copy)
    try:
        rules = [r for r in default_rules() if r.name == "LinkDown"]
        eng = AlertEngine(store, rules, interval_s=15.0)
        t = datetime.fromtimestamp(t0, UTC).replace(tzinfo=None) + timedelta(seconds=60)
        end = datetime.fromtimestamp(t1, UTC).replace(tzinfo=None)
        while t <= end:
            eng.evaluate(t)
            t += timedelta(seconds=15)
        cur = store.cursor()
        rows = cur.execute(
            "SELECT a.scope_key, any_value(l.kind) FROM alerts a "
            "LEFT JOIN link_samples l ON a.scope_key = l.host || ':' || l.port "
            "WHERE a.rule = 'LinkDown' GROUP BY a.scope_key"
        ).fetchall()
        cur.close()
    finally:
        store.close()
    nvlink = sum(1 for _, kind in rows if kind == "nvlink")
    return nvlink, len(rows) - nvlink


def agree(a: dict[float, dict[str, float]], b: dict[float, dict[str, float]]) -> tuple[int, int]:
    checks = diffs = 0
    for ts, va in a.items():
        vb = b.get(ts)
        if not vb:
            continue
        for k, x in va.items():
            if k in vb:
                checks += 1
                diffs += abs(vb[k] - x) > 1e-9 * max(1.0, abs(x))
    return checks, diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--interval-s", type=float, default=5.0)
    ap.add_argument("--duration-s", type=float, default=600.0)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--workers", type=int, default=0, help="scrape source `workers` (processes)")
    ap.add_argument("--warmup-s", type=float, default=20.0)
    ap.add_argument(
        "--no-align",
        dest="align",
        action="store_false",
        help="do not set the scrape source's align_to_interval (older code lacks it)",
    )
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp dir)")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-vs-prom-"))
    work.mkdir(parents=True, exist_ok=True)
    step = a.interval_s
    print(
        f"scale {a.scale}, interval {step:g} s, {a.duration_s:g} s measured, "
        f"{a.shards} exporter processes; work dir {work}",
        file=sys.stderr,
        flush=True,
    )
    with ShardedExporters(a.scale, shards=a.shards, step_s=step) as exp:
        per_window = offered_samples_per_window(exp)
        print(
            f"{len(exp.targets)} targets, {exp.n_gpus} GPUs, {per_window:,} samples per window",
            file=sys.stderr,
            flush=True,
        )
        # start both at a window boundary, together
        time.sleep(step - time.time() % step + 0.2)
        prom, prom_url = start_prometheus(work, exp.prometheus_config(step))
        daemon = start_daemon(
            work,
            exp.sources_toml(interval_s=step, timeout_s=step, workers=a.workers, align=a.align),
        )
        ptree, dtree = Tree(prom.pid), Tree(daemon.pid)
        started = time.time()
        try:
            # Warm-up: --warmup-s, and at least until the daemon's first gather is done
            # (it parses every body in full and learns layouts and plans: 20-37 s at
            # 10,032 GPUs on a loaded machine; Prometheus's first scrape has no such step).
            end_warm = started + a.warmup_s
            first_gather_s = None
            while time.time() < end_warm or first_gather_s is None:
                ptree.sample()
                dtree.sample()
                if first_gather_s is None and (daemon_gathers(work) or 0) >= 1:
                    first_gather_s = time.time() - started
                if time.time() > end_warm + 600:
                    raise RuntimeError("the daemon did not finish a gather within 600 s")
                time.sleep(1.0)
            print(
                f"daemon's first gather done {first_gather_s:.0f} s after start",
                file=sys.stderr,
                flush=True,
            )
            t0 = (time.time() // step + 1) * step
            while time.time() < t0:
                time.sleep(0.05)
            ptree.sample()
            dtree.sample()
            cpu0 = (ptree.cpu_s(), dtree.cpu_s())
            appended0 = prometheus_appended(prom_url)
            t1 = t0 + a.duration_s
            while time.time() < t1:
                time.sleep(min(1.0, max(0.0, t1 - time.time())))
                ptree.sample()
                dtree.sample()
            cpu1 = (ptree.cpu_s(), dtree.cpu_s())
            appended1 = prometheus_appended(prom_url)
            # let the last window's scrapes land, then read Prometheus before stopping it
            time.sleep(step)
            ptree.sample()
            dtree.sample()
            prom_temps = prometheus_temps(prom_url, t0, t1)
            prom_scraped_m = (appended1 - appended0) / 1e6
            prom_bpv, prom_samples = prometheus_bytes_per_value(prom_url, work)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=120)
            except subprocess.TimeoutExpired:
                daemon.kill()
            prom.terminate()
            prom.wait(timeout=60)
    d = daemon_store(work / "fleet.duckdb", t0, t1, step)
    p_windows = windows_captured({ts: len(v) for ts, v in prom_temps.items()}, t0, t1, step)
    d_windows = windows_captured(d["per_ts"], t0, t1, step)
    offered_m = per_window * (a.duration_s / step) / 1e6
    checks, diffs = agree(prom_temps, d["temps"])
    nvl, other = link_down_replay(work / "fleet.duckdb", t0, t1)
    runs, avg_ms, max_ms, over = d["runs"]
    daemon_scraped_m = per_window * runs / 1e6  # every gather reads every target
    p_cpu, d_cpu = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    err = (work / "daemon.err").read_text()
    rows = [
        (
            "windows captured",
            f"{p_windows[0]} / {p_windows[1]}",
            f"{d_windows[0]} / {d_windows[1]} (gathers: avg {avg_ms / 1000:.2f} s, max "
            f"{max_ms / 1000:.2f} s, {over} over {step:g} s)",
        ),
        (
            "CPU-s per million exporter samples scraped",
            f"{p_cpu / max(prom_scraped_m, 1e-9):.2f} ({p_cpu:.0f} CPU-s, "
            f"{prom_scraped_m:.2f} M appended)",
            f"{d_cpu / max(daemon_scraped_m, 1e-9):.2f} ({d_cpu:.0f} CPU-s, {runs} gathers, "
            f"{daemon_scraped_m:.2f} M) = "
            f"{(d_cpu / max(daemon_scraped_m, 1e-9)) / (p_cpu / max(prom_scraped_m, 1e-9)):.2f}x",
        ),
        (
            "CPU-s per million exporter samples offered",
            f"{p_cpu / offered_m:.2f}",
            f"{d_cpu / offered_m:.2f}",
        ),
        ("peak RSS", f"{ptree.peak_rss_mib():.0f} MiB", f"{dtree.peak_rss_mib():.0f} MiB"),
        (
            "bytes per stored value",
            f"{prom_bpv:.2f} (snapshot block, {prom_samples:,} samples)",
            f"{d['bytes'] / max(d['values'], 1):.2f} ({d['values']:,} values, file after checkpoint)",
        ),
        (
            "values agree at the same timestamp",
            "—",
            f"{diffs} differences in {checks:,} GPU temperature checks",
        ),
        (
            "LinkDown alerts (rules replayed every 15 s)",
            "—",
            f"{nvl} on DCGM NVLink ports, {other} on IB/RoCE ports",
        ),
    ]
    print(
        f"\nscale {a.scale} ({exp.n_gpus:,} GPUs, {len(exp.targets):,} targets, {a.shards} "
        f"exporter processes), interval {step:g} s, {a.duration_s:g} s, "
        f"{per_window:,} exporter samples per window; scrape workers = {a.workers}, "
        f"align_to_interval = {a.align}; the measured span starts at the first window after "
        f"{a.warmup_s:g} s of warm-up and the daemon's first gather ({first_gather_s:.0f} s "
        "after start)\n"
    )
    print("| | Prometheus | FleetTUI daemon (`scrape`, alerts off) |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print(f"\ndaemon stderr ({len(err.splitlines())} lines):\n{err.strip()}")
    print(f"daemon exit code: {daemon.returncode}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
