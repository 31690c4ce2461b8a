"""Tenancy the operator writes down: GPUs, slices and fractions rented by contract, and the
latency targets of inference endpoints.

- The assignments file (`[tenancy] assignments`, TOML or CSV) lists who holds what,
  from when until when: a GPU by `gpu_uuid` or by `host` + `gpu_index`, a MIG slice
  or fractional share by `slice_id` (with its `fraction`). They become `tenants` and
  `assignments` rows; a `host` + `gpu_index` is resolved to its GPU when a source
  reports that GPU (or from the store at start).
- `[latency_targets]` gives ITL and TTFT p99 targets per endpoint, per tenant and a
  default; they fill `endpoints` rows whatever source wrote them, so the ITL/TTFT
  alerts and the Tenants view work on real fleets. Precedence for a target: the
  endpoint's own entry, then its tenant's, then what the source said, then the default.

Formats and every key: docs/config.md ("Tenancy" and "Latency targets").
"""

from __future__ import annotations

import csv
import io
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.batch import Batch, make_batch

ASSIGNMENT_KEYS = (
    "tenant",
    "gpu_uuid",
    "host",
    "gpu_index",
    "slice_id",
    "fraction",
    "since",
    "until",
)
TENANT_KEYS = ("display_name", "tier")
TARGET_KEYS = ("itl_p99_ms", "ttft_p99_ms")
MAX_NAME = 256
CONTRACT_SOURCE = "contract"  # assignments.source of rows from the assignments file


class ContractsError(ValueError):
    """The assignments file or the targets are wrong: one line naming file and line or key."""


@dataclass(frozen=True)
class Contract:
    tenant: str
    gpu_uuid: str | None
    host: str | None
    gpu_index: int | None
    slice_id: str | None
    fraction: float
    since: datetime
    until: datetime | None


def _ts(raw: Any, where: str) -> datetime | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, datetime):
        dt = raw
    elif isinstance(raw, date):
        dt = datetime(raw.year, raw.month, raw.day)
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ContractsError(f"{where}: not an ISO 8601 time: {raw!r}") from None
    else:
        raise ContractsError(f"{where}: expected a time, got {raw!r}")
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt  # naive = UTC


def _name(raw: Any, where: str) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > MAX_NAME:
        raise ContractsError(
            f"{where}: expected a name of at most {MAX_NAME} chars, got {raw!r}"[:300]
        )
    return raw.strip() or None


def _contract(rec: Mapping[str, Any], where: str) -> Contract:
    unknown = sorted(set(rec) - set(ASSIGNMENT_KEYS))
    if unknown:
        raise ContractsError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(ASSIGNMENT_KEYS)})"
        )
    tenant = _name(rec.get("tenant"), f"{where}: tenant")
    if tenant is None:
        raise ContractsError(f"{where}: tenant is required")
    gpu = _name(rec.get("gpu_uuid"), f"{where}: gpu_uuid")
    host = _name(rec.get("host"), f"{where}: host")
    slice_id = _name(rec.get("slice_id"), f"{where}: slice_id")
    idx_raw = rec.get("gpu_index")
    idx: int | None = None
    if idx_raw not in (None, ""):
        if isinstance(idx_raw, str) and idx_raw.strip().isdigit():
            idx_raw = int(idx_raw)
        if isinstance(idx_raw, bool) or not isinstance(idx_raw, int) or not 0 <= idx_raw < 1024:
            raise ContractsError(
                f"{where}: gpu_index must be a whole number 0-1023, got {idx_raw!r}"
            )
        idx = idx_raw
    if slice_id is not None:
        parent = slice_id.split("/", 1)[0]
        if "/" not in slice_id or (gpu is not None and gpu != parent):
            raise ContractsError(
                f"{where}: slice_id must be <gpu_uuid>/<slice> (of gpu_uuid when both are given)"
            )
        gpu = parent
    ways = (gpu is not None) + (host is not None or idx is not None)
    if ways != 1 or (host is None) != (idx is None):
        raise ContractsError(
            f"{where}: name the GPU one way: gpu_uuid, slice_id, or host with gpu_index"
        )
    frac_raw = rec.get("fraction")
    if frac_raw in (None, ""):
        if slice_id is not None:
            raise ContractsError(f"{where}: a slice needs its fraction (0-1] of the GPU")
        frac = 1.0
    else:
        try:
            frac = float(frac_raw)
        except (TypeError, ValueError):
            raise ContractsError(f"{where}: fraction must be a number, got {frac_raw!r}") from None
        if not 0 < frac <= 1:
            raise ContractsError(f"{where}: fraction must be in (0, 1], got {frac}")
    since = _ts(rec.get("since"), f"{where}: since")
    if since is None:
        raise ContractsError(f"{where}: since is required (when the assignment started)")
    until = _ts(rec.get("until"), f"{where}: until")
    if until is not None and until <= since:
        raise ContractsError(f"{where}: until must be after since")
    return Contract(tenant, gpu, host, idx, slice_id, frac, since, until)


