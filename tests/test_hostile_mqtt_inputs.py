"""Hostile input on the MQTT path beyond the report fuzzers (tests/test_mqtt_report.py,
tests/test_report_fast.py, tests/test_report_v2.py): the host name a topic or a report
gives, and a version 2 frame cut at every position class. One bad message is one
reject; the good ones around it are stored."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.mqtt_source import MqttOptions, MqttSource
from collectors.nvml.report import HOST_RE, ReportError, decode
from collectors.nvml.report_v2 import HEADER, encode_v2, parse
from storage.batch import storable_text
from tests.test_mqtt_report import NOW, _report
from tests.test_report_v2 import polls

STATUS = json.dumps({"v": 1, "state": "online", "since": NOW - 5, "boot": "b1"}).encode()
# topic segments no report's host could be: escapes, markup, a newline, spaces, 5000 chars
BAD_HOSTS = ["\x1b[2Jevil", "[bold]x", "h1\n", "a b", "h" * 5000, "-h", "h\x00", "é"]


@pytest.fixture(scope="module")
def good() -> bytes:
    return _report()


def _source() -> MqttSource:
    return MqttSource(MqttOptions(), clock=lambda: NOW)


def _tables(src: MqttSource) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for b in src.take_batches()[0]:
        out.setdefault(b.table, []).extend(b.data.to_pylist())
    return out


def test_host_names_end_where_they_end():
    # "$" matched before a final newline: "h1\n" passed as a host name
    assert HOST_RE.match("h1") and not HOST_RE.match("h1\n")


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_a_status_under_a_topic_that_names_no_host_is_rejected(host):
    # the topic is a status's only host name: it went to host_status unchecked
    src = _source()
    src.handle(f"fleettui/{host}/status", STATUS)
    src.handle("fleettui/h1/status", STATUS)
    t = _tables(src)
    assert [r["host"] for r in t["host_status"]] == ["h1"]
    (reject,) = t["rejects"]
    assert reject["reason"] == "status: the topic's host is not a host name"
    assert reject["topic"] == storable_text(f"fleettui/{host}/status"[:1024])


@pytest.mark.parametrize("version", [1, 2])
def test_a_report_host_with_a_final_newline_is_rejected_in_both_versions(good, version):
    obj = json.loads(good)
    host = obj["host"]
    if version == 1:
        obj["host"] = host + "\n"
        bad = json.dumps(obj).encode()
        with pytest.raises(ReportError, match="host: expected a host name"):
            decode(bad, topic_host=host + "\n", now=NOW)
    else:
        ((poll, _, driver),) = polls_for(host)
        bad = encode_v2(poll, host=host + "\n", boot="b1", seq=8, interval_s=1.0, driver=driver)
        with pytest.raises(ReportError, match="host: expected a host name"):
            parse(bad, topic_host=host + "\n", now=NOW)
    src = _source()
    src.handle(f"fleettui/{host}\n/report", bad)
    src.handle(f"fleettui/{host}/report", good)
    t = _tables(src)
    assert len(t["rejects"]) == 1 and "host" in t["rejects"][0]["reason"]
    assert {r["host"] for r in t["gpu_samples"]} == {host}


_POLLS: dict[str, list] = {}


def polls_for(host: str) -> list:
    if host not in _POLLS:
        from collectors.nvml.fake import SimStates
        from collectors.sim.model import SimModel

        _POLLS[host] = polls(SimStates(SimModel(start=NOW - 100)), host, 1)
    return _POLLS[host]


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    cut=st.one_of(
        st.integers(0, HEADER.size + 8),  # inside the header
        st.floats(0, 1, exclude_max=True),  # anywhere in the records or strings
        st.integers(1, 8).map(lambda k: -k),  # the last bytes
    )
)
def test_a_frame_cut_anywhere_is_one_reject_and_the_next_frame_is_stored(cut):
    ((poll, _, driver),) = polls_for("rtx-07-n1")
    frames = [
        encode_v2(poll, host="rtx-07-n1", boot="b1", seq=s, interval_s=1.0, driver=driver)
        for s in (1, 2)
    ]
    n = len(frames[0])
    at = int(cut * n) if isinstance(cut, float) else cut % n if cut < 0 else cut
    src = _source()
    src.handle("fleettui/rtx-07-n1/report", frames[0][:at])
    src.handle("fleettui/rtx-07-n1/report", frames[1])
    t = _tables(src)
    assert src.stats.rejected == 1 and len(t["rejects"]) == 1
    assert "internal error" not in t["rejects"][0]["reason"]
    assert {r["ts"] for r in t["gpu_samples"]}  # seq 2's rows are there
    assert len(t["gpu_samples"]) == HEADER.unpack_from(frames[1])[3]


def test_a_reject_quoting_a_lone_surrogate_is_stored():
    # the topic's host goes into rejects.host before any check
    src = _source()
    src.handle("fleettui/\ud800/report", b"{}")
    src.handle("fleettui/h\x00/status", STATUS)
    t = _tables(src)
    assert [r["host"] for r in t["rejects"]] == ["?", None]
    assert t["rejects"][1]["topic"] == "fleettui/h\ufffd/status"
