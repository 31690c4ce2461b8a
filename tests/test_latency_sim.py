"""The simulated vLLM servers: p99 from bucket deltas lands on the simulator's p99."""

from __future__ import annotations

import numpy as np

from collectors.latency import LatencyMapper
from collectors.promtext.parse import parse_exposition
from collectors.promtext.series import merge
from collectors.sim.exporters import BUCKETS_S, SimExporters, lognormal_cum
from collectors.sim.model import SimModel
from collectors.sim.topology import ENDPOINTS
from tests.simfleet_truth import fault_start, interval_quantile_truth

T0 = 1_790_000_000


def test_lognormal_buckets_reproduce_p50_and_p99():
    from collectors.promtext.counters import histogram_quantile

    le = np.append(BUCKETS_S[0], np.inf)
    for p50, p99 in ((4.0, 5.4), (18.0, 24.3), (150.0, 210.0)):
        cum = np.append(lognormal_cum(BUCKETS_S[0], p50, p99), 1.0) * 1e5
        assert abs(histogram_quantile(0.5, le, cum) * 1000 / p50 - 1) < 0.01
        assert abs(histogram_quantile(0.99, le, cum) * 1000 / p99 - 1) < 0.01


def test_every_endpoint_p99_itl_within_5_percent_of_the_simulator():
    model = SimModel(start=T0)  # full fleet, default faults (quanta-risk surges)
    exp = SimExporters(model)
    vllm = [t for t in exp.targets() if t.kind == "vllm"]
    assert {t.labels["service"] for t in vllm} == {e[0] for e in ENDPOINTS}
    m = LatencyMapper("sim")
    errors = {}
    prev = None
    surge = T0 + fault_start("traffic_surge")
    for t in range(surge - 20, surge + 40, 5):  # 5 s gathers across the surge's start
        exp.advance(t)
        snap = merge(
            [
                parse_exposition(exp.render(v.path), v.path, now=t, extra_labels=v.labels)
                for v in vllm
            ]
        )
        r = m.map(snap)
        assert r.skipped == []
        for b in (b for b in r.batches if b.table == "latency_samples"):
            for row in b.data.to_pylist():
                e = [x[0] for x in ENDPOINTS].index(row["endpoint"])
                assert row["tenant"] == ENDPOINTS[e][1]
                truth = interval_quantile_truth(model, e, prev, t)
                errors.setdefault(row["endpoint"], []).append(row["itl_p99_ms"] / truth - 1)
        prev = t
    assert set(errors) == {e[0] for e in ENDPOINTS}
    worst = max(abs(x) for v in errors.values() for x in v)
    assert worst < 0.05, errors
