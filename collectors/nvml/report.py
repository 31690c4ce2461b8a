"""The per-host report the agent publishes and the daemon decodes: version 1.

One compact JSON object per host per interval. Sections are columnar (a dict of
equal-length lists) so that many reports decode into store batches with a few
`list.extend` calls each. Layout, units and limits: docs/agent-mqtt.md.

    {"v": 1, "host": "hgx-03-n1", "boot": "b3c1e2a0", "seq": 42, "ts": 1764150042.001,
     "interval_s": 1.0, "dropped": 0, "driver": "580.82.07",
     "gpu":   {"uuid": [...], "util_pct": [...], ..., "nvlink_tx_bytes_per_s": [[...], ...]},
     "slice": {"id": [...], "gpu": [...], "util_pct": [...], ...},
     "proc":  {"gpu": [...], "slice_id": [...], "pid": [...], ...},      (optional)
     "xid":   {"ts": [...], "gpu_uuid": [...], "code": [...]},            (optional)
     "lost":  ["GPU-...", ...],                                           (optional)
     "inv":   {"gpus": {...}, "slices": {...}},                           (optional)
     "place": {"cluster": "east", "rack": "hgx-03", "rack_slot": 1,
               "nvlink_domain": "hgx-03-n1"}}                             (optional)

`decode` never raises anything but `ReportError`, whose message is the reason
stored in the `rejects` table. Unknown keys are ignored (additions within a
version stay compatible); a different `v` is refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeGuard

import msgspec
from msgspec import UNSET, Meta, UnsetType

from collectors.nvml.collector import Poll

VERSION = 1
MAX_PAYLOAD_BYTES = 1 << 20
MAX_GPUS = 64
MAX_LINKS = 36
MAX_SLICES = 7 * MAX_GPUS
MAX_PROCS = 4096
MAX_XIDS = 1024
MAX_STR = 1024
MAX_EPOCH_S = 1e11  # year 5138: later stamps cannot become store timestamps
# no MQTT wildcards or '/'; \Z, not $: "$" also matches before a final newline ("h1\n")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}\Z")

STATE_ONLINE, STATE_OFFLINE = "online", "offline"


class ReportError(ValueError):
    """The payload is not a valid report; the message says what and where."""


# kinds of column values
STR, NUM, INT, BOOL, LINKS_NUM, LINKS_INT, LINKS_BOOL, IDX = range(8)
_BIG = 2**62

# gpu section: name -> (kind, low, high)
GPU_SPEC: dict[str, tuple[int, float, float]] = {
    "uuid": (STR, 0, 0),
    "util_pct": (NUM, 0, 100),
    "mem_util_pct": (NUM, 0, 100),
    "mem_used_bytes": (INT, 0, 2**50),
    "mem_total_bytes": (INT, 0, 2**50),
    "mem_reserved_bytes": (INT, 0, 2**50),
    "power_w": (NUM, 0, 10_000),
    "energy_j": (NUM, 0, 1e15),
    "temp_c": (NUM, -40, 150),
    "mem_temp_c": (NUM, -40, 150),
    "sm_clock_mhz": (NUM, 0, 20_000),
    "mem_clock_mhz": (NUM, 0, 50_000),
    "pcie_tx_bytes_per_s": (NUM, 0, 1e12),
    "pcie_rx_bytes_per_s": (NUM, 0, 1e12),
    "ecc_sbe_total": (INT, 0, _BIG),
    "ecc_dbe_total": (INT, 0, _BIG),
    "remapped_rows_correctable": (INT, 0, _BIG),
    "remapped_rows_uncorrectable": (INT, 0, _BIG),
    "remap_pending": (BOOL, 0, 0),
    "remap_failed": (BOOL, 0, 0),
    "throttle_reasons": (INT, 0, 2**63 - 1),
    "nvlink_tx_bytes_per_s": (LINKS_NUM, 0, 1e13),
    "nvlink_rx_bytes_per_s": (LINKS_NUM, 0, 1e13),
    "nvlink_errors": (LINKS_INT, 0, _BIG),
    "nvlink_up": (LINKS_BOOL, 0, 0),
}
SLICE_SPEC = {
    "id": (STR, 0, 0),
    "gpu": (IDX, 0, 0),
    "util_pct": (NUM, 0, 100),
    "mem_used_bytes": (INT, 0, 2**50),
    "mem_total_bytes": (INT, 0, 2**50),
}
PROC_SPEC = {
    "gpu": (IDX, 0, 0),
    "slice_id": (STR, 0, 0),
    "pid": (INT, 0, 2**31),
    "used_mem_bytes": (INT, 0, 2**50),
    "container": (STR, 0, 0),
    "cgroup": (STR, 0, 0),
    "tenant_guess": (STR, 0, 0),
}
XID_SPEC = {"ts": (NUM, 0, MAX_EPOCH_S), "gpu_uuid": (STR, 0, 0), "code": (INT, 0, 2**31)}
INV_GPU_SPEC = {
    "uuid": (STR, 0, 0),
    "index": (INT, 0, 1024),
    "name": (STR, 0, 0),
    "pci_bus_id": (STR, 0, 0),
    "mig_mode": (BOOL, 0, 0),
}
INV_SLICE_SPEC = {"id": (STR, 0, 0), "gpu_uuid": (STR, 0, 0), "profile": (STR, 0, 0)}
# where the host lives, as the agent was told (`--cluster`, `--rack`, ...); optional,
# added within version 1 (an older daemon ignores it)
PLACE_SPEC = {
    "cluster": (STR, 0, 0),
    "rack": (STR, 0, 0),
    "rack_slot": (INT, 0, 1_000_000),
    "nvlink_domain": (STR, 0, 0),
    "model": (STR, 0, 0),
}
MAX_PLACE_STR = 256


@dataclass(slots=True)
class Report:
    host: str
    boot: str
    seq: int
    ts: float
    interval_s: float | None
    dropped: int
    driver: str | None
    gpu: dict[str, list[Any]]
    slice: dict[str, list[Any]]
    proc: dict[str, list[Any]] | None
    xid: dict[str, list[Any]] | None
    lost: list[str]
    inv: dict[str, dict[str, list[Any]]] | None
    place: dict[str, Any] | None = None

    @property
    def n_gpus(self) -> int:
        return len(self.gpu["uuid"])


# -- encode ---------------------------------------------------------------------------------
def _round(col: list[Any], nd: int) -> list[Any]:
    return [round(x, nd) if type(x) is float else x for x in col]


def _round_links(col: list[Any]) -> list[Any]:
    return [None if per is None else [None if x is None else round(x) for x in per] for per in col]


def encode(
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
    gpu = {}
    for k, v in poll.gpu.items():
        kind = GPU_SPEC[k][0]
        gpu[k] = _round_links(v) if kind == LINKS_NUM else _round(v, 3) if kind == NUM else v
    out: dict[str, Any] = {
        "v": VERSION,
        "host": host,
        "boot": boot,
        "seq": seq,
        "ts": round(poll.ts, 6),
        "interval_s": interval_s,
        "dropped": dropped,
        "driver": driver,
        "gpu": gpu,
        "slice": {k: _round(v, 3) for k, v in poll.slice.items()},
    }
    if poll.proc is not None:
        out["proc"] = poll.proc
    if poll.xid["code"]:
        out["xid"] = poll.xid
    if poll.lost:
        out["lost"] = poll.lost
    if inventory is not None:
        out["inv"] = inventory
    if place:
        out["place"] = place
    return json.dumps(out, separators=(",", ":"), allow_nan=False).encode()


def encode_status(state: str, *, ts: float, boot: str) -> bytes:
    return json.dumps(
        {"v": VERSION, "state": state, "ts": round(ts, 6), "boot": boot}, separators=(",", ":")
    ).encode()


# -- decode ---------------------------------------------------------------------------------
def _no_constants(name: str) -> Any:
    raise ReportError(f"non-finite number {name} in payload")


def _load(payload: bytes) -> Any:
    if not isinstance(payload, bytes | bytearray):
        raise ReportError(f"payload is {type(payload).__name__}, not bytes")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ReportError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError(f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ReportError:
        raise
    except (ValueError, RecursionError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReportError(f"payload is not JSON: {msg[:120]}") from None


def _num(x: Any) -> TypeGuard[float]:
    t = type(x)
    return (t is int or t is float) and (t is int or math.isfinite(x))


def _storable(text: str) -> bool:
    """Whether the store can hold `text`: valid UTF-8 once encoded (JSON's "\\ud800"
    escapes decode to lone surrogates that Arrow refuses) and no NUL character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _check_str(where: str, x: Any, limit: int = MAX_STR) -> None:
    if type(x) is not str or len(x) > limit:
        raise ReportError(f"{where}: expected a string of at most {limit} chars, got {_show(x)}")
    if not _storable(x):
        raise ReportError(f"{where}: string {_show(x)} has a lone surrogate or NUL character")


