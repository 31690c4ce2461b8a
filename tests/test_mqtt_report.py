"""The v1 report: round trip, every reject reason, and a hypothesis fuzz of the decoder."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from collectors.mqtt_source import MqttSource
from collectors.nvml.collector import NvmlCollector
from collectors.nvml.fake import SimStates
from collectors.nvml.library import open_library
from collectors.nvml.report import ReportError, decode, decode_status, encode, encode_status
from collectors.sim.model import SimModel
from storage.store import Store

NOW = 1_764_000_100.0


def _report(host: str = "rtx-07-n1", procs: bool = True) -> bytes:
    states = SimStates(SimModel(start=NOW - 100))
    clock = [NOW - 1]
    lib = open_library("fake", host=host, states=states, clock=lambda: clock[0])
    c = NvmlCollector(lib, clock=lambda: clock[0], events=False, processes_every=1)
    c.poll()
    clock[0] = NOW
    p = c.poll()
    out = encode(
        p,
        host=host,
        boot="b1",
        seq=7,
        interval_s=1.0,
        driver=c.driver_version,
        inventory=c.inventory(),
    )
    c.close()
    return out


@pytest.fixture(scope="module")
def good() -> bytes:
    return _report()


@pytest.fixture(scope="module")
def good_hgx() -> bytes:
    return _report("hgx-03-n1")


def test_round_trip_keeps_every_section(good, good_hgx):
    r = decode(good, topic_host="rtx-07-n1", now=NOW)
    assert (r.host, r.boot, r.seq, r.ts, r.interval_s) == ("rtx-07-n1", "b1", 7, NOW, 1.0)
    assert r.n_gpus == 8 and len(r.slice["id"]) > 8 and r.proc and r.inv
    assert all(u is None for u in r.gpu["util_pct"])
    h = decode(good_hgx, now=NOW)
    assert len(h.gpu["nvlink_tx_bytes_per_s"][0]) == 18
    assert len(good_hgx) < 10_000  # 8 GPUs x 18 NVLinks, with processes and inventory


def _mutate(payload: bytes, path: list, value) -> bytes:
    obj = json.loads(payload)
    node = obj
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (["v"], 2, "unknown report version 2"),
        (["v"], "1", "unknown report version '1'"),
        (["host"], "a/b", "host: expected a host name"),
        (["host"], "other", "does not match the topic's host"),
        (["seq"], -1, "seq: expected a whole number"),
        (["seq"], 1.5, "seq: expected a whole number"),
        (["ts"], NOW + 3600, "s in the future"),
        (["ts"], NOW - 30 * 86400, "s old"),
        (["ts"], "now", "ts: expected epoch seconds"),
        (["gpu", "power_w", 0], "hot", "gpu.power_w: expected a number"),
        (["gpu", "power_w", 0], 1e9, "gpu.power_w: value 1000000000.0 outside [0, 10000]"),
        (["gpu", "temp_c", 0], 400, "gpu.temp_c: value 400 outside"),
        (["gpu", "mem_used_bytes", 0], -5, "gpu.mem_used_bytes: value -5 outside"),
        (["gpu", "mem_used_bytes", 0], True, "gpu.mem_used_bytes: expected a whole number"),
        (["gpu", "power_w"], [1.0], "gpu.power_w: expected a list of 8 values"),
        (["gpu", "uuid"], KeyError, "gpu.uuid: missing"),
        (["gpu"], [], "gpu: expected an object of columns"),
        (["slice", "gpu", 0], 99, "slice.gpu: expected a GPU position below 8"),
        (["proc", "pid", 0], None, "proc: every row needs a gpu position and a pid"),
        (["inv", "gpus", "mig_mode", 0], "yes", "inv.gpus.mig_mode: expected true/false"),
        (["lost"], "GPU-1", "lost: expected a list of GPU UUIDs"),
    ],
)
def test_bad_reports_are_refused_with_a_reason(good, path, value, reason):
    with pytest.raises(ReportError) as exc:
        decode(_mutate(good, path, value), topic_host="rtx-07-n1", now=NOW)
    assert reason in str(exc.value)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"v": 1, "ts": NaN}', "non-finite number NaN"),
        (b"x" * (2 << 20), "exceeds"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_undecodable_payloads_are_refused(payload, reason):
    with pytest.raises(ReportError, match=reason):
        decode(payload)


def test_nvlink_lists_are_checked(good_hgx):
    bad = _mutate(good_hgx, ["gpu", "nvlink_tx_bytes_per_s", 0, 3], -1.0)
    with pytest.raises(ReportError, match=r"gpu.nvlink_tx_bytes_per_s\[0\]: value -1.0 outside"):
        decode(bad, now=NOW)
    bad = _mutate(good_hgx, ["gpu", "nvlink_up", 0], [True] * 40)
    with pytest.raises(ReportError, match="at most 36 per-link values"):
        decode(bad, now=NOW)


def test_status_round_trip_and_refusal():
    assert decode_status(encode_status("online", ts=NOW, boot="b")) == ("online", NOW, "b")
    with pytest.raises(ReportError, match="state"):
        decode_status(b'{"v": 1, "state": "sleeping"}')


# -- fuzz ----------------------------------------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
FIELD_PATHS = [
    ["v"],
    ["host"],
    ["boot"],
    ["seq"],
    ["ts"],
    ["interval_s"],
    ["dropped"],
    ["driver"],
    ["gpu"],
    ["gpu", "uuid"],
    ["gpu", "util_pct"],
    ["gpu", "util_pct", 0],
    ["gpu", "power_w", 3],
    ["gpu", "mem_used_bytes"],
    ["slice"],
    ["slice", "gpu"],
    ["slice", "id", 0],
    ["proc"],
    ["proc", "gpu", 0],
    ["proc", "pid"],
    ["xid"],
    ["lost"],
    ["inv"],
    ["inv", "gpus"],
    ["inv", "slices", "id"],
    ["gpu", "nvlink_up"],
]


_STORE: list[Store] = []


def _source_store() -> tuple[MqttSource, Store]:
    """A fresh source and one shared store (opening a store per example is slow)."""
    if not _STORE:
        _STORE.append(Store.open(":memory:"))
    return MqttSource(clock=lambda: NOW), _STORE[0]


def _count(store: Store, table: str) -> int:
    return store.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _accounted(src: MqttSource) -> int:
    s = src.stats
    return s.rejected + s.duplicates + src._batcher.reports + s.stored


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=300))
def test_fuzz_random_bytes_never_crash_the_source(payload):
    src, store = _source_store()
    src.handle("fleettui/h1/report", payload)
    src.handle("fleettui/h1/status", payload)
    src.handle("fleettui/h1/x/y/report", payload)
    batches, _, _ = src.take_batches()
    store.write(batches)
    assert src.stats.rejected + src._batcher.reports + src.stats.stored >= 2


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(path=st.sampled_from(FIELD_PATHS), value=json_values, drop=st.booleans())
def test_fuzz_mutated_reports_are_stored_or_rejected_never_crash(good, path, value, drop):
    try:
        payload = _mutate(good, path, KeyError if drop else value)
    except (KeyError, IndexError, TypeError):
        return  # the path does not exist in this report
    try:
        decode(payload, topic_host="rtx-07-n1", now=NOW)
    except ReportError:
        pass  # the only exception decode may raise
    src, store = _source_store()
    src.handle("fleettui/rtx-07-n1/report", payload)
    assert _accounted(src) == 1
    batches, _, _ = src.take_batches()
    before = _count(store, "gpu_samples"), _count(store, "rejects")
    store.write(batches)  # whatever passed validation fits the store's types
    stored = _count(store, "gpu_samples") - before[0]
    rejected = _count(store, "rejects") - before[1]
    assert (rejected, stored > 0) in ((1, False), (0, True))  # stored, or rejected with why
    event("stored" if stored else "rejected")


@settings(max_examples=200, deadline=None)
@given(
    doc=st.dictionaries(
        st.sampled_from(
            [
                "v",
                "host",
                "boot",
                "seq",
                "ts",
                "gpu",
                "slice",
                "proc",
                "xid",
                "inv",
                "lost",
                "dropped",
            ]
        ),
        json_values,
        max_size=12,
    )
)
def test_fuzz_structured_documents(doc):
    payload = json.dumps(doc).encode()
    try:
        r = decode(payload, now=NOW)
    except ReportError as exc:
        assert str(exc)
        return
    assert isinstance(r.seq, int) and math.isfinite(r.ts)
