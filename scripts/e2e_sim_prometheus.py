"""End-to-end figures: simulated exporters -> real Prometheus (1 s scrapes) ->
"prometheus" source -> store, compared with the simulator's truth.

    python scripts/e2e_sim_prometheus.py [--gathers 6] [--interval 2] [--all-hosts]

Needs the `prometheus` binary (Debian package). Prints GPUs/slices/assignments
stored vs the simulator, sample values vs truth, and p99 inter-token latency
per tenant vs the simulator's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collectors.prometheus_source import PrometheusOptions, PrometheusSource  # noqa: E402
from collectors.sim.exporters import SimExporters  # noqa: E402
from collectors.sim.model import SimModel  # noqa: E402
from collectors.sim.topology import ENDPOINTS  # noqa: E402
from storage.store import Store  # noqa: E402
from tests.services import prometheus as promsvc  # noqa: E402
from tests.simfleet_truth import (  # noqa: E402
    HOSTS,
    fault_start,
    interval_quantile_truth,
    truth_inventory,
)


def epoch(ts: datetime) -> float:
    return ts.replace(tzinfo=UTC).timestamp()


async def run(args: argparse.Namespace) -> int:
    # 30 s into quanta-risk's traffic surge (p99 ITL well above its healthy level)
    model = SimModel(start=float(int(time.time()) - fault_start("traffic_surge") - 30))
    hosts = None if args.all_hosts else HOSTS
    with SimExporters(model, hosts) as exp, tempfile.TemporaryDirectory() as tmp:
        hosts = exp.hosts
        targets = exp.targets()
        server = promsvc.start(
            [promsvc.ScrapeTarget(f"127.0.0.1:{exp.port}", t.path, t.labels) for t in targets],
            Path(tmp),
        )
        try:
            truth = truth_inventory(model, hosts, reporting_at=float(int(time.time())))
            n_all = (
                model.fleet.n_gpus if args.all_hosts else len(truth_inventory(model, hosts)["gpus"])
            )
            n = sum(1 for g in truth["gpus"].values() if not g[2]) + len(truth["slices"])
            t0 = time.monotonic()
            kinds = ("dcgm", "node", "vllm")
            seen = server.wait_for_series("DCGM_FI_DEV_GPU_TEMP", n, 30)
            print(
                f"simulated hosts {len(hosts)}, scrape targets {len(targets)} "
                f"({', '.join(f'{k} {sum(t.kind == k for t in targets)}' for k in kinds)}); "
                f"Prometheus {server.url} "
                f"has {seen}/{n} GPU_TEMP series after {time.monotonic() - t0:.1f} s"
            )
            src = PrometheusSource(
                PrometheusOptions(url=server.url, interval_s=args.interval, backfill_s=0)
            )
            store = Store.open(":memory:")
            durations, skipped = [], 0
            for i in range(args.gathers):
                a = time.perf_counter()
                g = await src.gather(datetime.now(UTC))
                durations.append(time.perf_counter() - a)
                skipped += len(g.skipped)
                store.write(g.batches)
                if i < args.gathers - 1:
                    await asyncio.sleep(args.interval)
            await src.close()
        finally:
            promsvc.stop(server)
    con = store.cursor()
    gpus = {
        r[0]: (r[1], r[2], r[3])
        for r in con.execute("SELECT gpu_uuid, host, gpu_index, mig_mode FROM gpus").fetchall()
    }
    slices = {
        r[0]: (r[1], r[2])
        for r in con.execute("SELECT slice_id, profile, fraction FROM slices").fetchall()
    }
    assign = {
        (r[0], r[1]): r[2]
        for r in con.execute(
            "SELECT gpu_uuid, slice_id, tenant FROM assignments WHERE valid_to IS NULL"
        ).fetchall()
    }
    print(
        f"gathers {args.gathers} every {args.interval:g} s: "
        f"{1000 * sum(durations) / len(durations):.0f} ms mean per gather, "
        f"skipped reasons {skipped}"
    )
    print(
        f"GPUs on these hosts {n_all}, reporting now {len(truth['gpus'])} (faults silence the rest)"
    )
    for what, got, want in (("GPUs", gpus, truth["gpus"]), ("MIG slices", slices, truth["slices"])):
        print(f"{what:10s} stored {len(got):4d}  sim {len(want):4d}  identical: {got == want}")
    print(
        f"tenant assignments stored {len(assign)}  sim {len(truth['assignments'])}  "
        f"identical: {assign == truth['assignments']}"
    )
    f = model.fleet
    gi = {u: i for i, u in enumerate(f.gpu_uuid)}
    worst = 0.0
    rows = con.execute("SELECT ts, gpu_uuid, power_w FROM gpu_samples").fetchall()
    for ts, u, p in rows:
        worst = max(worst, abs(p - model.state(epoch(ts)).gpu_power_w[gi[u]]))
    print(f"gpu_samples {len(rows)} rows: max |power_w - sim| = {worst:.2e} W")
    lat = con.execute(
        "SELECT tenant, endpoint, ts, itl_p99_ms, requests_per_s FROM latency_samples "
        "ORDER BY endpoint, ts"
    ).fetchall()
    ep = {e[0]: i for i, e in enumerate(ENDPOINTS)}
    prev: dict[str, float] = {}
    print(
        f"\n{'tenant':15s} {'endpoint':16s} {'interval':>9s} {'itl_p99_ms':>10s} "
        f"{'sim p99':>9s} {'error':>7s}"
    )
    worst_err = 0.0
    for tenant, endpoint, ts, p99, _rps in lat:
        t1 = epoch(ts)
        t0_ = prev.get(endpoint)
        prev[endpoint] = t1
        if t0_ is None or p99 is None:
            continue
        want = interval_quantile_truth(model, ep[endpoint], int(t0_), int(t1))
        err = p99 / want - 1
        worst_err = max(worst_err, abs(err))
        print(
            f"{tenant:15s} {endpoint:16s} {t1 - t0_:7.0f} s {p99:10.2f} {want:9.2f} "
            f"{100 * err:+6.2f}%"
        )
    print(f"\nworst p99 ITL error: {100 * worst_err:.2f}% (limit 5%)")
    return 0 if worst_err < 0.05 and gpus == truth["gpus"] and slices == truth["slices"] else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gathers", type=int, default=5)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--all-hosts", action="store_true", help="serve the whole fleet (56 hosts)")
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
