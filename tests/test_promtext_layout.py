"""A target's layout (collectors.promtext.layout): the next body of the same series is read
without parsing labels, to exactly what the full parse gives, and anything else falls back.

The mappers reuse per-series work while the layout holds (DcgmMapper, FabricMapper,
LatencyMapper plans): a pipeline fed through layouts must write what one fed full parses
writes, scrape after scrape, on the simulated fleet with its faults (blanks, Xids, link
downs, counter resets) and on the real captures.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from collectors.promtext.layout import learn, read, read_many
from collectors.promtext.parse import _SAMPLE, parse_exposition
from collectors.promtext.pipeline import TelemetryOptions, TelemetryPipeline
from collectors.promtext.series import merge
from collectors.scrape_source import parse_body
from collectors.sim.exporters import SimExporters
from collectors.sim.faults import DEFAULT_FAULTS
from collectors.sim.model import SimModel
from tests.upstream_samples import scrapes_in, upstream

T0 = 1_773_114_090.0

CAPTURES = [
    ("dcgm-exporter", "nvidia-aicr-8xH100", "dcgm-exporter-sampled.prom"),
    ("dcgm-exporter", "cncf-kops-1xL4", "dcgm-exporter-full-default-counters.prom"),
    ("dcgm-exporter", "runai-a100-mig", "a100-mig-4-active-workloads.txt"),
    ("dcgm-exporter", "nvidia-docs-a100-mig", "a100-mig-1g.5gb-gpu-and-instance.txt"),
    ("dcgm-exporter", "nvidia-readme", "k8s-quickstart-memory-temp-blank.txt"),
    ("node_exporter", "e2e-output-infiniband.txt"),
    ("vllm", "vllm-v1-qwen2.5-0.5b-kops-metrics.txt"),
]


def _next_scrape(text: str, step: float) -> str:
    """The same series with every value moved by `step` (timestamps, if any, kept)."""
    out = []
    for line in text.split("\n"):
        m = _SAMPLE.match(line.strip()) if line.strip() and line.strip()[0] != "#" else None
        if m is None or line != line.strip():
            out.append(line)
            continue
        out.append(line[: m.start(3)] + repr(float(m.group(3)) + step) + line[m.end(3) :])
    return "\n".join(out)


def _same(a, b) -> None:
    assert a.names == b.names
    assert [dict(x) for x in a.labels] == [dict(x) for x in b.labels]
    assert np.array_equal(a.values, b.values) and np.array_equal(a.ts, b.ts)
    assert a.skipped == b.skipped


@pytest.mark.parametrize("parts", CAPTURES, ids=lambda p: p[-1])
def test_layout_reads_the_next_scrape_of_a_real_capture_as_the_full_parse_does(parts):
    text = scrapes_in(upstream(*parts))[0].strip("\n") + "\n"
    body = text.encode()
    snap = parse_exposition(text, "cap", now=T0)
    layout = learn(body, snap, T0)
    if snap.skipped:  # a body with a skipped line is always parsed in full
        assert layout is None
        return
    assert layout is not None and len(snap) > 0
    nxt = _next_scrape(text, 1.5)
    got = read(nxt.encode(), layout, T0 + 5)
    assert got is not None and got.layout is layout
    _same(got, parse_exposition(nxt, "cap", now=T0 + 5))
    assert not np.array_equal(got.values, snap.values)


BASE = (
    "# HELP m help text\n# TYPE m gauge\n"
    'm{gpu="0",modelName="NVIDIA H100 80GB HBM3"} 1 1700000000000\n'
    'm{gpu="1",modelName="NVIDIA H100 80GB HBM3"} 2 1700000000000\n'
    'h_bucket{le="0.5"} 3 1700000000000\nh_bucket{le="+Inf"} 4 1700000000000\n'
)


@pytest.mark.parametrize("with_ts", [True, False])
@pytest.mark.parametrize(
    "change",
    [
        ("label value", lambda t: t.replace('gpu="1"', 'gpu="2"')),
        ("series added", lambda t: t + "m2 7 1700000000000\n"),
        ("series removed", lambda t: "\n".join(t.split("\n")[:2] + t.split("\n")[3:])),
        ("comment turned sample", lambda t: t.replace("# TYPE m gauge", "m3 5")),
        ("NaN value", lambda t: re.sub(r"\} 2(?=[ \n])", "} NaN", t)),
        ("+Inf value", lambda t: re.sub(r"\} 2(?=[ \n])", "} +Inf", t)),
        ("not a number", lambda t: re.sub(r"\} 2(?=[ \n])", "} 2x", t)),
        ("digits with an underscore", lambda t: re.sub(r"\} 2(?=[ \n])", "} 2_000", t)),
        ("a non-ASCII digit", lambda t: re.sub(r"\} 2(?=[ \n])", "} \u0662", t)),
        ("cut short", lambda t: t[:-5]),
        (
            "token moved to the next line",
            lambda t: re.sub(r"\n(m\{gpu=\"1\"[^}]*\}) 2", r" 2\n\1", t),
        ),
        ("space inside a label", lambda t: t.replace("80GB HBM3", "80GB  HBM3", 1)),
        ("HTML", lambda t: "<html><body>login</body></html>\n"),
        ("empty", lambda t: ""),
        ("timestamp not digits", lambda t: t.replace("1700000000000\nm{", "17e11\nm{", 1)),
    ],
    ids=lambda c: c[0],
)
def test_layout_refuses_any_other_body_and_the_full_parse_takes_it(change, with_ts):
    base = BASE if with_ts else re.sub(r" 1700000000000\n", "\n", BASE)
    layout = learn(base.encode(), parse_exposition(base, "t", now=T0), T0)
    assert layout is not None and layout.has_ts is with_ts
    body = change[1](base)
    if not with_ts and change[0] == "timestamp not digits":
        body = base.replace("} 1\n", "} 1 17e11\n")
    assert read(body.encode(), layout, T0 + 5) is None
    # what the scrape source does with it: the full parse, with its reasons
    snap, _ = parse_body(body.encode(), "t", T0 + 5, {}, 40, layout, True)
    _same(snap, parse_exposition(body, "t", now=T0 + 5, extra_labels={}))


def test_layout_not_learned_from_a_body_with_skips_or_mixed_timestamps():
    for text in (
        "a 1\nnot a sample line at all !\n",
        "a NaN\nb 1\n",
        "a 1 1700000000000\nb 2\n",  # timestamps on some lines only
        "a\t1\n",  # tab-separated: the full parser takes it, the layout does not
    ):
        snap = parse_exposition(text, "t", now=T0)
        assert learn(text.encode(), snap, T0) is None, text


def _sim_bodies(scale: int, windows: int) -> list[list[tuple[str, dict, bytes]]]:
    model = SimModel(seed=7, scale=scale, start=T0, faults=DEFAULT_FAULTS)
    exp = SimExporters(model)
    targets = exp.targets()
    out = []
    for k in range(windows):
        exp.advance(int(T0) + 15 * k)
        out.append(
            [
                (t.path, {"instance": t.host, **t.labels}, (exp.render(t.path) or "").encode())
                for t in targets
            ]
        )
    return out


def _rows(g) -> list:
    out = []
    for b in g.batches:
        rows = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in b.data.to_pylist()
        ]
        out.append((b.table, rows))
    return out


def test_pipeline_through_layouts_writes_what_full_parses_write_on_the_simulated_fleet():
    opts = TelemetryOptions(link_kind_by_host={"rtx-*": "roce"})
    fast, full = TelemetryPipeline("s", opts), TelemetryPipeline("s", opts)
    layouts: dict[str, object] = {}
    reused = 0
    for k, bodies in enumerate(_sim_bodies(1, 6)):
        at = T0 + 15 * k
        snaps_fast, snaps_full = [], []
        for path, labels, body in bodies:
            if not body:
                continue
            before = layouts.get(path)
            s, layouts[path] = parse_body(body, path, at, labels, 40, before, True)
            reused += s.layout is not None and s.layout is before
            snaps_fast.append(s)
            snaps_full.append(parse_body(body, path, at, labels, 40)[0])
        a, b = merge(snaps_fast), merge(snaps_full)
        assert b.layout is None
        ga, gb = fast.map(a, at), full.map(b, at)
        assert _rows(ga) == _rows(gb), f"window {k}"
        assert ga.skipped == gb.skipped and ga.dropped == gb.dropped
    assert reused > 0  # the later windows went through the layouts
    for mapper in (fast.dcgm, fast.fabric, fast.latency):
        assert mapper._plan is not None and mapper._plan_key is not None


@pytest.mark.parametrize(
    "parts",
    [
        ("dcgm-exporter", "nvidia-readme", "k8s-quickstart-memory-temp-blank.txt"),
        ("dcgm-exporter", "runai-a100-mig", "a100-mig-4-active-workloads.txt"),
        ("node_exporter", "e2e-output-infiniband.txt"),
        ("vllm", "vllm-v1-qwen2.5-0.5b-kops-metrics.txt"),
    ],
    ids=lambda p: p[-1],
)
def test_pipeline_through_layouts_on_real_captures_blanks_and_resets_included(parts):
    """Values that come and go between blank and real, and counters that go back: the
    plans must not remember a value, only where it goes."""
    text = scrapes_in(upstream(*parts))[0].strip("\n") + "\n"
    blank_then_real = re.sub(r" 9223372036854775794\n", " 41\n", text)
    bodies = [
        text,
        _next_scrape(text, 2.0),
        blank_then_real,
        _next_scrape(text, 1.0),  # counters went back: a reset
        text,
    ]
    fast, full = TelemetryPipeline("s"), TelemetryPipeline("s")
    layout = None
    for k, body in enumerate(bodies):
        at = T0 + 15 * k
        a, layout = parse_body(body.encode(), "cap", at, {"instance": "n1:9400"}, 40, layout, True)
        b, _ = parse_body(body.encode(), "cap", at, {"instance": "n1:9400"}, 40)
        ga, gb = fast.map(merge([a]), at), full.map(merge([b]), at)
        assert _rows(ga) == _rows(gb), f"scrape {k}"
        assert ga.skipped == gb.skipped and ga.dropped == gb.dropped
    assert layout is not None or b.skipped  # a body with skipped lines is parsed in full


def test_bodies_read_together_each_as_on_its_own():
    """read_many: one body that does not fit (or has no layout) costs only itself."""
    base = re.sub(r" 1700000000000\n", "\n", BASE)
    layout_ts = learn(BASE.encode(), parse_exposition(BASE, "t", now=T0), T0)
    layout_plain = learn(base.encode(), parse_exposition(base, "t", now=T0), T0)
    assert layout_ts is not None and layout_plain is not None
    bodies = [
        _next_scrape(BASE, 1.0),  # fits
        BASE.replace('gpu="1"', 'gpu="7"'),  # a changed label: does not fit
        _next_scrape(base, 2.0),  # fits, no timestamps
        base.replace("} 1\n", "}\n"),  # a line with too few tokens: refused, alone
        _next_scrape(base, 3.0),  # no layout given
        _next_scrape(BASE, 4.0),  # fits
    ]
    lays = [layout_ts, layout_ts, layout_plain, layout_plain, None, layout_ts]
    got = read_many([b.encode() for b in bodies], lays, [T0 + 5] * len(bodies))
    assert [g is not None for g in got] == [True, False, True, False, False, True]
    for g, body, lay in zip(got, bodies, lays, strict=True):
        if g is not None:
            _same(g, parse_exposition(body, "t", now=T0 + 5))
            alone = read(body.encode(), lay, T0 + 5)
            assert alone is not None
            _same(g, alone)


def test_an_empty_body_or_a_changed_one_costs_one_plan_not_one_per_gather():
    base = re.sub(r" 1700000000000\n", "\n", BASE)
    dcgm = (
        'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a",Hostname="h1"} 40\n'
        'DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a",Hostname="h1"} 300\n'
    )
    pipe = TelemetryPipeline("s")
    layouts: list = [None, None, None]
    plans = []
    for k, bodies in enumerate(
        [
            [base, dcgm, ""],
            [base, dcgm, ""],  # an empty body: no series, no new plan
            [base, dcgm.replace('gpu="0"', 'gpu="1"'), ""],  # changed: parsed in full, one plan
            [base, dcgm.replace('gpu="0"', 'gpu="1"'), ""],  # the new layout holds
        ]
    ):
        snaps = []
        for j, body in enumerate(bodies):
            s, layouts[j] = parse_body(body.encode(), f"t{j}", T0 + k, {}, 40, layouts[j], True)
            snaps.append(s)
        merged = merge(snaps)
        assert merged.layout is not None
        pipe.map(merged, T0 + k)
        plans.append(pipe.dcgm._plan)
    assert plans[0] is plans[1] and plans[1] is not plans[2] and plans[2] is plans[3]


@pytest.mark.parametrize(
    "stamp", ["99999999999999999999", "9" * 400, "9" * 5000, str(2**53 + 1), "0" * 17 + "1"]
)
def test_a_timestamp_out_of_range_skips_its_line_with_a_reason_never_raises(stamp):
    good = 'm{gpu="1"} 6 1700000000000\n'
    body = f'm{{gpu="0"}} 5 {stamp}\n{good}'.encode()
    snap, layout = parse_body(body, "t", T0, {}, 40, None, True)
    assert snap.values.tolist() == [6.0] and snap.ts.tolist() == [1_700_000_000.0]
    assert snap.skipped == [f"t: line 1: timestamp {stamp[:24]!r} out of range, skipped"]
    assert layout is None  # a body with a line skipped is parsed in full next time
    # the same through a layout learned on a clean body: it does not fit, the full parse
    # says why
    clean = f'm{{gpu="0"}} 5 1700000000000\n{good}'.encode()
    _, layout = parse_body(clean, "t", T0, {}, 40, None, True)
    assert layout is not None and layout.has_ts
    assert read(body, layout, T0) is None
    again, _ = parse_body(body, "t", T0, {}, 40, layout, True)
    _same(again, snap)


def test_one_stamp_for_the_body_or_one_per_line_read_as_the_full_parse_does():
    one = "".join(f'm{{gpu="{g}"}} {g}.5 1700000000000\n' for g in range(4))
    each = "".join(f'm{{gpu="{g}"}} {g}.5 {1700000000000 + g}\n' for g in range(4))
    layout = learn(one.encode(), parse_exposition(one, "t", now=T0), T0)
    assert layout is not None and layout.has_ts
    for text in (one, each, one.replace("1700000000000", str(2**53))):
        _same(read(text.encode(), layout, T0), parse_exposition(text, "t", now=T0))
    for bad in (str(2**53 + 1), "1" * 17, "-5", "1e3"):
        assert read(one.replace("1700000000000", bad).encode(), layout, T0) is None
        mixed = each.replace("1700000000003", bad)
        assert read(mixed.encode(), layout, T0) is None


@pytest.mark.parametrize("value", ["1_000", "\u0661", "\uff11", "1e1_0"])
def test_a_value_the_exposition_format_does_not_take_is_skipped_with_a_reason(value):
    body = f'm{{gpu="0"}} {value}\nm{{gpu="1"}} 6\n'
    snap = parse_exposition(body, "t", now=T0)
    assert snap.values.tolist() == [6.0]
    assert snap.skipped == [f"t: line 1: value {value!r} is not a number, skipped"]
