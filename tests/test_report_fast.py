"""The fast report decoder (msgspec, checked in C) against the reference decoder
(`decode_checked`, value by value in Python): the same reports accepted with the same
columns, the same reports refused with the same reason, on real collector reports, on
hostile values in every column and on fuzzed documents (issue 13)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from collectors.nvml import report as R
from collectors.nvml.report import ReportError, decode, decode_checked
from tests.test_mqtt_report import FIELD_PATHS, NOW, _mutate, _report, json_values

HOST = "rtx-07-n1"


def _verdict(fn, payload: bytes, **kw) -> tuple[str, object]:
    try:
        return "ok", fn(payload, now=NOW, **kw)
    except ReportError as exc:
        return "refused", str(exc)


def _same(payload: bytes, **kw) -> str:
    """Both decoders' verdicts, asserted equal; what the fast path alone said."""
    new, old = _verdict(decode, payload, **kw), _verdict(decode_checked, payload, **kw)
    assert new == old, payload[:300]
    try:
        fast = R._fast(payload)
    except R._Slow:
        return "slow"
    # what the fast path accepts, the reference accepts with the same columns
    assert old[0] == "ok" or old[1].startswith(("host ", "ts ")), (old, payload[:300])
    if old[0] == "ok":
        assert fast == old[1]
    return "fast"


def _rich(good: bytes) -> bytes:
    """A report with every optional section: processes, inventory, an Xid, lost GPUs and
    the agent's placement (the collector on the fake NVML writes all but the last three)."""
    obj = json.loads(good)
    obj["xid"] = {
        "ts": [NOW - 0.5, NOW],
        "gpu_uuid": [obj["gpu"]["uuid"][0], None],
        "code": [79, 13],
    }
    obj["lost"] = ["GPU-gone-1"]
    obj["place"] = {"cluster": "east", "rack": "rtx-07", "rack_slot": 1, "nvlink_domain": "d1"}
    return json.dumps(obj).encode()


@pytest.fixture(scope="module")
def good() -> bytes:
    return _report()


@pytest.fixture(scope="module")
def reports(good) -> list[bytes]:
    return [good, _report("hgx-03-n1"), _report("hgx-04-n1", procs=False), _rich(good)]


def test_collector_reports_take_the_fast_path_and_decode_identically(reports):
    for payload in reports:
        assert _same(payload) == "fast"
        assert R._fast(payload) == decode_checked(payload, now=NOW)
    rich = decode(reports[-1], now=NOW)
    assert rich.xid["code"] == [79, 13] and rich.lost == ["GPU-gone-1"]
    assert rich.place == {
        "cluster": "east",
        "rack": "rtx-07",
        "rack_slot": 1,
        "nvlink_domain": "d1",
    }
    assert len(decode(reports[1], now=NOW).gpu["nvlink_up"][0]) == 18


def test_host_and_time_checks_keep_their_reasons(good):
    for kw, reason in (
        ({"topic_host": "other"}, "does not match the topic's host"),
        ({"max_future_s": -10.0}, "s in the future"),
        ({"max_age_s": -10.0}, "s old"),
    ):
        new, old = _verdict(decode, good, **kw), _verdict(decode_checked, good, **kw)
        assert new == old and new[0] == "refused" and reason in new[1]


# hostile values in every kind of column; each must be refused by both, for the same reason
HOSTILE = [
    float("nan"),
    float("inf"),
    -float("inf"),
    1e308,
    -1e308,
    2**64,
    -(2**63),
    10**30,
    "\ud800",
    "nul\x00",
    "x" * 2000,
    "",
    True,
    [1],
    {"a": 1},
    1.5,
    -1,
]
COLUMNS = [
    ["v"],
    ["seq"],
    ["ts"],
    ["interval_s"],
    ["dropped"],
    ["host"],
    ["boot"],
    ["driver"],
    ["gpu", "uuid", 0],
    ["gpu", "util_pct", 0],
    ["gpu", "power_w", 1],
    ["gpu", "temp_c", 2],
    ["gpu", "mem_used_bytes", 3],
    ["gpu", "ecc_dbe_total", 0],
    ["gpu", "throttle_reasons", 0],
    ["gpu", "remap_pending", 0],
    ["gpu", "nvlink_tx_bytes_per_s", 0, 0],
    ["gpu", "nvlink_errors", 1, 2],
    ["gpu", "nvlink_up", 2, 17],
    ["gpu", "nvlink_rx_bytes_per_s", 3],
    ["slice", "id", 0],
    ["slice", "gpu", 0],
    ["slice", "util_pct", 0],
    ["proc", "pid", 0],
    ["proc", "gpu", 0],
    ["proc", "container", 0],
    ["xid", "ts", 0],
    ["xid", "code", 1],
    ["xid", "gpu_uuid", 0],
    ["lost", 0],
    ["inv", "gpus", "uuid", 0],
    ["inv", "gpus", "index", 0],
    ["inv", "gpus", "mig_mode", 0],
    ["inv", "slices", "profile", 0],
    ["place", "rack"],
    ["place", "rack_slot"],
]


