"""Per-message isolation: whatever decodes but cannot be stored is one reject with its
reason; every other report is stored and the batcher always starts clean (issue 11)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import collectors.mqtt_source as mqtt_source
from collectors.mqtt_source import MqttOptions, MqttSource
from collectors.nvml.report import ReportError, decode, decode_status
from fleettui.runtime import Runtime
from storage.batch import make_batch
from storage.store import Store
from tests.test_mqtt_report import NOW, _report

HOST = "rtx-07-n1"
TOPIC = f"fleettui/{HOST}/report"


@pytest.fixture(scope="module")
def good() -> bytes:
    return _report()


def _with(payload: bytes, seq: int, **changes) -> bytes:
    obj = json.loads(payload)
    obj["seq"] = seq
    for path, value in changes.items():
        node = obj
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        node[int(last) if isinstance(node, list) else last] = value
    return json.dumps(obj).encode()  # ensure_ascii: a lone surrogate travels as "\ud800"


def _count(store: Store, sql: str) -> int:
    return store.con.execute(sql).fetchone()[0]


# every string field a publisher controls, with a value the store cannot hold
POISON_STRINGS = ["\ud800", "\udfff tail", "nul\x00byte"]
STRING_PATHS = [
    "driver",
    "boot",
    "gpu__uuid__0",
    "slice__id__0",
    "proc__container__0",
    "proc__tenant_guess__0",
    "proc__cgroup__0",
    "inv__gpus__name__0",
    "inv__gpus__pci_bus_id__0",
    "inv__slices__profile__0",
    "lost",
]


@pytest.mark.parametrize("path", STRING_PATHS)
@pytest.mark.parametrize("poison", POISON_STRINGS)
def test_strings_the_store_cannot_hold_are_refused_at_decode(good, path, poison):
    value = [poison] if path == "lost" else poison
    with pytest.raises(ReportError, match="surrogate or NUL"):
        decode(_with(good, 8, **{path: value}), topic_host=HOST, now=NOW)


def test_absurd_numbers_are_refused_at_decode(good):
    for change in (
        {"dropped": 2**70},
        {"ts": 1e300},
        {"gpu__mem_used_bytes__0": 2**70},
        {"proc__pid__0": 2**64},
    ):
        with pytest.raises(ReportError):
            decode(_with(good, 8, **change), topic_host=HOST, now=None)
    with pytest.raises(ReportError):  # NaN never reaches a column
        decode(good.replace(b'"interval_s":1.0', b'"interval_s":NaN'), now=NOW)
    with pytest.raises(ReportError, match="surrogate"):
        decode_status(b'{"v": 1, "state": "online", "boot": "\\ud800"}')
    with pytest.raises(ReportError):
        decode_status(b'{"v": 1, "state": "online", "ts": 1e300}')


def test_a_report_that_fails_batch_building_is_rejected_alone(good, monkeypatch):
    """Validation is the first line; if a report still breaks make_batch (a gap in it),
    the flush splits the reports in halves, rejects the culprit and stores the rest."""
    real = mqtt_source.decode

    def lenient(payload, **kw):
        r = real(payload, **kw)
        if r.seq == 13:
            r.gpu["uuid"][0] = "\udc00"  # what an unvalidated field would carry
        if r.seq == 17:
            r.gpu["mem_used_bytes"][0] = 2**70
        return r

    monkeypatch.setattr(mqtt_source, "decode", lenient)
    src = MqttSource(MqttOptions(), clock=lambda: NOW)
    store = Store.open(":memory:")
    for seq in range(10, 30):
        src.handle(TOPIC, _with(good, seq))
    batches, ts, n = src.take_batches()
    store.write(batches)
    assert n == len(ts) == 18 and src.stats.unstorable == 2
    assert (
        _count(store, "SELECT count(DISTINCT ts) FROM gpu_samples") == 1
    )  # same poll, re-sequenced
    assert _count(store, "SELECT count(*) FROM gpu_samples") == 18 * 8
    reasons = [
        r for (r,) in store.con.execute("SELECT reason FROM rejects ORDER BY reason").fetchall()
    ]
    assert len(reasons) == 2 and reasons[0].startswith("cannot be stored: OverflowError")
    assert "UnicodeEncodeError" in reasons[1]
    assert src._batcher.reports == 0 and src._pending == []  # reset whatever happened
    # and the next flush is normal
    src.handle(TOPIC, _with(good, 40))
    store.write(src.take_batches()[0])
    assert _count(store, "SELECT count(*) FROM gpu_samples") == 19 * 8


def test_a_poison_status_is_rejected_and_other_statuses_kept(monkeypatch):
    real = mqtt_source.decode_status

    def lenient(payload):
        state, ts, boot = real(payload)
        return state, ts, "\ud800" if boot == "poison" else boot

    monkeypatch.setattr(mqtt_source, "decode_status", lenient)
    src = MqttSource(MqttOptions(), clock=lambda: NOW)
    store = Store.open(":memory:")
    src.handle("fleettui/h1/status", b'{"v":1,"state":"online","boot":"poison"}')
    src.handle("fleettui/h2/status", b'{"v":1,"state":"online","boot":"b2"}')
    store.write(src.take_batches()[0])
    assert store.con.execute("SELECT host FROM host_status").fetchall() == [("h2",)]
    assert store.con.execute("SELECT host, reason FROM rejects").fetchall() == [
        ("h1", "status cannot be stored: UnicodeEncodeError")
    ]


def test_rows_the_store_refuses_are_found_by_halving_and_kept_as_rejects():
    """A batch that still fails in Store.write (here a NOT NULL column) is split until
    the refused row is found: it becomes a `rejects` row, the other 99 are written."""
    store = Store.open(":memory:")
    rt = Runtime(store, [])
    kinds = ["xid"] * 100
    kinds[37] = None
    batch = make_batch(
        "events",
        {
            "ts": [NOW_DT] * 100,
            "kind": kinds,
            "code": list(range(100)),
            "host": [f"h{i}" for i in range(100)],
        },
    )
    left, failure = rt._write([batch])
    assert (left, failure) == ([], None)
    assert _count(store, "SELECT count(*) FROM events") == 99
    assert store.con.execute("SELECT source, topic, host FROM rejects").fetchall() == [
        ("store", "events", "h37")
    ]
    assert rt.stats.rows_refused == 1


NOW_DT = __import__("datetime").datetime(2025, 11, 24, 16, 1, 40)

# -- fuzz: hostile values in real reports, streamed between good ones ---------------------
hostile = st.one_of(
    st.text(
        alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3
    ),
    st.text(max_size=5).map(lambda s: s + "\x00"),
    st.text(min_size=1025, max_size=1100),
    st.integers(min_value=2**62, max_value=2**80) | st.integers(max_value=-1, min_value=-(2**80)),
    st.floats(min_value=1e15, max_value=1e300),
    st.sampled_from([None, True, [], {}, "", "x"]),
    st.text(max_size=8),
)
FUZZ_PATHS = STRING_PATHS + [
    "seq",
    "ts",
    "interval_s",
    "dropped",
    "gpu__util_pct__0",
    "gpu__mem_used_bytes__1",
    "gpu__throttle_reasons__0",
    "gpu__ecc_sbe_total__2",
    "slice__gpu__0",
    "slice__mem_used_bytes__0",
    "proc__pid__0",
    "proc__used_mem_bytes__0",
    "proc__gpu__0",
    "inv__gpus__index__0",
    "inv__gpus__mig_mode__0",
    "gpu__temp_c__0",
    "gpu__energy_j__0",
]

_FUZZ_STORE: list[Store] = []


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(path=st.sampled_from(FUZZ_PATHS), value=hostile, where=st.integers(0, 5))
def test_fuzz_poison_in_a_stream_never_stalls_the_good_reports(good, path, value, where):
    if not _FUZZ_STORE:
        _FUZZ_STORE.append(Store.open(":memory:"))
    store = _FUZZ_STORE[0]
    store.con.execute("DELETE FROM gpu_values; DELETE FROM rejects")
    src = MqttSource(MqttOptions(), clock=lambda: NOW)
    try:
        poison = _with(good, 100, **{path: value})
    except (KeyError, IndexError, TypeError):
        return
    stream = [_with(good, s) for s in range(6)]
    stream.insert(where, poison)
    for payload in stream:
        src.handle(TOPIC, payload)
    batches, _, _ = src.take_batches()
    Runtime(store, [])._write(batches)  # the writer's isolation is part of the path
    assert src._batcher.reports == 0
    stored_seqs = _count(store, "SELECT count(DISTINCT ts) FROM gpu_samples")
    rejects = _count(store, "SELECT count(*) FROM rejects")
    assert stored_seqs >= 1  # the six good reports share one ts: stored
    good_rows = _count(store, "SELECT count(*) FROM gpu_samples")
    assert good_rows in (6 * 8, 7 * 8)  # every good report, plus the poison if it was fine
    assert (good_rows == 7 * 8) != (rejects >= 1) or src.stats.duplicates  # stored xor rejected
    # after the poison, the next report flows as usual
    src.handle(TOPIC, _with(good, 200))
    Runtime(store, [])._write(src.take_batches()[0])
    assert _count(store, "SELECT count(*) FROM gpu_samples") == good_rows + 8
