"""Serve the simulated fleet as dcgm-exporter / node_exporter / vLLM endpoints.

    python scripts/serve_sim_exporters.py [--port 9400] [--hosts rtx-07-n1,hgx-03-n1] \
        [--write-prometheus-config prometheus.yml] [--write-sources fleet-sources.toml]

Prints the targets; optionally writes a Prometheus config scraping them every
second and the `[[sources]]` tables for a direct `scrape` source. Ctrl-C stops.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.sim.exporters import SimExporters  # noqa: E402
from collectors.sim.model import SimModel  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--hosts", default="", help="comma-separated simulated hosts (default: all)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--write-prometheus-config", metavar="FILE")
    ap.add_argument("--write-sources", metavar="FILE")
    a = ap.parse_args()
    model = SimModel(seed=a.seed, start=float(int(time.time())))
    hosts = [h for h in a.hosts.split(",") if h] or None
    with SimExporters(model, hosts, port=a.port) as exp:
        targets = exp.targets()
        for t in targets:
            print(f"{t.kind:5s} {exp.base_url}{t.path}  {t.labels}")
        if a.write_prometheus_config:
            cfg = {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "fleettui-sim",
                        "static_configs": [
                            {
                                "targets": [f"127.0.0.1:{exp.port}"],
                                "labels": {"__metrics_path__": t.path, **t.labels},
                            }
                            for t in targets
                        ],
                    }
                ],
            }
            Path(a.write_prometheus_config).write_text(json.dumps(cfg, indent=1))
            print(f"wrote {a.write_prometheus_config}")
        if a.write_sources:
            rows = ",\n".join(
                f'  {{ url = "{exp.base_url}{t.path}", labels = {{ '
                + ", ".join(f'{k} = "{v}"' for k, v in t.labels.items())
                + " } }"
                for t in targets
            )
            Path(a.write_sources).write_text(
                f'[[sources]]\nkind = "scrape"\nname = "sim-scrape"\ninterval_s = 5.0\n'
                f'link_kind_by_host = {{ "rtx-*" = "roce" }}\ntargets = [\n{rows}\n]\n'
            )
            print(f"wrote {a.write_sources}")
        print(f"serving {len(exp.hosts)} hosts on {exp.base_url}; Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
