"""Serve the simulated fleet as dcgm-exporter / node_exporter / vLLM endpoints.

    python scripts/serve_sim_exporters.py [--scale N] [--shards K] [--step-s S] \
        [--port 9400] [--hosts rtx-07-n1,hgx-03-n1] \
        [--write-prometheus-config prometheus.yml] [--write-sources fleet-sources.toml] \
        [--interval-s 5]

Prints the targets; optionally writes a Prometheus config and the
`[[sources]]` tables of a direct `scrape` source, both scraping every target
every `--interval-s`. With `--scale` the fleet is multiplied (10: 3,040 GPUs,
1,290 targets) and served by `--shards` processes on consecutive ports (from
`--port`, or free ports); `--step-s` quantizes the exporters' clock, so two
scrapers scraping in the same step get identical bodies. Ctrl-C stops.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.sim.exporters import SimExporters  # noqa: E402
from collectors.sim.model import SimModel  # noqa: E402
from collectors.sim.shards import ShardedExporters  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="first port (default: free ports)")
    ap.add_argument(
        "--hosts",
        default="",
        help="comma-separated simulated hosts (one process; default: all, sharded)",
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scale", type=int, default=1, help="multiply the fleet (10: 3,040 GPUs)")
    ap.add_argument(
        "--shards",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="exporter processes (default: min(4, CPUs))",
    )
    ap.add_argument(
        "--step-s",
        type=float,
        default=1.0,
        help="exporters' clock step: one body per target per step (default 1)",
    )
    ap.add_argument(
        "--interval-s",
        type=float,
        default=1.0,
        help="scrape interval written to the configs (default 1)",
    )
    ap.add_argument("--no-faults", action="store_true", help="the healthy fleet")
    ap.add_argument("--quiet", action="store_true", help="do not list every target")
    ap.add_argument("--write-prometheus-config", metavar="FILE")
    ap.add_argument("--write-sources", metavar="FILE")
    a = ap.parse_args()
    if a.scale < 1 or a.shards < 1 or a.step_s <= 0 or a.interval_s <= 0:
        print(
            "serve_sim_exporters: --scale and --shards must be >= 1, --step-s and --interval-s > 0",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if a.hosts:
        return _serve_hosts(a)
    with ShardedExporters(
        a.scale,
        shards=a.shards,
        seed=a.seed,
        step_s=a.step_s,
        base_port=a.port,
        faults=not a.no_faults,
    ) as exp:
        if not a.quiet:
            for t in exp.targets:
                print(f"{t.kind:5s} {t.url}  {t.labels}")
        if a.write_prometheus_config:
            cfg = exp.prometheus_config(a.interval_s)
            Path(a.write_prometheus_config).write_text(json.dumps(cfg, indent=1))
            print(f"wrote {a.write_prometheus_config}")
        if a.write_sources:
            Path(a.write_sources).write_text(exp.sources_toml(interval_s=a.interval_s))
            print(f"wrote {a.write_sources}")
        print(
            f"serving {len(exp.hosts)} hosts, {exp.n_gpus} GPUs, {len(exp.targets)} targets "
            f"from {len(exp.ports)} processes on ports {', '.join(map(str, exp.ports))}; "
            "Ctrl-C stops",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def _serve_hosts(a: argparse.Namespace) -> int:
    """A few named hosts in this process (demos, debugging one host)."""
    model = SimModel(seed=a.seed, scale=a.scale, start=float(int(time.time())))
    hosts = [h for h in a.hosts.split(",") if h]
    try:
        exp = SimExporters(model, hosts, port=a.port)
    except ValueError as exc:
        print(f"serve_sim_exporters: {exc}", file=sys.stderr)
        return 2
    with exp:
        targets = exp.targets()
        for t in targets:
            print(f"{t.kind:5s} {exp.base_url}{t.path}  {t.labels}")
        print(f"serving {len(exp.hosts)} hosts on {exp.base_url}; Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
