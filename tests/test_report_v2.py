"""Report version 2 (binary frames, collectors/nvml/report_v2.py): the same samples
sent as version 1 and as version 2 become the same rows; a hostile frame is one
reject and never stops the frames around it."""

from __future__ import annotations

import math
import random
import struct

import pytest

from collectors.mqtt_source import MqttOptions, MqttSource
from collectors.nvml.collector import NvmlCollector
from collectors.nvml.fake import SimStates
from collectors.nvml.library import open_library
from collectors.nvml.report import encode
from collectors.nvml.report_v2 import GPU_COLS, GPU_DT, HEADER, encode_v2
from collectors.sim.faults import Fault
from collectors.sim.model import SimModel
from storage.store import Store

NOW = 1_764_000_100.0
TABLES = (
    "gpu_samples",
    "gpu_mem_samples",
    "slice_samples",
    "link_samples",
    "processes",
    "events",
    "hosts",
    "gpus",
    "slices",
    "tenants",
    "assignments",
    "report_seqs",
)


@pytest.fixture(scope="module")
def states() -> SimStates:
    return SimStates(SimModel(start=NOW - 100, faults=(Fault("xid79", "hgx-03-n1:5", 99, 60),)))


def polls(states: SimStates, host: str, n: int) -> list[tuple]:
    """(poll, inventory or None, driver) per report, from the fake NVML."""
    clock = [NOW - 3]
    lib = open_library("fake", host=host, states=states, clock=lambda: clock[0])
    c = NvmlCollector(lib, clock=lambda: clock[0], events=True, processes_every=2)
    out = []
    for seq in range(n):
        if seq:
            clock[0] += 1.0
        if clock[0] >= NOW - 1:
            import time

            time.sleep(0.2)  # let the Xid thread see the fault start
        out.append((c.poll(), c.inventory() if seq == 0 else None, c.driver_version))
    c.close()
    return out


def with_nulls(poll):
    """A poll with holes: a null value in most columns, a GPU without NVLink lists,
    a link without a value, a process without memory."""
    g = poll.gpu
    for k in list(g):
        if k != "uuid" and g[k]:
            g[k] = list(g[k])
            g[k][1] = None
    for k, i in (("nvlink_tx_bytes_per_s", 0), ("nvlink_errors", 2), ("nvlink_up", 3)):
        if g.get(k) and g[k][0]:
            g[k][0] = list(g[k][0])
            g[k][0][i] = None
    if g.get("nvlink_errors") and len(g["nvlink_errors"]) > 2:
        g["nvlink_errors"][2] = None  # rates without error counts
    if poll.proc and poll.proc["pid"]:
        poll.proc["used_mem_bytes"] = [None, *poll.proc["used_mem_bytes"][1:]]
        poll.proc["container"] = [None, *poll.proc["container"][1:]]
    return poll


def payloads(states: SimStates, version: int) -> list[tuple[str, bytes]]:
    enc = encode if version == 1 else encode_v2
    out = []
    for host in ("hgx-03-n1", "rtx-07-n1"):  # NVLink and Xid 79; MIG slices, processes
        for seq, (poll, inv, driver) in enumerate(polls(states, host, 3)):
            if seq == 1:
                poll = with_nulls(poll)
            body = enc(
                poll,
                host=host,
                boot="b1",
                seq=seq,
                interval_s=1.0 if seq != 2 else None,
                driver=driver,
                inventory=inv,
                place={"cluster": "east", "rack": "r1", "rack_slot": 3} if seq == 0 else None,
            )
            out.append((f"fleettui/{host}/report", body))
    return out


def stored(states: SimStates, version: int, nvlink_rows: str) -> dict[str, list]:
    src = MqttSource(MqttOptions(nvlink_rows=nvlink_rows), clock=lambda: NOW)
    store = Store.open(":memory:")
    for topic, body in payloads(states, version):
        src.handle(topic, body)
    batches, _, n = src.take_batches()
    store.write(batches)
    assert src.stats.rejected == 0 and n == src.stats.received
    out = {}
    for t in TABLES:
        cols = [
            r[0]
            for r in store.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [t]
            ).fetchall()
        ]
        keep = ", ".join(c for c in cols if c not in ("updated_at", "id"))
        out[t] = sorted(store.con.execute(f"SELECT {keep} FROM {t}").fetchall(), key=repr)
    return out


@pytest.mark.parametrize("nvlink_rows", ["per_link", "per_gpu"])
def test_v1_and_v2_store_the_same_rows(states, nvlink_rows):
    v1, v2 = stored(states, 1, nvlink_rows), stored(states, 2, nvlink_rows)
    for t in TABLES:
        assert v2[t] == v1[t], t
    # the samples exercised what they should: MIG slices, per-link rows, processes,
    # Xid events, NULLs in every kind of column
    assert len(v1["slice_samples"]) > 8 and len(v1["processes"]) > 0 and v1["events"]
    assert len(v1["link_samples"]) > (100 if nvlink_rows == "per_link" else 8)
    assert any(None in row for row in v1["gpu_samples"])
    assert any(None in row for row in v1["link_samples"])
    assert any(None in row for row in v1["processes"])


# -- hostile frames -----------------------------------------------------------------------
def frames(states: SimStates) -> list[bytes]:
    """Good v2 frames of one host with MIG slices and processes, seq 0, 1, 2."""
    return [
        encode_v2(p, host="rtx-07-n1", boot="b1", seq=i, interval_s=1.0, driver=d)
        for i, (p, _, d) in enumerate(polls(states, "rtx-07-n1", 3))
    ]