def _check_scalar(where: str, x: Any, kind: int, lo: float, hi: float, n_idx: int) -> None:
    if kind == STR:
        _check_str(where, x)
    elif kind == BOOL:
        if type(x) is not bool:
            raise ReportError(f"{where}: expected true/false, got {_show(x)}")
    elif kind == IDX:
        if type(x) is not int or not 0 <= x < n_idx:
            raise ReportError(f"{where}: expected a GPU position below {n_idx}, got {_show(x)}")
    else:
        if kind == INT:
            ok = type(x) is int or (type(x) is float and x.is_integer())
        else:
            ok = _num(x)
        if not ok:
            raise ReportError(
                f"{where}: expected a {'whole ' if kind == INT else ''}number, got {_show(x)}"
            )
        if not lo <= x <= hi:
            raise ReportError(f"{where}: value {x!r} outside [{lo:g}, {hi:g}]")


_NUM_TYPES = frozenset((int, float))


def _all_ok(values: list[Any], kind: int, lo: float, hi: float, n_idx: int) -> bool:
    """Whether every non-null value fits, checked with C-level builtins (the common case);
    False sends the caller through the per-value loop that names the bad one."""
    vals = values if None not in values else [x for x in values if x is not None]
    if not vals:
        return True
    types = set(map(type, vals))
    if kind == NUM or kind == INT:
        if not types <= _NUM_TYPES:
            return False
        if (
            kind == INT
            and float in types
            and not all(x.is_integer() for x in vals if type(x) is float)
        ):
            return False
        return lo <= min(vals) and max(vals) <= hi  # inf fails here; NaN never parses
    if kind == STR:  # one join + encode checks the whole column for surrogates and NULs
        return types == {str} and max(map(len, vals)) <= MAX_STR and _storable("".join(vals))
    if kind == BOOL:
        return types == {bool}
    return types == {int} and min(vals) >= 0 and max(vals) < n_idx  # IDX


