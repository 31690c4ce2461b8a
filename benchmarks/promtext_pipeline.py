"""Throughput of the Prometheus-format path on the simulated fleet (no HTTP):
exporter text -> parse_exposition -> DCGM/fabric/latency mappers -> batches.

    python benchmarks/promtext_pipeline.py [--scale 1] [--gathers 3]

Prints samples per second for parsing and for mapping, and the parse speed
against prometheus_client's parser run on every line (the baseline), measured
on the same texts in the same run. Then the same texts as the `scrape` source
reads them from the second gather on: each body through its target's layout
(collectors.promtext.layout) and the mappers through their plans, in CPU-s per
million samples beside the full parse and map of the same run (both pipelines
must write the same rows).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from collectors.promtext.parse import parse_exposition  # noqa: E402
from collectors.promtext.pipeline import TelemetryPipeline  # noqa: E402
from collectors.promtext.series import merge  # noqa: E402
from collectors.scrape_source import parse_bodies  # noqa: E402
from collectors.sim.exporters import SimExporters  # noqa: E402
from collectors.sim.model import SimModel  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--gathers", type=int, default=3)
    ap.add_argument("--kinds", default="dcgm,node,vllm")
    a = ap.parse_args()
    t0 = 1_790_000_000
    model = SimModel(start=t0, scale=a.scale)
    exp = SimExporters(model)
    kinds = set(a.kinds.split(","))
    targets = [t for t in exp.targets() if t.kind in kinds]
    pipe = TelemetryPipeline("bench")
    fast = TelemetryPipeline("bench")
    layouts: dict[str, object] = {}
    reused = 0
    full_cpu: list[float] = []
    fast_cpu: list[float] = []
    parse_s = map_s = render_s = base_s = 0.0
    samples = rows = 0
    for i in range(a.gathers):
        exp.advance(t0 + 130 + 2 * i)
        r0 = time.perf_counter()
        texts = [(t, exp.render(t.path)) for t in targets]
        r1 = time.perf_counter()
        c0 = time.process_time()
        snap = merge(
            [parse_exposition(txt, t.path, now=t0, extra_labels=t.labels) for t, txt in texts]
        )
        r2 = time.perf_counter()
        g = pipe.map(snap, t0 + 130 + 2 * i)
        r3 = time.perf_counter()
        full_cpu.append(time.process_time() - c0)
        base = sum(len(f.samples) for _, txt in texts for f in text_string_to_metric_families(txt))
        base_s += time.perf_counter() - r3
        assert base == len(snap)
        items = [
            (txt.encode(), t.path, float(t0), t.labels, 40, layouts.get(t.path), True)
            for t, txt in texts
        ]
        c0 = time.process_time()
        parsed = []
        for k in range(0, len(items), 64):  # the scrape source's hand-off batches
            for (_, path, *_rest), (s, layout) in zip(
                items[k : k + 64], parse_bodies(items[k : k + 64]), strict=True
            ):
                layouts[path] = layout
                parsed.append(s)
        g2 = fast.map(merge(parsed), t0 + 130 + 2 * i)
        fast_cpu.append(time.process_time() - c0)
        assert [(b.table, b.data.to_pylist()) for b in g2.batches] == [
            (b.table, b.data.to_pylist()) for b in g.batches
        ], "layouts and plans changed what is written"
        reused += sum(1 for s in parsed if s.layout is not None) if i >= 2 else 0
        render_s += r1 - r0
        parse_s += r2 - r1
        map_s += r3 - r2
        samples += len(snap)
        rows += g.rows
    f = model.fleet
    print(
        f"fleet scale {a.scale}: {f.n_hosts} hosts, {f.n_gpus} GPUs, {len(targets)} targets "
        f"({a.kinds}), {samples // a.gathers} samples per gather"
    )
    n = a.gathers
    print(f"render (sim)   {render_s / n * 1000:8.1f} ms/gather")
    print(f"parse          {parse_s / n * 1000:8.1f} ms/gather {samples / parse_s:10.0f} samples/s")
    print(f"map -> batches {map_s / n * 1000:8.1f} ms/gather {samples / map_s:10.0f} samples/s")
    print(f"rows per gather {rows // n}")
    print(
        f"baseline: prometheus_client on every line {base_s / n * 1000:8.1f} ms/gather "
        f"{samples / base_s:10.0f} samples/s; parse_exposition is x{base_s / parse_s:.1f}"
    )
    if n >= 3:
        per = samples / n / 1e6
        later_full = sorted(full_cpu[2:])[len(full_cpu[2:]) // 2] / per
        later_fast = sorted(fast_cpu[2:])[len(fast_cpu[2:]) // 2] / per
        print(
            f"gathers 3..{n}, median CPU-s per million samples: full parse + map {later_full:.2f}, "
            f"through layouts + plans {later_fast:.2f} (x{later_full / later_fast:.1f}); "
            f"same rows written; {reused} of {len(targets) * (n - 2)} bodies read through layouts"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