def _gpu_field(frame: bytes, gpu: int, column: str, value: float | int, fmt: str) -> bytes:
    """`frame` with one GPU value set and marked given."""
    b = bytearray(frame)
    n = HEADER.unpack_from(b)[3]
    rec = HEADER.size + n + gpu * GPU_DT.itemsize
    struct.pack_into(
        "<I", b, rec, struct.unpack_from("<I", b, rec)[0] | 1 << GPU_COLS.index(column)
    )
    struct.pack_into(fmt, b, rec + GPU_DT.fields[column][1], value)
    return bytes(b)


def _header(frame: bytes, index: int, value: int | float) -> bytes:
    fields = list(HEADER.unpack_from(frame))
    fields[index] = value
    return HEADER.pack(*fields) + frame[HEADER.size :]


def _string(frame: bytes, old: bytes, new: bytes) -> bytes:
    """Replace a string's bytes with others of the same length."""
    assert len(old) == len(new) and frame.count(old) >= 1
    return frame.replace(old, new, 1)


def _ingest(good: list[bytes], bad: bytes) -> tuple[MqttSource, Store]:
    src = MqttSource(MqttOptions(), clock=lambda: NOW)
    store = Store.open(":memory:")
    src.handle("fleettui/rtx-07-n1/report", good[0])
    src.handle("fleettui/rtx-07-n1/report", bad)
    src.handle("fleettui/rtx-07-n1/report", good[2])
    store.write(src.take_batches()[0])
    return src, store


def hostile(good: bytes) -> dict[str, tuple[bytes, str]]:
    n = HEADER.unpack_from(good)[3]
    uuid = b"GPU-"
    return {
        "truncated header": (good[:30], "shorter than its header"),
        "truncated body": (good[:-7], "does not match its counts"),
        "a byte more": (good + b"x", "does not match its counts"),
        "oversize": (good + b"\0" * (1 << 20), "exceeds"),
        "unknown version": (_header(good, 1, 3), "unknown report version 3"),
        "one GPU more": (_header(good, 3, n + 1), "does not match its counts"),
        "no GPUs": (_header(good, 3, 0), "GPUs, expected 1 to"),
        "links miscounted": (_header(good, 4, HEADER.unpack_from(good)[4] + 1), "counts"),
        "strings miscounted": (_header(good, 7, HEADER.unpack_from(good)[7] - 1), "counts"),
        "ts NaN": (_header(good, 11, math.nan), "ts: expected epoch seconds"),
        "ts far ahead": (_header(good, 11, NOW + 86400), "in the future"),
        "interval inf": (_header(good, 12, math.inf), "interval_s"),
        "NaN util": (_gpu_field(good, 0, "util_pct", math.nan, "<d"), "gpu.util_pct"),
        "inf power": (_gpu_field(good, 1, "power_w", math.inf, "<d"), "gpu.power_w"),
        "hot GPU": (_gpu_field(good, n - 1, "temp_c", 1000.0, "<d"), "gpu.temp_c"),
        "negative memory": (_gpu_field(good, 0, "mem_used_bytes", -1, "<q"), "gpu.mem_used"),
        "bool of 2": (_gpu_field(good, 0, "remap_pending", 2, "<q"), "gpu.remap_pending"),
        "bad UTF-8": (_string(good, uuid, b"\xffPU-"), "not UTF-8"),
        "NUL in a UUID": (_string(good, uuid, b"G\x00U-"), "NUL"),
        "other host": (_string(good, b"rtx-07-n1", b"rtx-07-n2"), "does not match the topic"),
    }


def test_a_hostile_frame_is_one_reject_and_the_frames_around_it_are_stored(states):
    good = frames(states)
    n = HEADER.unpack_from(good[0])[3]
    for name, (bad, reason) in hostile(good[0]).items():
        src, store = _ingest(good, bad)
        reasons = [r[0] for r in store.con.execute("SELECT reason FROM rejects").fetchall()]
        assert src.stats.rejected == 1 and len(reasons) == 1, name
        assert reason in reasons[0], (name, reasons[0])
        rows = store.con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0]
        assert rows == 2 * n, name  # seq 0 and 2


def test_slice_and_process_positions_beyond_the_gpus_are_refused(states):
    good = frames(states)
    f = good[1]
    n, n_links, m = HEADER.unpack_from(f)[3:6]
    assert m > 0
    at = HEADER.size + n + n * GPU_DT.itemsize + n_links * 26 + 1  # slice 0's gpu
    bad = bytearray(f)
    struct.pack_into("<H", bad, at, n)
    src, store = _ingest(good, bytes(bad))
    assert src.stats.rejected == 1
    assert "slice.gpu" in store.con.execute("SELECT reason FROM rejects").fetchone()[0]


def test_random_damage_never_stops_ingestion_nor_stores_a_bad_value(states):
    """Seeded byte flips anywhere in a frame: each damaged frame is rejected or stored
    with values that pass the checks; the good frames around it are always stored."""
    good = frames(states)
    n = HEADER.unpack_from(good[0])[3]
    rnd = random.Random(13)
    rejected = 0
    for _ in range(60):
        b = bytearray(good[1])
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(b))
            b[i] = rnd.randrange(256)
        src, store = _ingest(good, bytes(b))
        rejected += src.stats.rejected
        got = store.con.execute(
            "SELECT count(*) FILTER (WHERE ts = to_timestamp(?)), count(*), "
            "count(*) FILTER (WHERE isnan(power_w) OR isinf(power_w) OR util_pct > 100 "
            "OR temp_c > 150 OR mem_used_bytes < 0) FROM gpu_samples",
            [NOW - 3],
        ).fetchone()
        assert got[0] == n and got[2] == 0
        assert got[1] in (2 * n, 3 * n) and src.stats.rejected == (got[1] == 2 * n)
    assert rejected > 10  # most damage is caught