def _show(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 40 else r[:37] + "..."


def _section(
    obj: Any,
    name: str,
    spec: Mapping[str, tuple[int, float, float]],
    key: str | None,
    n_idx: int,
    limit: int,
) -> tuple[dict[str, list[Any]], int]:
    """Validate a columnar section; `key` (required column) fixes the row count."""
    if type(obj) is not dict:
        raise ReportError(f"{name}: expected an object of columns, got {_show(obj)}")
    first = key or next((k for k in spec if k in obj), None)
    if first is None:
        return {}, 0
    if key is not None and key not in obj:
        raise ReportError(f"{name}.{key}: missing")
    col = obj[first]
    if type(col) is not list:
        raise ReportError(f"{name}.{first}: expected a list, got {_show(col)}")
    n = len(col)
    if n > limit:
        raise ReportError(f"{name}: {n} rows exceeds the limit of {limit}")
    out = {}
    for field, (kind, lo, hi) in spec.items():
        col = obj.get(field)
        if col is None:
            continue
        if type(col) is not list or len(col) != n:
            raise ReportError(f"{name}.{field}: expected a list of {n} values, got {_show(col)}")
        where = f"{name}.{field}"
        if kind >= LINKS_NUM and kind != IDX:
            inner = {LINKS_NUM: NUM, LINKS_INT: INT, LINKS_BOOL: BOOL}[kind]
            if all(
                per is None or (type(per) is list and len(per) <= MAX_LINKS) for per in col
            ) and _all_ok([x for per in col if per is not None for x in per], inner, lo, hi, n_idx):
                out[field] = col
                continue
            for i, per in enumerate(col):
                if per is None:
                    continue
                if type(per) is not list or len(per) > MAX_LINKS:
                    raise ReportError(
                        f"{where}[{i}]: expected a list of at most {MAX_LINKS} "
                        f"per-link values, got {_show(per)}"
                    )
                for x in per:
                    if x is not None:
                        _check_scalar(f"{where}[{i}]", x, inner, lo, hi, n_idx)
        elif not _all_ok(col, kind, lo, hi, n_idx):
            for x in col:
                if x is not None:
                    _check_scalar(where, x, kind, lo, hi, n_idx)
        out[field] = col
    return out, n


def decode_checked(
    payload: bytes,
    *,
    topic_host: str | None = None,
    now: float | None = None,
    max_future_s: float = 300.0,
    max_age_s: float = 7 * 86400.0,
) -> Report:
    """Parse and validate one report value by value in Python: the reference decoder,
    and the one that names what is wrong when the fast path (`decode`) refuses."""
    obj = _load(payload)
    if type(obj) is not dict:
        raise ReportError(f"report must be a JSON object, got {type(obj).__name__}")
    v = obj.get("v")
    if v != VERSION or type(v) is not int:
        raise ReportError(
            f"unknown report version {_show(v)} (this daemon reads JSON version {VERSION} "
            "and binary version 2 frames)"
        )
    host = obj.get("host")
    if type(host) is not str or not HOST_RE.match(host):
        raise ReportError(f"host: expected a host name, got {_show(host)}")
    if topic_host is not None and host != topic_host:
        raise ReportError(f"host {host!r} does not match the topic's host {topic_host!r}")
    boot = obj.get("boot")
    if type(boot) is not str or not boot:
        raise ReportError(f"boot: expected a short string, got {_show(boot)}")
    _check_str("boot", boot, 64)
    seq = obj.get("seq")
    if type(seq) is not int or not 0 <= seq < 2**62:
        raise ReportError(f"seq: expected a whole number >= 0, got {_show(seq)}")
    ts = obj.get("ts")
    if not _num(ts) or not 0 < ts < MAX_EPOCH_S:
        raise ReportError(f"ts: expected epoch seconds, got {_show(ts)}")
    if now is not None:
        if ts > now + max_future_s:
            raise ReportError(f"ts {ts:.3f} is {ts - now:.0f} s in the future")
        if ts < now - max_age_s:
            raise ReportError(f"ts {ts:.3f} is {now - ts:.0f} s old (limit {max_age_s:.0f} s)")
    interval = obj.get("interval_s")
    if interval is not None and (not _num(interval) or not 0 < interval <= 86400):
        raise ReportError(f"interval_s: expected seconds in (0, 86400], got {_show(interval)}")
    dropped = obj.get("dropped", 0)
    if type(dropped) is not int or not 0 <= dropped < 2**62:
        raise ReportError(f"dropped: expected a whole number >= 0, got {_show(dropped)}")
    driver = obj.get("driver")
    if driver is not None:
        _check_str("driver", driver)
    gpu, n = _section(obj.get("gpu"), "gpu", GPU_SPEC, "uuid", 0, MAX_GPUS)
    if any(not u for u in gpu["uuid"]):
        raise ReportError("gpu.uuid: empty or null GPU UUID")
    sl, _ = _section(obj.get("slice", {}), "slice", SLICE_SPEC, None, n, MAX_SLICES)
    if sl and (
        "id" not in sl
        or "gpu" not in sl
        or any(x is None for x in sl["id"])
        or any(x is None for x in sl["gpu"])
    ):
        raise ReportError("slice: every row needs an id and a gpu position")
    proc = None
    if obj.get("proc") is not None:
        proc, _ = _section(obj["proc"], "proc", PROC_SPEC, "pid", n, MAX_PROCS)
        if (
            "gpu" not in proc
            or any(x is None for x in proc["gpu"])
            or any(x is None for x in proc["pid"])
        ):
            raise ReportError("proc: every row needs a gpu position and a pid")
    xid, lost, inv, place = extras(obj)
    return Report(
        host,
        boot,
        seq,
        float(ts),
        None if interval is None else float(interval),
        dropped,
        driver,
        gpu,
        sl,
        proc,
        xid,
        lost,
        inv,
        place,
    )


def extras(obj: dict[str, Any]) -> tuple[Any, list[str], Any, Any]:
    """The rare sections of a report (Xid events, lost GPUs, inventory, placement),
    checked: shared by version 1 and version 2 (whose frames carry them as JSON)."""
    xid = None
    if obj.get("xid") is not None:
        xid, _ = _section(obj["xid"], "xid", XID_SPEC, "code", 0, MAX_XIDS)
        if (
            "ts" not in xid
            or any(x is None for x in xid["ts"])
            or any(x is None for x in xid["code"])
        ):
            raise ReportError("xid: every event needs a ts and a code")
    lost = obj.get("lost", [])
    if (
        type(lost) is not list
        or len(lost) > MAX_GPUS
        or any(type(u) is not str or not u or len(u) > MAX_STR for u in lost)
    ):
        raise ReportError(f"lost: expected a list of GPU UUIDs, got {_show(lost)}")
    if lost and not _storable("".join(lost)):
        raise ReportError("lost: a GPU UUID has a lone surrogate or NUL character")
    inv = None
    if obj.get("inv") is not None:
        raw = obj["inv"]
        if type(raw) is not dict:
            raise ReportError(f"inv: expected an object, got {_show(raw)}")
        gi, _ = _section(raw.get("gpus", {}), "inv.gpus", INV_GPU_SPEC, "uuid", 0, MAX_GPUS)
        si, _ = _section(raw.get("slices", {}), "inv.slices", INV_SLICE_SPEC, "id", 0, MAX_SLICES)
        if (
            any(not u for u in gi["uuid"])
            or any(not s for s in si["id"])
            or (si["id"] and any(not u for u in si.get("gpu_uuid", [None])))
        ):
            raise ReportError("inv: GPU UUIDs and slice ids must be non-empty")
        inv = {"gpus": gi, "slices": si}
    place = None
    if obj.get("place") is not None:
        place = _place(obj["place"])
    return xid, lost, inv, place


def _place(raw: Any) -> dict[str, Any] | None:
    if type(raw) is not dict:
        raise ReportError(f"place: expected an object, got {_show(raw)}")
    out = {}
    for key, (kind, lo, hi) in PLACE_SPEC.items():
        x = raw.get(key)
        if x is None:
            continue
        if kind == STR and type(x) is str and len(x) > MAX_PLACE_STR:
            raise ReportError(f"place.{key}: longer than {MAX_PLACE_STR} chars")
        _check_scalar(f"place.{key}", x, kind, lo, hi, 0)
        out[key] = int(x) if kind == INT else x
    return out or None


def decode_status(payload: bytes) -> tuple[str, float | None, str | None]:
    """(state, ts, boot) of a birth/Will message."""
    obj = _load(payload)
    if type(obj) is not dict:
        raise ReportError(f"status must be a JSON object, got {type(obj).__name__}")
    if obj.get("v") != VERSION:
        raise ReportError(f"unknown status version {_show(obj.get('v'))}")
    state = obj.get("state")
    if state not in (STATE_ONLINE, STATE_OFFLINE):
        raise ReportError(f"state: expected 'online' or 'offline', got {_show(state)}")
    ts = obj.get("ts")
    if ts is not None and (not _num(ts) or not 0 < ts < MAX_EPOCH_S):
        raise ReportError(f"ts: expected epoch seconds, got {_show(ts)}")
    boot = obj.get("boot")
    if boot is not None:
        _check_str("boot", boot, 64)
    return state, None if ts is None else float(ts), boot


# -- fast decode ----------------------------------------------------------------------------
# msgspec parses and checks a report against typed structs made from the specs above in C:
# types, ranges and lengths of every value without a Python step per value. The structs
# are stricter than `decode_checked` (no null columns, no whole floats in integer columns,
# no null keys): whatever they refuse goes through `decode_checked`, which accepts it or
# names what is wrong, so the two paths accept the same reports and give the same reasons.
def _elem(kind: int, lo: float, hi: float, limit: int = MAX_STR) -> Any:
    if kind == NUM:
        return Annotated[float, Meta(ge=lo, le=hi)]
    if kind == INT:
        return Annotated[int, Meta(ge=int(lo), le=int(hi))]
    if kind == BOOL:
        return bool
    if kind == IDX:
        return Annotated[int, Meta(ge=0)]  # below the GPU count: checked after
    return Annotated[str, Meta(max_length=limit)]


def _column(kind: int, lo: float, hi: float, rows: int, required: bool) -> Any:
    if kind in (LINKS_NUM, LINKS_INT, LINKS_BOOL):
        inner = _elem({LINKS_NUM: NUM, LINKS_INT: INT, LINKS_BOOL: BOOL}[kind], lo, hi)
        # types built at run time for msgspec: beyond what mypy can follow
        per = Annotated[list[inner | None], Meta(max_length=MAX_LINKS)] | None  # type: ignore[valid-type]
        return Annotated[list[per], Meta(max_length=rows)]
    elem = _elem(kind, lo, hi)
    if kind == STR and required:
        elem = Annotated[str, Meta(min_length=1, max_length=MAX_STR)]
    return Annotated[list[elem if required or kind == IDX else elem | None], Meta(max_length=rows)]  # type: ignore[misc]


def _struct(
    name: str, spec: Mapping[str, tuple[int, float, float]], rows: int, required: tuple = ()
) -> type[msgspec.Struct]:
    """Columns named in `required` must be there with no nulls (and, if strings, non-empty);
    the others may be missing, never null."""
    fields: list[tuple[Any, ...]] = []
    for field, (kind, lo, hi) in spec.items():
        if field in required:
            fields.append((field, _column(kind, lo, hi, rows, True)))
        else:
            fields.append((field, _column(kind, lo, hi, rows, False) | UnsetType, UNSET))
    fields.sort(key=lambda f: len(f) == 3)  # required fields first
    return msgspec.defstruct(name, fields, forbid_unknown_fields=False)


_GpuV1 = _struct("GpuV1", GPU_SPEC, MAX_GPUS, ("uuid",))
_SliceV1 = _struct("SliceV1", SLICE_SPEC, MAX_SLICES)
_ProcV1 = _struct("ProcV1", PROC_SPEC, MAX_PROCS, ("gpu", "pid"))
_XidV1 = _struct("XidV1", XID_SPEC, MAX_XIDS, ("ts", "code"))
_InvGpusV1 = _struct("InvGpusV1", INV_GPU_SPEC, MAX_GPUS, ("uuid",))
_InvSlicesV1 = _struct("InvSlicesV1", INV_SLICE_SPEC, MAX_SLICES, ("id", "gpu_uuid"))
_PlaceV1 = msgspec.defstruct(
    "PlaceV1",
    [
        (
            k,
            (
                Annotated[int, Meta(ge=int(lo), le=int(hi))]
                if kind == INT
                else Annotated[str, Meta(max_length=MAX_PLACE_STR)]
            )
            | UnsetType,
            UNSET,
        )
        for k, (kind, lo, hi) in PLACE_SPEC.items()
    ],
)


class _InvV1(msgspec.Struct):
    gpus: _InvGpusV1  # type: ignore[valid-type]
    slices: _InvSlicesV1  # type: ignore[valid-type]


class _ReportV1(msgspec.Struct):
    v: int
    host: Annotated[str, Meta(max_length=253)]
    boot: Annotated[str, Meta(min_length=1, max_length=64)]
    seq: Annotated[int, Meta(ge=0, lt=2**62)]
    ts: Annotated[float, Meta(gt=0, lt=MAX_EPOCH_S)]
    gpu: _GpuV1  # type: ignore[valid-type]
    interval_s: Annotated[float, Meta(gt=0, le=86400)] | None = None
    dropped: Annotated[int, Meta(ge=0, lt=2**62)] = 0
    driver: Annotated[str, Meta(max_length=MAX_STR)] | None = None
    slice: _SliceV1 | UnsetType = UNSET  # type: ignore[valid-type]
    proc: _ProcV1 | None = None  # type: ignore[valid-type]
    xid: _XidV1 | None = None  # type: ignore[valid-type]
    lost: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=MAX_STR)]], Meta(max_length=MAX_GPUS)
    ] = []
    inv: _InvV1 | None = None
    place: _PlaceV1 | None = None  # type: ignore[valid-type]


