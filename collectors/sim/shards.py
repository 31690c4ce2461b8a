"""The simulated exporters at any scale, sharded over processes.

One process cannot render and serve 1,290 targets (scale 10: 3,040 GPUs,
~36 MB of exposition) every 5 s, so the hosts are split over `shards`
processes, each a `SimExporters` on its own 127.0.0.1 port. Every shard builds
the same model (same seed, scale and start), so a host's numbers do not depend
on how the fleet was split.

`step_s` quantizes the exporters' clock: every request within one step sees
the fleet at the step's start (its exposition timestamps included). Two
scrapers (Prometheus and the daemon) scraping at the same interval in the
same step window get byte-identical bodies. Each shard renders all its paths
as soon as a step begins, so the first scraper of a step does not wait.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass
from typing import Any

from collectors.sim.exporters import SimExporters, Target
from collectors.sim.faults import DEFAULT_FAULTS
from collectors.sim.model import SimModel
from collectors.sim.topology import build_fleet


@dataclass(frozen=True)
class ShardTarget:
    url: str
    kind: str  # dcgm | node | vllm
    host: str
    labels: dict[str, str]


def split_hosts(hosts: list[str], shards: int) -> list[list[str]]:
    """Round-robin, so each shard gets a mix of host kinds (and of work)."""
    return [hosts[k::shards] for k in range(shards) if hosts[k::shards]]


def _serve_shard(
    scale: int,
    seed: int,
    start: float,
    hosts: list[str],
    port: int,
    step_s: float,
    faults: bool,
    out: mp.Queue,
) -> None:
    model = SimModel(seed=seed, scale=scale, start=start, faults=DEFAULT_FAULTS if faults else ())

    def clock() -> float:
        return math.floor(time.time() / step_s) * step_s

    exp = SimExporters(model, hosts, port=port, clock=clock).start()
    targets: list[Target] = exp.targets()
    out.put((exp.port, [(t.path, t.kind, t.host, t.labels) for t in targets]))

    def warm() -> None:  # render every path at the start of each step
        while True:
            now = time.time()
            time.sleep(step_s - now % step_s + 0.001)
            exp.advance(int(clock()))
            for t in targets:
                exp.render(t.path)

    threading.Thread(target=warm, daemon=True).start()
    threading.Event().wait()  # until terminated


class ShardedExporters:
    """Start with `start()`, stop with `stop()` (or as a context manager)."""

    def __init__(
        self,
        scale: int = 1,
        *,
        shards: int = 4,
        seed: int = 7,
        step_s: float = 1.0,
        base_port: int = 0,
        faults: bool = True,
        start: float | None = None,
    ):
        if shards < 1 or step_s <= 0:
            raise ValueError("shards must be >= 1 and step_s > 0")
        self.scale, self.seed, self.step_s, self.faults = scale, seed, step_s, faults
        self.start_s = float(int(time.time())) if start is None else start
        fleet = build_fleet(seed=seed, scale=scale)
        self.hosts = list(fleet.host)
        self.n_gpus = fleet.n_gpus
        self.parts = split_hosts(self.hosts, shards)
        self.base_port = base_port
        self.procs: list[Any] = []  # fork-context processes (not mp.Process to the type checker)
        self.targets: list[ShardTarget] = []
        self.ports: list[int] = []

    def start(self, timeout_s: float = 120.0) -> ShardedExporters:
        ctx = mp.get_context("fork")
        out: mp.Queue = ctx.Queue()
        for k, hosts in enumerate(self.parts):
            port = self.base_port + k if self.base_port else 0
            p = ctx.Process(
                target=_serve_shard,
                daemon=True,
                name=f"sim-exporters-{k}",
                args=(
                    self.scale,
                    self.seed,
                    self.start_s,
                    hosts,
                    port,
                    self.step_s,
                    self.faults,
                    out,
                ),
            )
            p.start()
            self.procs.append(p)
        got = []
        for _ in self.procs:
            got.append(out.get(timeout=timeout_s))
        for port, targets in sorted(got):
            self.ports.append(port)
            for path, kind, host, labels in targets:
                self.targets.append(
                    ShardTarget(f"http://127.0.0.1:{port}{path}", kind, host, dict(labels))
                )
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=10)
        self.procs.clear()

    def __enter__(self) -> ShardedExporters:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- configs for the two scrapers -----------------------------------------
    def prometheus_config(self, interval_s: float, timeout_s: float | None = None) -> dict:
        """A Prometheus config scraping every target (static configs, per-target path)."""
        timeout_s = timeout_s or interval_s
        return {
            "global": {
                "scrape_interval": f"{interval_s:g}s",
                "scrape_timeout": f"{min(timeout_s, interval_s):g}s",
            },
            "scrape_configs": [
                {
                    "job_name": "fleettui-sim",
                    "static_configs": [
                        {
                            "targets": [t.url.split("/")[2]],
                            "labels": {
                                "__metrics_path__": "/" + t.url.split("/", 3)[3],
                                **t.labels,
                            },
                        }
                        for t in self.targets
                    ],
                }
            ],
        }

    def sources_toml(
        self,
        name: str = "sim-scrape",
        interval_s: float = 5.0,
        timeout_s: float | None = None,
        workers: int = 0,
        align: bool = False,
    ) -> str:
        """`[[sources]]` of kind "scrape" for every target."""
        rows = ",\n".join(
            f'  {{ url = "{t.url}", labels = {{ '
            + ", ".join(f'{k} = "{v}"' for k, v in t.labels.items())
            + " } }"
            for t in self.targets
        )
        return (
            f'[[sources]]\nkind = "scrape"\nname = "{name}"\ninterval_s = {interval_s:g}\n'
            f"timeout_s = {timeout_s or interval_s:g}\n"
            + (f"workers = {workers}\n" if workers else "")
            + ("align_to_interval = true\n" if align else "")
            + f'link_kind_by_host = {{ "rtx-*" = "roce" }}\ntargets = [\n{rows}\n]\n'
        )
