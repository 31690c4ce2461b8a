"""The per-host report, version 2: version 1's content (report.py) in a binary frame
that a flush of many reports decodes to columns at once.

A frame is a fixed little-endian header, then fixed-size records (one per GPU, NVLink,
MIG slice, process), then a table of UTF-8 strings and an optional JSON object for the
rare sections (Xid events, lost GPUs, inventory, placement). `parse` reads the header
and the strings of one message (what the source's duplicate and ownership checks
need); `FrameColumns` reads the records of every frame of a flush with one
`np.frombuffer` per record kind and checks every value against the same ranges as
version 1, column by column, so no Python object is made per value. Layout, and
how a value is null: docs/report-v2.md.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa

from collectors.nvml.batches import _MEM_COLS, _PORT_NAMES, _SAMPLE_COLS
from collectors.nvml.collector import Poll
from collectors.nvml.report import (
    BOOL,
    GPU_SPEC,
    HOST_RE,
    INT,
    LINKS_NUM,
    MAX_EPOCH_S,
    MAX_GPUS,
    MAX_LINKS,
    MAX_PAYLOAD_BYTES,
    MAX_PROCS,
    MAX_SLICES,
    MAX_STR,
    NUM,
    PROC_SPEC,
    SLICE_SPEC,
    Report,
    ReportError,
    _load,
    _round,
    _round_links,
    _show,
    extras,
)

MAGIC = b"FTRP"
VERSION = 2
# magic, version, flags, gpus, links, slices, procs, strings bytes, extras bytes,
# seq, dropped, ts, interval_s
HEADER = struct.Struct("<4sHHHHHHIIqqdd")
FLAG_INTERVAL = 1  # interval_s is given (else null)
FLAG_PROC = 2  # the report lists processes (possibly none); else it did not look
NULL_STR = 0xFFFFFFFF  # a null string's length

GPU_COLS = [c for c in GPU_SPEC if c != "uuid" and GPU_SPEC[c][0] < LINKS_NUM]
GPU_DT = np.dtype(
    [("valid", "<u4")] + [(c, "<f8" if GPU_SPEC[c][0] == NUM else "<i8") for c in GPU_COLS]
)
# one record per NVLink of a GPU; `valid` bits: tx, rx, errors, up
LINK_DT = np.dtype([("valid", "u1"), ("up", "u1"), ("tx", "<f8"), ("rx", "<f8"), ("errors", "<i8")])
LINK_BITS = {"tx": 1, "rx": 2, "errors": 4, "up": 8}
LINK_SPEC = {
    "tx": GPU_SPEC["nvlink_tx_bytes_per_s"],
    "rx": GPU_SPEC["nvlink_rx_bytes_per_s"],
    "errors": GPU_SPEC["nvlink_errors"],
}
SLICE_COLS = ("util_pct", "mem_used_bytes", "mem_total_bytes")  # `valid` bits in this order
SLICE_DT = np.dtype(
    [("valid", "u1"), ("gpu", "<u2"), ("util_pct", "<f8")] + [(c, "<i8") for c in SLICE_COLS[1:]]
)
PROC_DT = np.dtype([("valid", "u1"), ("gpu", "<u2"), ("pid", "<i8"), ("used_mem_bytes", "<i8")])
PROC_STRS = ("slice_id", "container", "cgroup", "tenant_guess")
# GPU columns by how their 8 bytes read (floats, integers), with their bounds
_BIT_NO = np.arange(len(GPU_COLS), dtype=np.uint32)
_F = np.array([GPU_SPEC[c][0] == NUM for c in GPU_COLS])
_I = ~_F
_LO_F = np.array([GPU_SPEC[c][1] for c in GPU_COLS], np.float64)[_F]
_HI_F = np.array([GPU_SPEC[c][2] for c in GPU_COLS], np.float64)[_F]
_LO_I = np.array([int(GPU_SPEC[c][1]) for c in GPU_COLS], np.int64)[_I]
_HI_I = np.array(
    [1 if GPU_SPEC[c][0] == BOOL else int(GPU_SPEC[c][2]) for c in GPU_COLS], np.int64
)[_I]
# a frame without slices or processes shares these (frames wait a flush: fewer tracked objects)
_NONE: tuple[Any, ...] = ()
_NO_PROC_STRS: tuple[tuple[Any, ...], ...] = (_NONE,) * len(PROC_STRS)
_ERR_SUM_MAX = 9.2e18  # per-GPU NVLink error sums (per_gpu rows) must fit a 64-bit integer


class Frame:
    """One version 2 message after `parse`: the header, the strings, the records still
    as bytes (read for the whole flush by `FrameColumns`)."""

    __slots__ = (
        "host",
        "boot",
        "seq",
        "ts",
        "interval_s",
        "dropped",
        "driver",
        "uuids",
        "links",
        "gpu",
        "link",
        "slice",
        "proc",
        "slice_ids",
        "proc_strs",
        "has_proc",
        "xid",
        "lost",
        "inv",
        "place",
    )
    host: str
    boot: str
    seq: int
    ts: float
    interval_s: float | None
    dropped: int
    driver: Any
    uuids: list[Any]
    links: Any
    gpu: bytes
    link: bytes
    slice: bytes
    proc: bytes
    slice_ids: Sequence[Any]
    proc_strs: Sequence[Sequence[Any]]
    has_proc: bool
    xid: Any
    lost: list[str]
    inv: Any
    place: Any

    @property
    def n_gpus(self) -> int:
        return len(self.uuids)

    def meta(self) -> Report:
        """A Report without samples: what the batcher's per-report bookkeeping reads
        (hosts, Xid events, inventory, tenancy); samples come from `FrameColumns`.
        With processes or an inventory, the whole report (tenancy and GPU memory sizes
        read the samples)."""
        if self.has_proc or self.inv is not None:
            return self.report()
        return Report(
            self.host,
            self.boot,
            self.seq,
            self.ts,
            self.interval_s,
            self.dropped,
            self.driver,
            {"uuid": self.uuids},
            {},
            None,
            self.xid,
            self.lost,
            self.inv,
            self.place,
        )

    def report(self) -> Report:
        """The version 1 Report of this frame (value by value: for callers that want
        one, and for isolating a report that cannot be stored)."""
        g = np.frombuffer(self.gpu, GPU_DT)
        gpu: dict[str, list[Any]] = {"uuid": list(self.uuids)}
        for i, c in enumerate(GPU_COLS):
            gpu[c] = _nullable(g[c], g["valid"] & (1 << i))
            if GPU_SPEC[c][0] == BOOL:
                gpu[c] = [None if x is None else bool(x) for x in gpu[c]]
        ks = list(self.links)
        if any(ks):
            ln = np.frombuffer(self.link, LINK_DT)
            cols = {
                "nvlink_tx_bytes_per_s": _nullable(ln["tx"], ln["valid"] & 1),
                "nvlink_rx_bytes_per_s": _nullable(ln["rx"], ln["valid"] & 2),
                "nvlink_errors": _nullable(ln["errors"], ln["valid"] & 4),
                "nvlink_up": [
                    None if x is None else bool(x) for x in _nullable(ln["up"], ln["valid"] & 8)
                ],
            }
            starts = np.concatenate([[0], np.cumsum(ks)]).tolist()
            for name, vals in cols.items():
                gpu[name] = [
                    vals[a:b] if b > a else None for a, b in zip(starts, starts[1:], strict=False)
                ]
        s = np.frombuffer(self.slice, SLICE_DT)
        sl: dict[str, list[Any]] = {}
        if len(s):
            sl = {"id": list(self.slice_ids), "gpu": s["gpu"].tolist()}
            for i, c in enumerate(SLICE_COLS):
                sl[c] = _nullable(s[c], s["valid"] & (1 << i))
        proc = None
        if self.has_proc:
            p = np.frombuffer(self.proc, PROC_DT)
            proc = {"gpu": p["gpu"].tolist(), "pid": p["pid"].tolist()}
            proc["used_mem_bytes"] = _nullable(p["used_mem_bytes"], p["valid"] & 1)
            proc.update((c, list(v)) for c, v in zip(PROC_STRS, self.proc_strs, strict=True))
        return Report(
            self.host,
            self.boot,
            self.seq,
            self.ts,
            self.interval_s,
            self.dropped,
            self.driver,
            gpu,
            sl,
            proc,
            self.xid,
            self.lost,
            self.inv,
            self.place,
        )


def _repeat(text: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(text, pa.string()), n)


def _nullable(values: np.ndarray, valid: np.ndarray) -> list[Any]:
    out = values.tolist()
    if valid.all():
        return out
    return [x if v else None for x, v in zip(out, valid.tolist(), strict=True)]


# -- encode ---------------------------------------------------------------------------------
def _fill(rec: np.ndarray, name: str, values: list[Any] | None, bit: int) -> None:
    if values is None:
        return
    given = np.fromiter((x is not None for x in values), bool, len(values))
    rec[name] = [0 if x is None else x for x in values]
    rec["valid"] |= np.where(given, bit, 0).astype(rec["valid"].dtype)


def _strings(texts: list[str | None]) -> bytes:
    data = [b"" if t is None else t.encode() for t in texts]
    lengths = [NULL_STR if t is None else len(b) for t, b in zip(texts, data, strict=True)]
    return struct.pack(f"<{len(lengths)}I", *lengths) + b"".join(data)


def encode_v2(
    poll: Poll,
    *,
    host: str,
    boot: str,
    seq: int,
    interval_s: float | None = None,
    dropped: int = 0,
    driver: str | None = None,
    inventory: dict[str, dict[str, list[Any]]] | None = None,
    place: dict[str, Any] | None = None,
) -> bytes:
    """The same report as `report.encode` (same rounding), as a version 2 frame."""
    import json

    gpu = poll.gpu
    n = len(gpu["uuid"])
    g = np.zeros(n, GPU_DT)
    for i, c in enumerate(GPU_COLS):
        col = gpu.get(c)
        if col is not None and GPU_SPEC[c][0] == NUM:
            col = _round(col, 3)
        _fill(g, c, col, 1 << i)
    tx, rx = gpu.get("nvlink_tx_bytes_per_s"), gpu.get("nvlink_rx_bytes_per_s")
    tx = _round_links(tx) if tx is not None else [None] * n
    rx = _round_links(rx) if rx is not None else [None] * n
    errs = gpu.get("nvlink_errors") or [None] * n
    ups = gpu.get("nvlink_up") or [None] * n
    # as version 1 reads them: a GPU has as many links as its longer rate list
    links = [max(len(tx[i] or ()), len(rx[i] or ())) for i in range(n)]
    ln = np.zeros(sum(links), LINK_DT)
    for name, per_gpu in (("tx", tx), ("rx", rx), ("errors", errs), ("up", ups)):
        flat = chain.from_iterable(
            (list(per or ()) + [None] * k)[:k] for per, k in zip(per_gpu, links, strict=True)
        )
        _fill(ln, name, list(flat), LINK_BITS[name])
    sl = poll.slice
    m = len(sl.get("id", ()))
    s = np.zeros(m, SLICE_DT)
    if m:
        s["gpu"] = sl["gpu"]
        for i, c in enumerate(SLICE_COLS):
            col = sl.get(c)
            _fill(s, c, _round(col, 3) if col is not None and c == "util_pct" else col, 1 << i)
    proc = poll.proc
    texts: list[str | None] = [host, boot, driver, *gpu["uuid"], *sl.get("id", ())]
    p = np.zeros(0, PROC_DT)
    if proc is not None:
        p = np.zeros(len(proc["pid"]), PROC_DT)
        p["gpu"], p["pid"] = proc["gpu"], proc["pid"]
        _fill(p, "used_mem_bytes", proc.get("used_mem_bytes"), 1)
        for c in PROC_STRS:
            texts += proc.get(c) or [None] * len(p)
    more: dict[str, Any] = {}
    if poll.xid["code"]:
        more["xid"] = poll.xid
    if poll.lost:
        more["lost"] = poll.lost
    if inventory is not None:
        more["inv"] = inventory
    if place:
        more["place"] = place
    strings = _strings(texts)
    extra = json.dumps(more, separators=(",", ":"), allow_nan=False).encode() if more else b""
    flags = (FLAG_INTERVAL if interval_s is not None else 0) | (
        FLAG_PROC if proc is not None else 0
    )
    head = HEADER.pack(
        MAGIC,
        VERSION,
        flags,
        n,
        sum(links),
        m,
        len(p),
        len(strings),
        len(extra),
        seq,
        dropped,
        round(poll.ts, 6),
        0.0 if interval_s is None else float(interval_s),
    )
    return b"".join(
        [head, bytes(links), g.tobytes(), ln.tobytes(), s.tobytes(), p.tobytes(), strings, extra]
    )


# -- decode: one message --------------------------------------------------------------------
def is_v2(payload: bytes) -> bool:
    return payload[:4] == MAGIC


def parse(
    payload: bytes,
    *,
    topic_host: str | None = None,
    now: float | None = None,
    max_future_s: float = 300.0,
    max_age_s: float = 7 * 86400.0,
) -> Frame:
    """Header, sizes and strings of one frame; the records are checked by
    `FrameColumns`. Raises ReportError only (its message is the reject's reason)."""
    if type(payload) is not bytes:
        payload = bytes(payload)
    size = len(payload)
    if size > MAX_PAYLOAD_BYTES:
        raise ReportError(f"payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES}")
    if size < HEADER.size:
        raise ReportError(f"v2 frame of {size} bytes is shorter than its header")
    (_, version, flags, n, n_links, m, n_proc, n_str_b, n_extra, seq, dropped, ts, interval) = (
        HEADER.unpack_from(payload)
    )
    if version != VERSION:
        raise ReportError(f"unknown report version {version} (this daemon reads 1 and 2)")
    if not 0 < n <= MAX_GPUS:
        raise ReportError(f"gpu: {n} GPUs, expected 1 to {MAX_GPUS}")
    if m > MAX_SLICES or n_proc > MAX_PROCS:
        raise ReportError(f"{m} slices or {n_proc} processes exceed the limits")
    has_proc = bool(flags & FLAG_PROC)
    if n_proc and not has_proc:
        raise ReportError("proc: rows without the process flag")
    o = HEADER.size
    links = payload[o : o + n]
    o += n
    ends = [
        o := o + n * GPU_DT.itemsize,
        o := o + n_links * LINK_DT.itemsize,
        o := o + m * SLICE_DT.itemsize,
        o := o + n_proc * PROC_DT.itemsize,
    ]
    if o + n_str_b + n_extra != size:
        raise ReportError(
            f"v2 frame of {size} bytes does not match its counts ({o + n_str_b + n_extra} expected)"
        )
    if sum(links) != n_links or (links and max(links) > MAX_LINKS):
        raise ReportError(
            f"gpu links: per-GPU counts {_show(list(links))} do not add up to {n_links} "
            f"or exceed {MAX_LINKS}"
        )
    if not 0 <= seq < 2**62:
        raise ReportError(f"seq: expected a whole number >= 0, got {seq}")
    if not 0 < ts < MAX_EPOCH_S:  # NaN fails too
        raise ReportError(f"ts: expected epoch seconds, got {ts!r}")
    if now is not None:
        if ts > now + max_future_s:
            raise ReportError(f"ts {ts:.3f} is {ts - now:.0f} s in the future")
        if ts < now - max_age_s:
            raise ReportError(f"ts {ts:.3f} is {now - ts:.0f} s old (limit {max_age_s:.0f} s)")
    if not flags & FLAG_INTERVAL:
        interval = None
    elif not 0 < interval <= 86400:
        raise ReportError(f"interval_s: expected seconds in (0, 86400], got {interval!r}")
    if not 0 <= dropped < 2**62:
        raise ReportError(f"dropped: expected a whole number >= 0, got {dropped}")
    n_str = 3 + n + m + 4 * n_proc
    strs = _read_strings(payload, o, o + n_str_b, n_str)
    host, boot, driver = strs[0], strs[1], strs[2]
    if type(host) is not str or not HOST_RE.match(host):
        raise ReportError(f"host: expected a host name, got {_show(host)}")
    if topic_host is not None and host != topic_host:
        raise ReportError(f"host {host!r} does not match the topic's host {topic_host!r}")
    if not boot or len(boot) > 64:
        raise ReportError(f"boot: expected a short string, got {_show(boot)}")
    uuids = strs[3 : 3 + n]
    if not all(uuids):
        raise ReportError("gpu.uuid: empty or null GPU UUID")
    slice_ids = strs[3 + n : 3 + n + m] if m else _NONE
    if None in slice_ids:
        raise ReportError("slice: every row needs an id and a gpu position")
    f = Frame()
    if n_extra:
        obj = _load(payload[o + n_str_b :])
        if type(obj) is not dict:
            raise ReportError(f"v2 extras: expected a JSON object, got {_show(obj)}")
        f.xid, f.lost, f.inv, f.place = extras(obj)
    else:
        f.xid, f.lost, f.inv, f.place = None, [], None, None
    start = HEADER.size + n
    f.host, f.boot, f.seq, f.ts, f.interval_s = host, boot, seq, ts, interval
    f.dropped, f.driver, f.uuids, f.links, f.slice_ids = dropped, driver, uuids, links, slice_ids
    f.gpu = payload[start : ends[0]]
    f.link, f.slice = payload[ends[0] : ends[1]], payload[ends[1] : ends[2]]
    f.proc = payload[ends[2] : ends[3]]
    f.has_proc = has_proc
    if n_proc:
        b = 3 + n + m
        f.proc_strs = [strs[b + i * n_proc : b + (i + 1) * n_proc] for i in range(4)]
    else:  # the common frame: shared empty sequences, no lists for the collector to track
        f.proc_strs = _NO_PROC_STRS
    return f


def _read_strings(payload: bytes, start: int, end: int, count: int) -> list[str | None]:
    """`count` strings (lengths, then UTF-8 bytes); strict UTF-8, no NUL, at most
    MAX_STR characters each."""
    head = start + 4 * count
    if head > end:
        raise ReportError(f"strings: {count} lengths do not fit in {end - start} bytes")
    lengths = struct.unpack_from(f"<{count}I", payload, start)
    data = payload[head:end]
    if sum(x for x in lengths if x != NULL_STR) != len(data):
        raise ReportError("strings: lengths do not add up to the string bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError(f"strings: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if "\x00" in text:
        raise ReportError("strings: a NUL character")
    whole = text if len(text) == len(data) else data  # ASCII: slice the text itself
    out: list[str | None] = []
    o = 0
    for x in lengths:
        if x == NULL_STR:
            out.append(None)
            continue
        piece = whole[o : o + x]
        o += x
        if isinstance(piece, bytes):
            try:
                piece = piece.decode("utf-8")
            except UnicodeDecodeError:
                raise ReportError("strings: a string cut inside a UTF-8 character") from None
        if len(piece) > MAX_STR:
            raise ReportError(f"strings: a string longer than {MAX_STR} chars")
        out.append(piece)
    return out


# -- decode: a flush of frames, to columns --------------------------------------------------
def _bad_range(vals: np.ndarray, valid: np.ndarray, kind: int, lo: float, hi: float) -> np.ndarray:
    """Rows whose value is given and not allowed (NaN and inf fail the range)."""
    if kind == BOOL:
        ok = (vals == 0) | (vals == 1)
    elif kind == INT:
        ok = (vals >= int(lo)) & (vals <= int(hi))
    else:
        ok = (vals >= lo) & (vals <= hi)
    return valid & ~ok


class FrameColumns:
    """The records of many frames read at once: `problems()` names the frames with a
    value version 1 would refuse; `batches()` the store batches of all frames."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames
        self.n_g = np.fromiter((len(f.uuids) for f in frames), np.int64, len(frames))
        # GPU records as one (columns x GPUs) block of 8-byte values, each column
        # contiguous, read as floats or integers as the column is; `given` the valid bits
        raw = np.frombuffer(b"".join([f.gpu for f in frames]), np.uint8)
        raw = raw.reshape(-1, GPU_DT.itemsize)
        self.g_valid = raw[:, :4].copy().view("<u4").ravel()
        self.gf = raw[:, 4:].copy().view("<f8").T.copy()
        self.gi = self.gf.view("<i8")
        self.given = (self.g_valid[None, :] >> _BIT_NO[:, None]) & 1 != 0
        self.n_gpus = len(raw)
        self.k = np.frombuffer(b"".join([f.links for f in frames]), np.uint8).astype(np.int64)
        self.ln = np.frombuffer(b"".join([f.link for f in frames]), LINK_DT)
        self.s = np.frombuffer(b"".join([f.slice for f in frames]), SLICE_DT)
        self.p = np.frombuffer(b"".join([f.proc for f in frames]), PROC_DT)
        self.n_s = np.fromiter((len(f.slice_ids) for f in frames), np.int64, len(frames))
        self.n_p = np.fromiter((len(f.proc_strs[0]) for f in frames), np.int64, len(frames))
        idx = np.arange(len(frames))
        self.g_frame = np.repeat(idx, self.n_g)
        self.l_gpu = np.repeat(np.arange(self.n_gpus), self.k)
        self.s_frame = np.repeat(idx, self.n_s)
        self.p_frame = np.repeat(idx, self.n_p)

    def problems(self, per_gpu_links: bool = False) -> dict[int, str]:
        """frame index -> why it is refused (the first bad column), for bad frames only."""
        bad: dict[int, str] = {}

        def note(rows: np.ndarray, frame_of: np.ndarray, where: str) -> None:
            if rows.any():
                for i in np.unique(frame_of[rows]).tolist():
                    bad.setdefault(i, where)

        ln, s, p = self.ln, self.s, self.p
        # every GPU column at once: floats and integers each one comparison per bound
        ok = np.empty_like(self.given)
        ok[_F] = (self.gf[_F] >= _LO_F[:, None]) & (self.gf[_F] <= _HI_F[:, None])
        ok[_I] = (self.gi[_I] >= _LO_I[:, None]) & (self.gi[_I] <= _HI_I[:, None])
        bad_gpu = self.given & ~ok
        if bad_gpu.any():
            for i in np.flatnonzero(bad_gpu.any(axis=1)).tolist():
                c = GPU_COLS[i]
                _, lo, hi = GPU_SPEC[c]
                note(
                    bad_gpu[i],
                    self.g_frame,
                    f"gpu.{c}: a value outside [{lo:g}, {hi:g}] or not finite",
                )
        l_frame = self.g_frame[self.l_gpu]
        for name, (kind, lo, hi) in LINK_SPEC.items():
            valid = (ln["valid"] & LINK_BITS[name]) != 0
            kind = NUM if kind == LINKS_NUM else INT
            rows = _bad_range(ln[name], valid, kind, lo, hi)
            note(rows, l_frame, f"gpu.nvlink {name}: a value outside [{lo:g}, {hi:g}]")
        up_bad = ((ln["valid"] & 8) != 0) & (ln["up"] > 1)
        note(up_bad, l_frame, "gpu.nvlink_up: expected true/false")
        if per_gpu_links and len(ln):
            err = np.where((ln["valid"] & 4) != 0, ln["errors"], 0).astype(np.float64)
            sums = np.bincount(self.l_gpu, weights=err, minlength=self.n_gpus)
            note(
                sums >= _ERR_SUM_MAX,
                self.g_frame,
                "cannot be stored: OverflowError: NVLink error counts sum beyond a 64-bit integer",
            )
        if len(s):
            note(
                s["gpu"] >= self.n_g[self.s_frame],
                self.s_frame,
                "slice.gpu: a GPU position beyond the report's GPUs",
            )
            for i, c in enumerate(SLICE_COLS):
                kind, lo, hi = SLICE_SPEC[c]
                rows = _bad_range(s[c], (s["valid"] & (1 << i)) != 0, kind, lo, hi)
                note(rows, self.s_frame, f"slice.{c}: a value outside [{lo:g}, {hi:g}]")
        if len(p):
            note(
                p["gpu"] >= self.n_g[self.p_frame],
                self.p_frame,
                "proc.gpu: a GPU position beyond the report's GPUs",
            )
            for c, valid in (("pid", np.ones(len(p), bool)), ("used_mem_bytes", p["valid"] & 1)):
                kind, lo, hi = PROC_SPEC[c]
                rows = _bad_range(p[c], valid != 0, kind, lo, hi)
                note(rows, self.p_frame, f"proc.{c}: a value outside [{lo:g}, {hi:g}]")
        return bad

    def batches(self, per_gpu_links: bool, source: str) -> dict[str, dict[str, Any]]:
        """table -> columns (for `make_batch`) of every frame's samples."""
        frames = self.frames
        out: dict[str, dict[str, Any]] = {}
        if not self.n_gpus:
            return out
        ts_us = np.fromiter((int(f.ts * 1e6) for f in frames), np.int64, len(frames))
        hosts = pa.array([f.host for f in frames], pa.string())
        g_ts = ts_us[self.g_frame]
        g_host = hosts.take(self.g_frame)
        uuids = pa.array(list(chain.from_iterable(f.uuids for f in frames)), pa.string())
        n = self.n_gpus
        ts = pa.array(g_ts).cast(pa.timestamp("us"))
        vals = {}
        for i, c in enumerate(GPU_COLS):
            kind = GPU_SPEC[c][0]
            v = self.gf[i] if kind == NUM else self.gi[i]
            vals[c] = pa.array(v.astype(bool) if kind == BOOL else v, mask=~self.given[i])
        src = _repeat(source, n)
        out["gpu_samples"] = {
            "ts": ts,
            "host": g_host,
            "gpu_uuid": uuids,
            **{c: vals[c] for c in _SAMPLE_COLS},
            "source": src,
        }
        out["gpu_mem_samples"] = {
            "ts": ts,
            "host": g_host,
            "gpu_uuid": uuids,
            **{c: vals[c] for c in _MEM_COLS},
            "source": src,
        }
        if len(self.ln):
            out["link_samples"] = self._links(per_gpu_links, g_ts, g_host, uuids, source)
        s = self.s
        if len(s):
            first_gpu = np.concatenate([[0], np.cumsum(self.n_g)[:-1]])
            m = len(s)
            out["slice_samples"] = {
                "ts": pa.array(ts_us[self.s_frame]).cast(pa.timestamp("us")),
                "slice_id": pa.array(
                    list(chain.from_iterable(f.slice_ids for f in frames)), pa.string()
                ),
                "gpu_uuid": uuids.take(first_gpu[self.s_frame] + s["gpu"]),
                **{
                    c: pa.array(np.ascontiguousarray(s[c]), mask=(s["valid"] & (1 << i)) == 0)
                    for i, c in enumerate(SLICE_COLS)
                },
                "source": _repeat(source, m),
            }
        p = self.p
        if len(p):
            first_gpu = np.concatenate([[0], np.cumsum(self.n_g)[:-1]])
            cols: dict[str, Any] = {
                "ts": pa.array(ts_us[self.p_frame]).cast(pa.timestamp("us")),
                "host": hosts.take(self.p_frame),
                "gpu_uuid": uuids.take(first_gpu[self.p_frame] + p["gpu"]),
                "pid": np.ascontiguousarray(p["pid"]),
                "used_mem_bytes": pa.array(
                    np.ascontiguousarray(p["used_mem_bytes"]), mask=(p["valid"] & 1) == 0
                ),
            }
            for i, c in enumerate(PROC_STRS):
                cols[c] = pa.array(
                    list(chain.from_iterable(f.proc_strs[i] for f in frames)), pa.string()
                )
            cols["source"] = _repeat(source, len(p))
            out["processes"] = cols
        return out

    def _links(
        self, per_gpu: bool, g_ts: np.ndarray, g_host: pa.Array, uuids: pa.Array, source: str
    ) -> dict[str, Any]:
        ln, k, l_gpu = self.ln, self.k, self.l_gpu
        valid = ln["valid"]
        if not per_gpu:
            first = np.cumsum(k) - k
            port = np.arange(len(ln)) - first[l_gpu]
            rows = pa.array(l_gpu)
            m = len(ln)
            return {
                "ts": pa.array(g_ts[l_gpu]).cast(pa.timestamp("us")),
                "host": g_host.take(rows),
                "port": _PORT_NAMES.take(pa.array(port)),
                "gpu_uuid": uuids.take(rows),
                "tx_bytes_per_s": pa.array(np.ascontiguousarray(ln["tx"]), mask=(valid & 1) == 0),
                "rx_bytes_per_s": pa.array(np.ascontiguousarray(ln["rx"]), mask=(valid & 2) == 0),
                "errors": pa.array(np.ascontiguousarray(ln["errors"]), mask=(valid & 4) == 0),
                "link_up": pa.array(ln["up"].astype(bool), mask=(valid & 8) == 0),
                "kind": _repeat("nvlink", m),
                "source": _repeat(source, m),
            }
        # one row per GPU with links: sums over the links given, null when none is;
        # up only if every link given is up
        has = np.flatnonzero(k)
        starts = (np.cumsum(k) - k)[has]

        def total(name: str, bit: int, dtype: Any) -> pa.Array:
            given = (valid & bit) != 0
            v = np.where(given, ln[name], 0).astype(dtype)
            sums = np.add.reduceat(v, starts) if len(v) else v
            counts = np.add.reduceat(given.astype(np.int64), starts) if len(v) else v
            return pa.array(sums, mask=counts == 0)

        given_up = (valid & 8) != 0
        n_up = np.add.reduceat(given_up.astype(np.int64), starts)
        n_down = np.add.reduceat((given_up & (ln["up"] == 0)).astype(np.int64), starts)
        rows = pa.array(has)
        m = len(has)
        return {
            "ts": pa.array(g_ts[has]).cast(pa.timestamp("us")),
            "host": g_host.take(rows),
            "port": _repeat("nvlink", m),
            "gpu_uuid": uuids.take(rows),
            "tx_bytes_per_s": total("tx", 1, np.float64),
            "rx_bytes_per_s": total("rx", 2, np.float64),
            "errors": total("errors", 4, np.int64),
            "link_up": pa.array(n_down == 0, mask=n_up == 0),
            "kind": _repeat("nvlink", m),
            "source": _repeat(source, m),
        }