def _set(payload: bytes, path: list, value) -> bytes | None:
    obj = json.loads(payload)
    node = obj
    try:
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        return None
    # NaN and infinities travel as the bare words Python writes (not JSON; must be refused)
    return json.dumps(obj).encode()


@pytest.mark.parametrize("path", COLUMNS, ids=lambda p: ".".join(map(str, p)))
def test_hostile_values_are_refused_by_both_decoders(reports, path):
    rich, hgx = reports[-1], reports[1]
    refused = 0
    for value in HOSTILE:
        for base in (rich, hgx):
            payload = _set(base, path, value)
            if payload is None:
                continue
            _same(payload)
            new = _verdict(decode, payload)
            if new[0] == "refused":
                refused += 1
            elif isinstance(value, float) and not math.isfinite(value):
                pytest.fail(f"{path}: {value!r} accepted")
    assert refused >= 8  # most of these are wrong for any column


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe",
        b"{not json",
        b"[1, 2]",
        b'{"v": 1, "ts": NaN}',
        b"x" * (2 << 20),
        b"[" * 100_000,
        b'{"v":1,"x":' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"v":1,"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"\xef\xbb\xbf{}",
        b'{"v":1,"host":"h1","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":[]}}',
        b'{"v":1,"host":"h1","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":[]},"v":2}',
        b'{"v":1,"host":"h1\\n","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":[]}}',
        b'{"v":1,"host":"h1","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":[]},"slice":null}',
        b'{"v":1,"host":"h1","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":["g"],"util_pct":null}}',
        b'{"v":1,"host":"h1","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":["g"]},"slice":{"id":null,"gpu":[0]}}',
        b'{"v":1,"host":"h1","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":["g"]},"slice":{}}',
        b'{"v":1,"host":"h1","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":["g"],"mem_used_bytes":[5.0]}}',
        b'{"v":1,"host":"h1","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":["g"]},"inv":{"gpus":{"uuid":["g"]}}}',
        b'{"v":true,"host":"h1","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":[]}}',
        b'{"v":1.0,"host":"h1","boot":"b","seq":1,"ts":1764000100,"gpu":{"uuid":[]}}',
    ],
    ids=lambda p: str(len(p)),
)
def test_odd_documents_get_the_same_verdict(payload):
    _same(payload)


FAST_PATHS = FIELD_PATHS + [
    ["gpu", "nvlink_tx_bytes_per_s", 0],
    ["gpu", "nvlink_errors", 1, 0],
    ["xid", "ts"],
    ["xid", "code", 0],
    ["place"],
    ["place", "rack"],
    ["place", "rack_slot"],
    ["inv", "slices", "gpu_uuid"],
    ["lost", 0],
    ["gpu", "mem_util_pct", 7],
]


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    which=st.integers(0, 3),
    path=st.sampled_from(FAST_PATHS),
    value=json_values,
    drop=st.booleans(),
)
def test_fuzz_mutated_reports_get_the_same_verdict(reports, which, path, value, drop):
    try:
        payload = _mutate(reports[which], path, KeyError if drop else value)
    except (KeyError, IndexError, TypeError):
        return
    event(_same(payload, topic_host=None))


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300))
def test_fuzz_random_bytes_get_the_same_verdict(payload):
    event(_same(payload))


@settings(max_examples=300, deadline=None)
@given(
    doc=st.fixed_dictionaries(
        {
            "v": st.just(1),
            "host": st.just("h1"),
            "boot": st.just("b"),
            "seq": st.just(1),
            "ts": st.just(NOW),
        },
        optional={
            k: json_values | st.fixed_dictionaries({}, optional={c: json_values for c in spec})
            for k, spec in (
                ("gpu", R.GPU_SPEC),
                ("slice", R.SLICE_SPEC),
                ("proc", R.PROC_SPEC),
                ("xid", R.XID_SPEC),
                ("place", R.PLACE_SPEC),
            )
        }
        | {"lost": json_values, "inv": json_values, "driver": json_values},
    )
)
def test_fuzz_structured_documents_get_the_same_verdict(doc):
    event(_same(json.dumps(doc).encode()))
