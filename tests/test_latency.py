"""Latency histograms -> p50/p99 from bucket deltas: the real vLLM scrape, the
quantile arithmetic, and every way a histogram can go wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest

from collectors.latency import LatencyMapper, LatencyRules
from collectors.promtext.counters import histogram_quantile
from collectors.promtext.parse import parse_exposition
from tests.upstream_samples import upstream

T0 = 1_774_011_500.0
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
ITL_LE = [
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
]


def vllm_text() -> str:
    return upstream("vllm", "vllm-v1-qwen2.5-0.5b-kops-metrics.txt").read_text()


def lat_rows(result, table="latency_samples"):
    return [r for b in result.batches if b.table == table for r in b.data.to_pylist()]


def with_itl_counts(text: str, counts: dict[float, float]) -> str:
    """The real scrape with its ITL buckets set to `counts` (cumulative, by bound)."""

    def sub(m: re.Match) -> str:
        le = m.group(1)
        bound = float("inf") if le == "+Inf" else float(le)
        return m.group(0).rsplit(" ", 1)[0] + " " + repr(float(counts.get(bound, 0.0)))

    return re.sub(
        r'(?m)^vllm:inter_token_latency_seconds_bucket\{engine="0",le="([^"]+)"[^}]*\} \S+$',
        sub,
        text,
    )


def test_real_vllm_scrape_families_labels_and_buckets():
    snap = parse_exposition(vllm_text(), "vllm", now=T0, complete=True)
    assert snap.skipped == []
    itl = [
        (float(lab["le"]), lab["model_name"], lab["engine"])
        for n, lab in zip(snap.names, snap.labels, strict=True)
        if n == "vllm:inter_token_latency_seconds_bucket"
    ]
    assert [x[0] for x in itl] == [*ITL_LE, float("inf")]
    assert {(x[1], x[2]) for x in itl} == {(MODEL, "0")}
    assert "vllm:time_per_output_token_seconds_bucket" not in snap.names  # removed upstream
    m = LatencyMapper("vllm")
    first = m.map(snap)
    assert lat_rows(first) == [] and first.skipped == []  # one gather: no interval yet
    # ...but the server is known at once: an endpoints row (no tenant label in this scrape)
    assert lat_rows(first, "endpoints") == [{"endpoint": MODEL, "tenant": None, "model": MODEL}]
    # no request had finished: every count is 0, so an interval has no quantile
    second = m.map(parse_exposition(vllm_text(), "vllm", now=T0 + 15, complete=True))
    (row,) = lat_rows(second)
    assert second.used == 20 + 23 + 22  # ITL, TTFT, e2e buckets
    assert row["endpoint"] == MODEL and row["model"] == MODEL and row["tenant"] is None
    assert row["itl_p99_ms"] is None and row["ttft_p50_ms"] is None and row["requests_per_s"] == 0.0


def test_quantiles_from_deltas_on_the_real_bucket_layout():
    base = vllm_text()
    m = LatencyMapper("vllm", LatencyRules(tenant_by_endpoint={MODEL: "kestrel-labs"}))
    m.map(parse_exposition(with_itl_counts(base, {}), "vllm", now=T0, complete=True))
    # 100 gaps: 50 in (25, 50] ms, 49 in (50, 75] ms, 1 in (100, 150] ms
    cum = {0.01: 0, 0.025: 0, 0.05: 50, 0.075: 99, 0.1: 99}
    cum |= {le: 100 for le in ITL_LE[5:]} | {float("inf"): 100}
    r = m.map(parse_exposition(with_itl_counts(base, cum), "vllm", now=T0 + 10, complete=True))
    (row,) = lat_rows(r)
    assert row["itl_p50_ms"] == pytest.approx(50.0)
    assert row["itl_p99_ms"] == pytest.approx(50 + 25 * (99 - 50) / 49)
    assert row["tenant"] == "kestrel-labs"
    # the next interval only counts what happened since: 10 more, all in (200, 300] ms
    cum2 = {k: v + (10 if k >= 0.3 else 0) for k, v in cum.items()}
    (row2,) = lat_rows(
        m.map(parse_exposition(with_itl_counts(base, cum2), "vllm", now=T0 + 20, complete=True))
    )
    assert row2["itl_p50_ms"] == pytest.approx(250.0) and row2["itl_p99_ms"] == pytest.approx(299.0)


def hist(name: str, labels: str, cum: dict[str, float]) -> str:
    out = [f'{name}_bucket{{{labels},le="{le}"}} {v}' for le, v in cum.items()]
    total = cum.get("+Inf", max(cum.values()))
    out += [f"{name}_count{{{labels}}} {total}", f"{name}_sum{{{labels}}} 1.0"]
    return "\n".join(out) + "\n"


def test_engines_of_one_endpoint_are_summed_before_the_quantile():
    m = LatencyMapper("x")
    lab = 'model_name="m",service="chat",namespace="acme"'

    def text(a, b):
        return hist("vllm:inter_token_latency_seconds", f'engine="0",{lab}', a) + hist(
            "vllm:inter_token_latency_seconds", f'engine="1",{lab}', b
        )

    zero = {"0.01": 0, "0.02": 0, "+Inf": 0}
    m.map(parse_exposition(text(zero, zero), "x", now=T0))
    # engine 0 saw 98 fast gaps, engine 1 two slow ones: together p99 is in the slow bucket
    (row,) = lat_rows(
        m.map(
            parse_exposition(
                text({"0.01": 98, "0.02": 98, "+Inf": 98}, {"0.01": 0, "0.02": 2, "+Inf": 2}),
                "x",
                now=T0 + 1,
            )
        )
    )
    assert (row["endpoint"], row["tenant"]) == ("chat", "acme")
    assert row["itl_p99_ms"] == pytest.approx(10 + 10 * (99 - 98) / 2)


def test_dynamo_and_triton_histograms_are_read():
    m = LatencyMapper("x")

    def text(n):
        return hist(
            "dynamo_frontend_inter_token_latency_seconds",
            'model="llama",job="dyn"',
            {"0.01": n, "0.02": 2 * n, "+Inf": 2 * n},
        ) + hist(
            "nv_inference_first_response_histogram_ms",
            'model="resnet",version="1"',
            {"10": 0, "100": n, "+Inf": n},
        )

    m.map(parse_exposition(text(0), "x", now=T0))
    rows = {r["endpoint"]: r for r in lat_rows(m.map(parse_exposition(text(10), "x", now=T0 + 2)))}
    assert rows["dyn"]["model"] == "llama" and rows["dyn"]["itl_p50_ms"] == pytest.approx(10.0)
    # Triton's histogram is in ms already; 10 first responses in (10, 100] ms in 2 s
    assert rows["resnet"]["ttft_p50_ms"] == pytest.approx(55.0)
    assert rows["resnet"]["requests_per_s"] == pytest.approx(5.0)


def test_counters_going_backwards_are_a_reason_and_a_new_baseline():
    m = LatencyMapper("x")
    name, lab = "vllm:inter_token_latency_seconds", 'model_name="m",engine="0"'
    m.map(parse_exposition(hist(name, lab, {"0.01": 50, "+Inf": 100}), "x", now=T0))
    r = m.map(parse_exposition(hist(name, lab, {"0.01": 5, "+Inf": 10}), "x", now=T0 + 1))
    assert lat_rows(r) == []
    assert r.skipped == [
        "x: vllm:inter_token_latency_seconds (m, m): histogram counters went "
        "backwards (restart?): new baseline"
    ]
    r = m.map(parse_exposition(hist(name, lab, {"0.01": 15, "+Inf": 20}), "x", now=T0 + 2))
    (row,) = lat_rows(r)
    assert r.skipped == [] and row["itl_p50_ms"] == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("cum", "reason"),
    [
        ({"0.01": 5, "0.02": 10}, "histogram without its +Inf bucket: skipped"),
        (
            {"0.01": 5, "0.02": 3, "+Inf": 10},
            "histogram buckets not cumulative (missing buckets?): skipped",
        ),
    ],
)
def test_broken_histograms_are_skipped_with_a_reason(cum, reason):
    m = LatencyMapper("x")
    name, lab = "vllm:inter_token_latency_seconds", 'model_name="m"'
    for t in (T0, T0 + 1):
        r = m.map(parse_exposition(hist(name, lab, cum), "x", now=t))
        assert lat_rows(r) == [] and r.skipped == [f"x: {name} (m, m): {reason}"]


def test_buckets_missing_since_last_gather_reset_the_baseline():
    m = LatencyMapper("x")
    name, lab = "vllm:inter_token_latency_seconds", 'model_name="m"'
    m.map(parse_exposition(hist(name, lab, {"0.01": 1, "0.02": 2, "+Inf": 3}), "x", now=T0))
    r = m.map(parse_exposition(hist(name, lab, {"0.01": 2, "+Inf": 6}), "x", now=T0 + 1))
    assert lat_rows(r) == []
    assert r.skipped == [
        f"x: {name} (m, m): bucket layout changed (3 -> 2 buckets, missing buckets?): new baseline"
    ]


def test_histogram_quantile_edges():
    le = np.array([0.1, 0.2, np.inf])
    assert histogram_quantile(0.5, le, np.array([0.0, 0.0, 0.0])) is None
    assert histogram_quantile(0.99, le, np.array([0.0, 0.0, 10.0])) == 0.2  # rank in +Inf bucket
    assert histogram_quantile(0.5, le, np.array([10.0, 10.0, 10.0])) == pytest.approx(0.05)
