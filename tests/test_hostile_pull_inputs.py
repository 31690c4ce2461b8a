"""Hostile input on the pull paths (exposition text, Prometheus API JSON), as a tester
who has never seen the code attacks it: real captures, mutated. Whatever comes in,
the pipeline returns rows whose values are in their columns' ranges (or NULL), with
the reasons for what it skipped, and never raises: one target's garbage must not
cost the gather of the whole fleet (the scrape source maps all targets at once).

Each class of input found to crash a gather or to store a wild value has an
explicit regression below the fuzz tests.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.prom_api import PromApiError, _result
from collectors.promtext.parse import parse_exposition
from collectors.promtext.pipeline import TelemetryPipeline
from collectors.promtext.series import (
    MAX_LABEL_CHARS,
    from_prometheus_result,
    matrix_steps,
)
from fleettui.safe_text import EscapingFormatter
from tests.upstream_samples import ours, scrapes_in, upstream

T0 = 1_773_114_090.0
FUZZ = settings(max_examples=60, deadline=None, derandomize=True)

CAPTURES = {
    "h100": ("dcgm-exporter", "nvidia-aicr-8xH100", "dcgm-exporter-sampled.prom"),
    "mig": ("dcgm-exporter", "runai-a100-mig", "a100-mig-active-2x1g.5gb-1x2g.10gb.txt"),
    "ib": ("node_exporter", "e2e-output-infiniband.txt"),
}
OURS = {"dynamo": "dynamo-frontend.txt", "vllm": "vllm-0.9-both-itl-names.txt"}


def _texts() -> dict[str, str]:
    out = {k: scrapes_in(upstream(*p))[0] for k, p in CAPTURES.items()}
    out |= {k: scrapes_in(ours(p))[0] for k, p in OURS.items()}
    return out


TEXTS = _texts()

# Value tokens of every class a number can come as
VALUES = [
    "NaN", "+Inf", "-Inf", "-0", "0", "1e308", "-1e308", "1e400", "9223372036854775807",
    "9.3e18", "-5", "1e-320", "0x10", "1_0", "1E3", "+7", ".5", "", "184467440737095516160",
]  # fmt: skip
# Timestamps (ms) far in the past, the future, negative, at the parser's limits
STAMPS = [
    "0", "-1", "-9007199254740992", "9007199254740992", "99999999999999",
    "253402300800000", "1773114090000", "17731140900000",
]  # fmt: skip
# Label values: quotes, backslashes, newlines, escapes, markup, long, NUL
LABEL_VALUES = [
    'a\\"b', "x\\\\", "a\\nb", "\x1b[31mred\x1b]0;t\x07", "[bold]x[/bold]", "y" * 5000,
    "\x00", "\u202e", "", "GPU-" + "f" * 1025,
]  # fmt: skip


def _rows(batches, table):
    return [r for b in batches if b.table == table for r in b.data.to_pylist()]


def assert_sane(batches) -> None:
    """The store's ranges: finite numbers, no overflowed or negative integers, times
    between 1970 and a day ahead, percentages 0-100, strings of bounded length."""
    for b in batches:
        for name in b.data.column_names:
            col = b.data.column(name)
            where = f"{b.table}.{name}"
            if pa.types.is_floating(col.type):
                a = col.drop_null().to_numpy()
                assert np.isfinite(a).all(), where
                if name.endswith("_pct"):
                    assert ((a >= 0) & (a <= 100)).all(), (where, a)
                if b.table in ("latency_samples", "link_samples", "slices", "assignments"):
                    assert (a >= 0).all(), (where, a)
            elif pa.types.is_integer(col.type):
                a = col.drop_null().to_numpy()
                if name != "code":
                    assert (a >= 0).all(), (where, a)
            elif pa.types.is_timestamp(col.type):
                a = col.drop_null().cast(pa.int64()).to_numpy()
                assert ((a >= 0) & (a <= (T0 + 86400) * 1e6)).all(), where
            elif pa.types.is_string(col.type):
                assert all(len(v) <= 3 * MAX_LABEL_CHARS for v in col.drop_null().to_pylist())


def run(*texts: str, labels=None):
    """Each text one gather of one pipeline, 15 s apart; every gather checked."""
    pipe = TelemetryPipeline("fz")
    out = []
    for k, text in enumerate(texts):
        now = T0 + 15 * k
        snap = parse_exposition(text, "fz", now=now, extra_labels=labels or {"instance": "n1:9"})
        g = pipe.map(snap, now)
        assert_sane(g.batches)
        out.append(g)
    return out


def _set_values(text: str, value: str, metric: str | None = None) -> str:
    """Every sample's value (or `metric`'s) replaced by `value`."""
    out = []
    for line in text.split("\n"):
        if line and not line.startswith("#") and (metric is None or line.startswith(metric)):
            line = line.rsplit(" ", 1)[0] + " " + value
        out.append(line)
    return "\n".join(out)


def _metrics(text: str) -> list[str]:
    names = {
        line.split("{")[0].split(" ")[0]
        for line in text.split("\n")
        if line and not line.startswith("#")
    }
    return sorted(names)


# -- fuzz: exposition text ----------------------------------------------------------
@FUZZ
@given(
    which=st.sampled_from(sorted(TEXTS)),
    value=st.sampled_from(VALUES),
    pick=st.integers(0, 10_000),
    every=st.booleans(),
)
def test_fuzz_any_value_in_any_series_is_stored_in_range_or_skipped(which, value, pick, every):
    text = TEXTS[which]
    names = _metrics(text)
    bad = _set_values(text, value, None if every else names[pick % len(names)])
    run(text, bad, text)  # baseline, the wild value, then back (counters, histograms)
    run(bad, text)


@FUZZ
@given(which=st.sampled_from(sorted(TEXTS)), stamp=st.sampled_from(STAMPS))
def test_fuzz_any_sample_timestamp_is_kept_in_range_or_skipped(which, stamp):
    text = TEXTS[which]
    stamped = "\n".join(
        f"{line} {stamp}" if line and not line.startswith("#") else line
        for line in text.split("\n")
    )
    run(stamped, stamped, text)


@FUZZ
@given(
    which=st.sampled_from(sorted(TEXTS)),
    value=st.sampled_from(LABEL_VALUES),
    nth=st.integers(0, 6),
)
def test_fuzz_any_label_value_is_stored_bounded_or_skipped(which, value, nth):
    out = []
    for line in TEXTS[which].split("\n"):
        if line and not line.startswith("#") and '="' in line:
            parts = line.split('="')
            k = 1 + nth % (len(parts) - 1)
            rest = parts[k].split('"', 1)[1] if '"' in parts[k] else ""
            parts[k] = value + '"' + rest
            line = '="'.join(parts)
        out.append(line)
    run("\n".join(out), TEXTS[which])


@FUZZ
@given(
    which=st.sampled_from(sorted(TEXTS)),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8),
)
def test_fuzz_truncated_or_damaged_bytes_never_raise(which, cut, flips):
    body = bytearray(TEXTS[which].encode())
    for at, byte in flips:
        body[int(at * (len(body) - 1))] = byte
    damaged = bytes(body[: int(cut * len(body))]).decode("utf-8", errors="replace")
    run(TEXTS[which], damaged, TEXTS[which])


# -- fuzz: Prometheus API JSON --------------------------------------------------------
API = json.loads(
    upstream(
        "dcgm-exporter", "nvidia-aicr-8xH100", "prom-api-query-DCGM_FI_DEV_GPU_TEMP.json"
    ).read_text()
)["data"]["result"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.sampled_from(["NaN", "Inf", "-Inf", "1e999", "x", "", "\x1b[2J", "12"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
API_PATHS = [
    (),
    (0,),
    (0, "metric"),
    (0, "metric", "Hostname"),
    (0, "metric", "UUID"),
    (0, "metric", "__name__"),
    (0, "value"),
    (0, "value", 0),
    (0, "value", 1),
    (0, "values"),
]


def _api_mutated(path, value):
    doc = copy.deepcopy(API)
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _map_api(result) -> None:
    pipe = TelemetryPipeline("fz")
    g = pipe.map(from_prometheus_result(result, "api"), T0)
    assert_sane(g.batches)
    for step in matrix_steps(result, "api"):
        assert_sane(pipe.map(step, T0).batches)


@FUZZ
@given(path=st.sampled_from(API_PATHS), value=json_values)
def test_fuzz_api_answers_of_any_shape_are_mapped_or_skipped_never_raise(path, value):
    _map_api(_api_mutated(path, value))
    if path and path[-1] == "value":  # the same as a range's points
        doc = _api_mutated(path, value)
        doc[0]["values"] = [doc[0].pop("value")] if isinstance(value, list) else value
        _map_api(doc)


# -- regressions: each crashed a gather or stored a wild value --------------------------
def _reasons(g) -> str:
    return " | ".join(g.skipped) + " | " + " | ".join(g.dropped)


def test_a_far_future_or_pre_1970_stamp_is_skipped_with_its_reason_others_kept():
    # year 287396 crashed the whole map (datetime), year 5138 left the host never stale
    text = TEXTS["h100"]
    for stamp in ("9007199254740992", "99999999999999", "-9007199254740992"):
        one = text.replace('gpu="0"', 'gpu="0"', 1)
        lines = one.split("\n")
        i = next(k for k, line in enumerate(lines) if line.startswith("DCGM_FI_DEV_GPU_TEMP"))
        lines[i] += " " + stamp
        (g,) = run("\n".join(lines))
        assert "DCGM_FI_DEV_GPU_TEMP" in _reasons(g) and "sample time" in _reasons(g)
        assert len(_rows(g.batches, "gpu_samples")) == 8


def test_dcgm_values_outside_their_column_are_null_with_the_reason():
    text = _set_values(TEXTS["h100"], "-5", "DCGM_FI_DEV_GPU_UTIL")
    text = _set_values(text, "1e15", "DCGM_FI_DEV_POWER_USAGE")
    (g,) = run(text)
    rows = _rows(g.batches, "gpu_samples")
    assert len(rows) == 8
    assert all(r["util_pct"] is None and r["power_w"] is None for r in rows)
    assert all(r["temp_c"] is not None for r in rows)  # the other columns kept
    why = "value outside its column's range, stored as NULL"
    assert g.dropped[f"DCGM_FI_DEV_GPU_UTIL: {why}"] == 8
    assert g.dropped[f"DCGM_FI_DEV_POWER_USAGE: {why}"] == 8
    # MiB * 2**20 overflowed int64 (1e15 MiB), and a slice's activity of -0.4 (-40 %)
    mig = _set_values(TEXTS["mig"], "1e15", "DCGM_FI_DEV_FB_USED")
    mig = _set_values(mig, "-0.4", "DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    (g,) = run(mig)
    slices = _rows(g.batches, "slice_samples")
    assert slices and all(r["mem_used_bytes"] is None for r in slices)
    assert all(r["util_pct"] is None for r in slices)
    assert g.dropped[f"DCGM_FI_DEV_FB_USED: {why}"] > 0


def test_a_wild_xid_is_no_event_and_no_crash():
    # -1e308 reached int() and int64: OverflowError, the gather lost
    for v in ("-1e308", "1e30", "-79"):
        (g,) = run(_set_values(TEXTS["h100"], v, "DCGM_FI_DEV_XID_ERRORS"))
        assert _rows(g.batches, "events") == []
        assert len(_rows(g.batches, "gpu_samples")) == 8


def test_wild_latency_buckets_give_null_quantiles_with_the_reason():
    text = TEXTS["dynamo"]
    bigger = _set_values(text, "1e308")  # bucket bounds stay, counts overflow the quantile
    gs = run(text, bigger)
    lat = _rows(gs[1].batches, "latency_samples")
    assert lat and any(r[k] is None for r in lat for k in r if k.endswith("_ms"))
    assert "not finite" in _reasons(gs[1])  # and the others are finite (assert_sane)


def test_a_huge_fabric_error_counter_is_null_not_a_crashed_gather():
    text = TEXTS["ib"]
    (_, g, g2) = run(
        _set_values(text, "0"), _set_values(text, "1e30"), _set_values(text, "1.7e308")
    )
    links = _rows(g.batches, "link_samples")
    assert links and all(r["errors"] is None and r["tx_bytes_per_s"] is None for r in links)
    assert "stored as NULL" in _reasons(g)
    assert _rows(g2.batches, "link_samples")


@pytest.mark.parametrize("value", ["y" * (MAX_LABEL_CHARS + 1), "h" * 100_000], ids=["1k", "100k"])
def test_a_label_value_over_the_limit_skips_its_series_text_and_api(value):
    text = TEXTS["h100"].replace('Hostname="', f'Hostname="{value}', 1)
    (g,) = run(text)
    # the value's limit, or the block's (64 KiB, not parsed at all)
    assert re.search(r"bad labels \((a label value|labels) over \d+ chars\)", _reasons(g))
    assert all(len(r["host"]) < 100 for r in _rows(g.batches, "gpu_samples"))
    snap = from_prometheus_result(_api_mutated((0, "metric", "Hostname"), value), "api")
    assert len(snap) == len(API) - 1 and f"over {MAX_LABEL_CHARS} chars" in snap.skipped[0]


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ((), {"a": 1}, "result is a dict, not a list"),
        ((0,), "x", "series is a str, not an object"),
        ((0, "metric"), [1, 2], "labels are not strings"),
        ((0, "metric", "gpu"), 3, "labels are not strings"),
        ((0, "value"), 7, "not [time, value] pairs"),
        ((0, "value", 0), "NaN", "is not a time"),
        ((0, "value", 0), 1e300, "is not a time"),
        ((0, "value", 1), [1], "is not a number"),
    ],
)
def test_api_answers_of_the_wrong_shape_are_skipped_with_the_reason(path, value, reason):
    result = _api_mutated(path, value)
    snap = from_prometheus_result(result, "api")
    assert any(reason in s for s in snap.skipped), snap.skipped
    _map_api(result)


def test_api_json_nested_past_the_decoder_is_one_clear_error():
    with pytest.raises(PromApiError, match="not a Prometheus API answer"):
        _result(b"[" * 100_000 + b"]" * 100_000, "http://p/api/v1/query")
    body = b'{"status":"success","data":{"result":' + b"[" * 50_000 + b"]" * 50_000 + b"}}"
    with pytest.raises(PromApiError, match="RecursionError"):
        _result(body, "http://p/api/v1/query")


def test_backfill_steps_ahead_of_the_gather_are_skipped():
    from collectors.prometheus_source import PrometheusOptions, PrometheusSource

    src = PrometheusSource(PrometheusOptions())
    try:
        doc = copy.deepcopy(API)
        point = doc[0].pop("value")
        # year 33658 (past datetime's 9999), then past the parser's limit (year 287396)
        doc[0]["values"] = [[T0 - 15, point[1]], [1e12, point[1]], [1e13, point[1]]]
        g = src._map_backfill([("sel", doc)], [], T0)
        assert_sane(g.batches)
        assert len(_rows(g.batches, "gpu_samples")) == 1  # T0 - 15's
        assert any("backfill step 1000000000000 is before 1970 or over" in s for s in g.skipped)
        assert any("time '10000000000000.0' is not a time" in s for s in g.skipped)
    finally:
        src._executor.shutdown()


def test_log_lines_escape_fleet_text():
    fmt = EscapingFormatter("%(levelname)s %(message)s")
    rec = logging.LogRecord(
        "x", logging.WARNING, "f", 1, "topic %s", ("a\x1b]0;t\x07\nFAKE",), None
    )
    line = fmt.format(rec)
    assert "\x1b" not in line and "\x07" not in line and "\n" not in line
    assert line == "WARNING topic a\\x1b]0;t\\x07\\x0aFAKE"
    try:
        raise ValueError("\x1b[2J")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, "f", 1, "boom", (), sys.exc_info())
    text = fmt.format(rec)
    assert "\x1b" not in text and "\\x1b[2J" in text and "Traceback" in text.split("\n")[1]


def test_the_nan_guard_in_assert_sane_can_fail():
    """The checker itself: a batch with a wild value is caught (a mutant-proof guard)."""
    from storage.batch import make_batch

    with pytest.raises(AssertionError):
        assert_sane([make_batch("gpu_samples", {"util_pct": [math.inf]})])
    with pytest.raises(AssertionError):
        assert_sane([make_batch("gpu_samples", {"mem_used_bytes": [-1]})])


@pytest.mark.timeout(60)  # a hang guard, not a speed goal: the old pattern took hours
@pytest.mark.parametrize(
    "line",
    ["a" + " " * 1_000_000 + "1 2 3", "a" + "\t" * 1_000_000 + "{} 1 2 3"],
    ids=["spaces", "tabs"],
)
def test_a_line_of_a_million_blanks_is_one_reason_not_a_hung_parser(line):
    # `[ \t]*` then `[ \t]+` after a bare name: quadratic backtracking (8,000 blanks: 1 s)
    snap = parse_exposition(f"{line}\nm 1\n", "t", now=T0)
    assert snap.names == ["m"] and len(snap.skipped) == 1 and "line 1" in snap.skipped[0]


def test_a_label_block_over_64_kib_is_skipped_unparsed():
    # prometheus_client's label parser is superlinear: a 64 MiB block would take hours
    from collectors.promtext.parse import MAX_BLOCK_CHARS

    many = ",".join(f'l{i}="v"' for i in range(MAX_BLOCK_CHARS // 7))
    snap = parse_exposition(f'a{{{many}}} 1\nm{{g="0"}} 2\n', "t", now=T0)
    assert snap.names == ["m"]
    assert f"labels over {MAX_BLOCK_CHARS} chars" in snap.skipped[0]


@pytest.mark.parametrize(
    "poison", ["\ud800", "\udfff tail", "nul\x00byte"], ids=["ud800", "udfff", "nul"]
)
def test_strings_the_store_cannot_hold_skip_their_series_api_and_text(poison):
    # JSON's "\ud800" is a lone surrogate: Arrow refused the gather's whole batch
    for path in ((0, "metric", "Hostname"), (0, "metric", "__name__"), (0, "metric")):
        value = {"__name__": "DCGM_FI_DEV_GPU_TEMP", poison: "x"} if len(path) == 2 else poison
        result = _api_mutated(path, value)
        snap = from_prometheus_result(result, "api")
        assert len(snap) == len(API) - 1 and "NUL or a lone surrogate" in snap.skipped[0]
        _map_api(result)
        body = json.dumps({"status": "success", "data": {"result": result}}).encode()
        assert len(from_prometheus_result(_result(body, "api"), "api")) == len(API) - 1
    if "\x00" in poison:  # a text body is decoded with errors="replace": NUL bytes only
        text = TEXTS["h100"].replace('Hostname="', f'Hostname="{poison}', 1)
        (g,) = run(text)
        assert "a NUL character" in _reasons(g)
        assert all("\x00" not in r["host"] for r in _rows(g.batches, "hosts"))


def test_reasons_quoting_a_lone_surrogate_still_make_their_rows():
    # a Prometheus error {"error": "\ud800"} reached run_record, whose row then failed:
    # the source's loop died and restarted on every gather, with nothing recorded
    from datetime import datetime

    from collectors.base import Gathered
    from fleettui.runtime import run_record

    with pytest.raises(PromApiError) as err:
        _result(b'{"status": "error", "error": "\\ud800 bad"}', "http://p/api/v1/query")
    assert str(err.value) == "http://p/api/v1/query: error: ? bad"
    at = datetime(2026, 1, 1)
    g = Gathered([], ["a \ud800 b"], {"c \ud800 d": 1})
    for row in (
        run_record(at, "p", 0.1, 15.0, g, None),
        run_record(at, "p", 0, 15, None, "\ud800"),
    ):
        assert "\ud800" not in str(row.data.to_pylist())


def test_a_hostile_targets_answer_is_failure_rows_never_a_crashed_gather(monkeypatch):
    import asyncio
    from datetime import datetime

    from collectors.prometheus_source import PrometheusOptions, PrometheusSource
    from collectors.promtext.target_runs import failure_runs

    answers = [
        {"activeTargets": [{"health": "down", "labels": [1], "lastError": "\ud800"}, "x"]},
        {"activeTargets": [{"health": "down", "labels": {"job": "j" * 5000, "instance": 3}}]},
        {"activeTargets": {"a": 1}},
        [None, 7],
    ]
    src = PrometheusSource(PrometheusOptions())
    try:
        for answer in answers:

            async def targets(*_, answer=answer):
                return answer

            monkeypatch.setattr(src.client, "targets", targets)
            down = asyncio.run(src._down_targets())
            for b in failure_runs("p", datetime(2026, 1, 1), down):
                assert all(len(c) <= 500 for c in b.data.column("collector").to_pylist())

        async def broken(*_):
            raise PromApiError("no targets API")

        async def up_zero(*_):
            return [{"metric": [1]}, 5, {"metric": {"job": "\ud800"}}]

        monkeypatch.setattr(src.client, "targets", broken)
        monkeypatch.setattr(src.client, "query", up_zero)
        down = asyncio.run(src._down_targets())
        assert len(down) == 3  # each answer of `up == 0` is a target down, named or not
        assert "\ud800" not in str(failure_runs("p", datetime(2026, 1, 1), down)[0].data)
    finally:
        src._executor.shutdown()


def test_long_label_blocks_are_parsed_but_not_cached():
    # the cache keeps 200,000 blocks: of 64 KiB each, a hostile exporter's would be 13 GB
    from collectors.promtext import parse

    long_block = "{" + ",".join(f'l{i}="{"v" * 1000}"' for i in range(5)) + "}"
    short_block = '{gpu="0",UUID="GPU-1"}'
    for block in (long_block, short_block):
        assert parse.cached_labels(block)["l0" if block is long_block else "gpu"]
    assert long_block not in parse._LABELS_CACHE and short_block in parse._LABELS_CACHE


def test_an_exporter_inventing_uuids_does_not_grow_the_mappers_state_without_end():
    # inventory rows and the last Xid were kept for every UUID ever scraped
    text = _set_values(TEXTS["h100"], "0") + "".join(
        f'DCGM_FI_DEV_XID_ERRORS{{gpu="{g}",UUID="GPU-{g}",Hostname="n1"}} 43\n' for g in range(8)
    )
    pipe = TelemetryPipeline("fz")
    sizes = []
    for k in range(100):  # a scrape every 100 s (inventory refresh: 300 s), new UUIDs each
        now = T0 + 100 * k
        body = text.replace('UUID="GPU-', f'UUID="GPU-{k}-')
        g = pipe.map(parse_exposition(body, "fz", now=now), now)
        assert len(_rows(g.batches, "events")) == 8  # each new GPU's set Xid, once
        sizes.append((len(pipe.dcgm._dims), len(pipe.dcgm._last_xid)))
    # 16 GPUs and 2 hosts a scrape: the rows of the scrapes since the last refresh
    assert max(d for d, _ in sizes) <= 3 * (16 + 2)
    # the Xids of an hour (and two refreshes) of UUIDs, those seen between refreshes too
    assert max(x for _, x in sizes) <= 8 * (3600 + 2 * 300) // 100