def _tenants_table(raw: Any, where: str) -> dict[str, dict[str, str | None]]:
    if not isinstance(raw, dict):
        raise ContractsError(f"{where}: 'tenants' must be a table of tables ([tenants.NAME])")
    out = {}
    for name, entry in raw.items():
        w = f"{where}: tenants.{name!r}"
        if not isinstance(entry, dict):
            raise ContractsError(f"{w}: expected a table of {', '.join(TENANT_KEYS)}")
        bad = sorted(set(entry) - set(TENANT_KEYS))
        if bad:
            raise ContractsError(f"{w}: unknown key {bad[0]!r} (known: {', '.join(TENANT_KEYS)})")
        out[name] = {k: _name(entry.get(k), f"{w}.{k}") for k in TENANT_KEYS}
    return out


def load_assignments(path: str | Path) -> tuple[list[Contract], dict[str, dict[str, Any]]]:
    """(contracts, tenants) from a `.toml` or `.csv` assignments file."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ContractsError(f"{p}: no such assignments file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractsError(f"{p}: cannot read: {exc}") from None
    suffix = p.suffix.lower()
    if suffix == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ContractsError(f"{p}: invalid TOML: {exc}") from None
        bad = sorted(set(raw) - {"tenants", "assignments"})
        if bad:
            raise ContractsError(
                f"{p}: unknown key {bad[0]!r} (expected [tenants.NAME] and [[assignments]])"
            )
        items = raw.get("assignments", [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ContractsError(f"{p}: 'assignments' must be an array of tables ([[assignments]])")
        contracts = [_contract(i, f"{p}: [[assignments]] #{n}") for n, i in enumerate(items, 1)]
        return contracts, _tenants_table(raw.get("tenants", {}), str(p))
    if suffix != ".csv":
        raise ContractsError(f"{p}: assignments file must end in .toml or .csv")
    rows = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    contracts = []
    for row in rows:
        line = rows.line_num
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if header is None:
            header = cells
            bad = [c for c in header if c not in ASSIGNMENT_KEYS]
            if bad or "tenant" not in header:
                raise ContractsError(
                    f"{p}:{line}: header must name 'tenant' and any of "
                    f"{', '.join(ASSIGNMENT_KEYS[1:])}"
                    + (f" (unknown column {bad[0]!r})" if bad else "")
                )
            continue
        if len(cells) != len(header):
            raise ContractsError(f"{p}:{line}: {len(cells)} fields, the header has {len(header)}")
        contracts.append(_contract(dict(zip(header, cells, strict=True)), f"{p}:{line}"))
    return contracts, {}


@dataclass(frozen=True)
class Targets:
    itl_p99_ms: float | None = None
    ttft_p99_ms: float | None = None
    tenant: str | None = None  # endpoints only: whose endpoint it is
    model: str | None = None  # endpoints only: the model it serves


def _targets(raw: Any, where: str, extra: tuple[str, ...] = ()) -> Targets:
    if not isinstance(raw, dict):
        raise ContractsError(f"{where}: expected a table")
    known = TARGET_KEYS + extra
    bad = sorted(set(raw) - set(known))
    if bad:
        raise ContractsError(f"{where}: unknown key {bad[0]!r} (known: {', '.join(known)})")
    vals: dict[str, Any] = {}
    for k in TARGET_KEYS:
        v = raw.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v <= 0):
            raise ContractsError(f"{where}: {k} must be a number of milliseconds > 0, got {v!r}")
        vals[k] = None if v is None else float(v)
    for k in extra:
        vals[k] = _name(raw.get(k), f"{where}.{k}")
    return Targets(**vals)


@dataclass(frozen=True)
class LatencyTargets:
    default: Targets = field(default_factory=Targets)
    tenants: Mapping[str, Targets] = field(default_factory=dict)
    endpoints: Mapping[str, Targets] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.tenants and not self.endpoints and self.default == Targets()


def parse_latency_targets(raw: Mapping[str, Any] | None, where: str) -> LatencyTargets:
    """`[latency_targets]`: itl_p99_ms, ttft_p99_ms, [.tenants.NAME], [.endpoints.NAME]."""
    if not raw:
        return LatencyTargets()
    if not isinstance(raw, dict):
        raise ContractsError(f"{where}: expected a table")
    top = {k: v for k, v in raw.items() if k not in ("tenants", "endpoints")}
    tenants = raw.get("tenants", {})
    endpoints = raw.get("endpoints", {})
    for name, t in (("tenants", tenants), ("endpoints", endpoints)):
        if not isinstance(t, dict):
            raise ContractsError(f"{where}: '{name}' must be a table of tables")
    return LatencyTargets(
        _targets(top, where),
        {n: _targets(t, f"{where}.tenants.{n}") for n, t in tenants.items()},
        {
            n: _targets(t, f"{where}.endpoints.{n}", ("tenant", "model"))
            for n, t in endpoints.items()
        },
    )


_TS = pa.timestamp("us")


class Tenancy:
    """Writes the contracts and fills endpoint targets; the runtime calls it on every write."""

    def __init__(
        self,
        contracts: list[Contract] | None = None,
        tenants: Mapping[str, Mapping[str, Any]] | None = None,
        targets: LatencyTargets | None = None,
    ) -> None:
        self.contracts = list(contracts or [])
        self.tenant_info = dict(tenants or {})
        self.targets = targets or LatencyTargets()
        # host + gpu_index contracts still waiting for their GPU's uuid
        self._waiting = [c for c in self.contracts if c.gpu_uuid is None]

    @property
    def empty(self) -> bool:
        return not self.contracts and not self.tenant_info and self.targets.empty

    # -- at start ------------------------------------------------------------------------
    def first_batches(
        self, gpus: Mapping[tuple[str, int], str], endpoints: pa.Table | None
    ) -> list[Batch]:
        """Everything known before any source reports: tenants, contracts naming their GPU
        (and those whose host + index `gpus` resolves), configured and stored endpoints."""
        out = self._tenant_rows(
            {c.tenant for c in self.contracts}
            | {t.tenant for t in self.targets.endpoints.values() if t.tenant}
        )
        out += self._assignments([c for c in self.contracts if c.gpu_uuid is not None])
        out += self._resolve(gpus)
        rows: dict[str, dict[str, Any]] = {}
        if endpoints is not None:
            for r in endpoints.to_pylist():
                rows[r["endpoint"]] = r
        for name in self.targets.endpoints:
            rows.setdefault(name, {"endpoint": name})
        if rows and not self.targets.empty:
            out.append(self._endpoint_batch(list(rows.values())))
        return out

    # -- on every write -----------------------------------------------------------------
    def enrich(self, batches: list[Batch]) -> list[Batch]:
        if self.empty:
            return batches
        out = []
        for b in batches:
            if b.table == "endpoints" and not self.targets.empty and b.rows:
                b = self._endpoint_batch(b.data.to_pylist())
            elif b.table == "gpus" and self._waiting and b.rows:
                cols = b.data.column_names
                if {"host", "gpu_index"} <= set(cols):
                    found = {
                        (h, i): u
                        for h, i, u in zip(
                            b.data.column("host").to_pylist(),
                            b.data.column("gpu_index").to_pylist(),
                            b.data.column("gpu_uuid").to_pylist(),
                            strict=True,
                        )
                        if i is not None
                    }
                    out += self._resolve(found)
            out.append(b)
        return out

    # -- rows --------------------------------------------------------------------------
    def _resolve(self, gpus: Mapping[Any, str]) -> list[Batch]:  # (host, gpu_index) -> uuid
        hit = [c for c in self._waiting if (c.host, c.gpu_index) in gpus]
        if not hit:
            return []
        self._waiting = [c for c in self._waiting if c not in hit]
        return self._assignments(
            [
                Contract(
                    c.tenant,
                    gpus[(c.host, c.gpu_index)],
                    c.host,
                    c.gpu_index,
                    c.slice_id,
                    c.fraction,
                    c.since,
                    c.until,
                )
                for c in hit
            ]
        )

    def _tenant_rows(self, names: set[str]) -> list[Batch]:
        names = names | set(self.tenant_info)
        if not names:
            return []
        ordered = sorted(names)
        info = [self.tenant_info.get(n, {}) for n in ordered]
        return [
            make_batch(
                "tenants",
                {
                    "tenant": ordered,
                    "display_name": [i.get("display_name") for i in info],
                    "tier": [i.get("tier") for i in info],
                },
            )
        ]

    @staticmethod
    def _assignments(cs: list[Contract]) -> list[Batch]:
        if not cs:
            return []
        return [
            make_batch(
                "assignments",
                {
                    "tenant": [c.tenant for c in cs],
                    "gpu_uuid": [c.gpu_uuid for c in cs],
                    "slice_id": pa.array([c.slice_id for c in cs], pa.string()),
                    "fraction": [c.fraction for c in cs],
                    "valid_from": pa.array([c.since for c in cs], _TS),
                    "valid_to": pa.array([c.until for c in cs], _TS),
                    "source": [CONTRACT_SOURCE] * len(cs),
                },
            )
        ]

    def _endpoint_batch(self, rows: list[dict[str, Any]]) -> Batch:
        t = self.targets
        cols: dict[str, list[Any]] = {
            k: [] for k in ("endpoint", "tenant", "model", "itl_target_ms", "ttft_target_ms")
        }
        for r in rows:
            ep = t.endpoints.get(r["endpoint"], Targets())
            tenant = ep.tenant or r.get("tenant")
            ten = t.tenants.get(tenant or "", Targets())
            cols["endpoint"].append(r["endpoint"])
            cols["tenant"].append(tenant)
            cols["model"].append(r.get("model") or ep.model)
            for key, col in (("itl_p99_ms", "itl_target_ms"), ("ttft_p99_ms", "ttft_target_ms")):
                cols[col].append(
                    next(
                        (
                            v
                            for v in (
                                getattr(ep, key),
                                getattr(ten, key),
                                r.get(col),
                                getattr(t.default, key),
                            )
                            if v is not None
                        ),
                        None,
                    )
                )
        return make_batch("endpoints", cols)