_DECODER = msgspec.json.Decoder(_ReportV1)
_STR_COLS = {
    id(spec): [k for k, (kind, _, _) in spec.items() if kind == STR]
    for spec in (GPU_SPEC, SLICE_SPEC, PROC_SPEC, XID_SPEC, INV_GPU_SPEC, INV_SLICE_SPEC)
}


class _Slow(Exception):
    """The fast path cannot vouch for this report: decode it value by value."""


def _columns(s: Any, spec: Mapping[str, tuple[int, float, float]]) -> dict[str, list[Any]]:
    """The struct's present columns, all of one length, their strings storable."""
    out = {k: v for k, v in msgspec.structs.asdict(s).items() if v is not UNSET}
    if len(set(map(len, out.values()))) > 1:
        raise _Slow
    texts = [x for k in _STR_COLS[id(spec)] for x in out.get(k, ()) if x is not None]
    if texts and not _storable("".join(texts)):
        raise _Slow
    return out


def _fast(payload: bytes) -> Report:
    if type(payload) is not bytes or len(payload) > MAX_PAYLOAD_BYTES:
        raise _Slow
    try:
        r = _DECODER.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        raise _Slow from None
    if (
        r.v != VERSION
        or not HOST_RE.match(r.host)
        or not _storable(r.boot)
        or (r.driver is not None and not _storable(r.driver))
        or (r.lost and not _storable("".join(r.lost)))
    ):
        raise _Slow
    gpu = _columns(r.gpu, GPU_SPEC)
    n = len(gpu["uuid"])
    sl: dict[str, Any] = {} if r.slice is UNSET else _columns(r.slice, SLICE_SPEC)
    if sl and (
        "id" not in sl or "gpu" not in sl or None in sl["id"] or (sl["gpu"] and max(sl["gpu"]) >= n)
    ):
        raise _Slow
    proc = None
    if r.proc is not None:
        proc = _columns(r.proc, PROC_SPEC)
        if proc["gpu"] and max(proc["gpu"]) >= n:
            raise _Slow
    xid = None if r.xid is None else _columns(r.xid, XID_SPEC)
    inv = None
    if r.inv is not None:
        inv = {
            "gpus": _columns(r.inv.gpus, INV_GPU_SPEC),
            "slices": _columns(r.inv.slices, INV_SLICE_SPEC),
        }
    place = None
    if r.place is not None:
        place = {k: v for k, v in msgspec.structs.asdict(r.place).items() if v is not UNSET}
        if any(type(v) is str and not _storable(v) for v in place.values()):
            raise _Slow
    return Report(
        r.host,
        r.boot,
        r.seq,
        r.ts,
        r.interval_s,
        r.dropped,
        r.driver,
        gpu,
        sl,
        proc,
        xid,
        r.lost,
        inv,
        place or None,
    )


def decode(
    payload: bytes,
    *,
    topic_host: str | None = None,
    now: float | None = None,
    max_future_s: float = 300.0,
    max_age_s: float = 7 * 86400.0,
) -> Report:
    """Parse and validate one report; ReportError says why not (never another exception).

    The fast path accepts what `decode_checked` accepts, checked in C; anything it is not
    sure of (and every bad report) goes through `decode_checked` for its verdict."""
    try:
        r = _fast(payload)
    except _Slow:
        return decode_checked(
            payload,
            topic_host=topic_host,
            now=now,
            max_future_s=max_future_s,
            max_age_s=max_age_s,
        )
    if topic_host is not None and r.host != topic_host:
        raise ReportError(f"host {r.host!r} does not match the topic's host {topic_host!r}")
    if now is not None:
        if r.ts > now + max_future_s:
            raise ReportError(f"ts {r.ts:.3f} is {r.ts - now:.0f} s in the future")
        if r.ts < now - max_age_s:
            raise ReportError(f"ts {r.ts:.3f} is {now - r.ts:.0f} s old (limit {max_age_s:.0f} s)")
    return r
