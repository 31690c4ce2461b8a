"""Where hosts live: cluster, rack, slot in the rack, NVLink domain, system model.

Real fleets say it in one of four ways, applied to every `hosts` batch whatever
source produced it (the runtime calls `Topology.place` before each write), in
this order of precedence:

1. the operator's topology file (TOML or CSV, `[topology] file`): what the
   operator wrote down is the truth;
2. the batch itself: the agent's `--cluster/--rack/...` options (carried in its
   report) or an exporter's `cluster`/`rack` labels;
3. the host name, through `[topology] host_pattern`, a regular expression with
   named groups `cluster`, `rack`, `slot` (or `rack_slot`), `nvlink_domain`, `model`.

A host none of them places keeps `rack` NULL and the views show it "unplaced".
File formats and keys: docs/config.md ("Topology"). Errors are one line naming
the file and the line or key.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.batch import Batch
from storage.columns import TABLE_COLUMNS

FIELDS = ("cluster", "rack", "rack_slot", "nvlink_domain", "model")
PATTERN_GROUPS = {
    "cluster": "cluster",
    "rack": "rack",
    "slot": "rack_slot",
    "rack_slot": "rack_slot",
    "nvlink_domain": "nvlink_domain",
    "model": "model",
}
MAX_NAME = 256
MAX_SLOT = 1_000_000


class TopologyError(ValueError):
    """The topology file or pattern is wrong: one line naming the file and the line or key."""


Placement = dict[str, Any]  # a subset of FIELDS -> value


def _value(key: str, raw: Any, where: str) -> Any:
    if raw is None or raw == "":
        return None
    if key == "rack_slot":
        if isinstance(raw, str) and raw.strip().isdigit():
            raw = int(raw.strip())
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_SLOT:
            raise TopologyError(f"{where} must be a whole number 0-{MAX_SLOT}, got {raw!r}")
        return raw
    if not isinstance(raw, str) or len(raw) > MAX_NAME:
        raise TopologyError(
            f"{where} must be a string of at most {MAX_NAME} chars, got {raw!r}"[:300]
        )
    return raw.strip() or None


def _from_toml(text: str, path: str) -> dict[str, Placement]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"hosts"})
    if unknown:
        raise TopologyError(f'{path}: unknown key {unknown[0]!r} (expected [hosts."NAME"] tables)')
    hosts = raw.get("hosts", {})
    if not isinstance(hosts, dict):
        raise TopologyError(f"{path}: 'hosts' must be a table of tables ([hosts.\"NAME\"])")
    out: dict[str, Placement] = {}
    for host, entry in hosts.items():
        where = f"{path}: hosts.{host!r}"
        if not isinstance(entry, dict):
            raise TopologyError(f"{where}: expected a table of {', '.join(FIELDS)}")
        bad = sorted(set(entry) - set(FIELDS))
        if bad:
            raise TopologyError(f"{where}: unknown key {bad[0]!r} (known: {', '.join(FIELDS)})")
        out[host] = {k: _value(k, v, f"{where}.{k}") for k, v in entry.items()}
    return out


def _from_csv(text: str, path: str) -> dict[str, Placement]:
    rows = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    out: dict[str, Placement] = {}
    for row in rows:
        line = rows.line_num
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if header is None:
            header = cells
            bad = [c for c in header if c not in ("host", *FIELDS)]
            if "host" not in header or bad:
                raise TopologyError(
                    f"{path}:{line}: header must name 'host' and any of {', '.join(FIELDS)}"
                    + (f" (unknown column {bad[0]!r})" if bad else "")
                )
            continue
        if len(cells) != len(header):
            raise TopologyError(f"{path}:{line}: {len(cells)} fields, the header has {len(header)}")
        rec = dict(zip(header, cells, strict=True))
        host = rec.pop("host")
        if not host:
            raise TopologyError(f"{path}:{line}: empty host")
        if host in out:
            raise TopologyError(f"{path}:{line}: host {host!r} listed twice")
        out[host] = {k: _value(k, v, f"{path}:{line}: {k}") for k, v in rec.items()}
    return out


def load_topology_file(path: str | Path) -> dict[str, Placement]:
    """host -> placement from a `.toml` or `.csv` file."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise TopologyError(f"{p}: no such topology file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{p}: cannot read: {exc}") from None
    if p.suffix.lower() == ".csv":
        return _from_csv(text, str(p))
    if p.suffix.lower() == ".toml":
        return _from_toml(text, str(p))
    raise TopologyError(f"{p}: topology file must end in .toml or .csv")


def compile_pattern(pattern: str, where: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise TopologyError(f"{where}: host_pattern is not a regular expression: {exc}") from None
    bad = sorted(set(rx.groupindex) - set(PATTERN_GROUPS))
    if bad or not rx.groupindex:
        raise TopologyError(
            f"{where}: host_pattern needs named groups among "
            f"{', '.join(PATTERN_GROUPS)}" + (f" (unknown group {bad[0]!r})" if bad else "")
        )
    return rx


@dataclass
class Topology:
    """Placement by file, batch and host-name pattern; `place` fills `hosts` batches."""

    by_host: Mapping[str, Placement] = field(default_factory=dict)
    pattern: re.Pattern[str] | None = None
    _from_name: dict[str, Placement] = field(default_factory=dict, repr=False)
    _cache: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = field(
        default_factory=dict, repr=False
    )

    @property
    def empty(self) -> bool:
        return not self.by_host and self.pattern is None

    def from_name(self, host: str) -> Placement:
        hit = self._from_name.get(host)
        if hit is None:
            m = self.pattern.fullmatch(host) if self.pattern else None
            hit = {}
            if m:
                for group, value in m.groupdict().items():
                    if value:
                        key = PATTERN_GROUPS[group]
                        try:
                            hit[key] = _value(key, value, "host_pattern")
                        except TopologyError:  # a slot group that is not a number
                            continue
            if len(self._from_name) < 1_000_000:
                self._from_name[host] = hit
        return hit

    def _rules(self, host: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """(what the file says, what the name says) per field, for one host; cached."""
        hit = self._cache.get(host)
        if hit is None:
            f = self.by_host.get(host) or {}
            n = self.from_name(host)
            hit = (tuple(f.get(k) for k in FIELDS), tuple(n.get(k) for k in FIELDS))
            if len(self._cache) < 1_000_000:
                self._cache[host] = hit
        return hit

    def place(self, batch: Batch) -> Batch:
        """The `hosts` batch with placement applied (other tables pass through)."""
        if batch.table != "hosts" or self.empty or batch.rows == 0:
            return batch
        data = batch.data
        rules = [self._rules(h) for h in data.column("host").to_pylist()]
        types = TABLE_COLUMNS["hosts"]
        for i, key in enumerate(FIELDS):
            if key in data.column_names:
                have = data.column(key).to_pylist()
                out = [
                    f[i] if f[i] is not None else (v if v is not None else n[i])
                    for (f, n), v in zip(rules, have, strict=True)
                ]
            else:
                out = [f[i] if f[i] is not None else n[i] for f, n in rules]
            col = pa.array(out, types[key])
            if key in data.column_names:
                data = data.set_column(data.column_names.index(key), key, col)
            else:
                data = data.append_column(key, col)
        return Batch(batch.table, data)


def build_topology(
    file: str, host_pattern: str, where: str, base_dir: Path | None = None
) -> Topology:
    """The `[topology]` section: a file (relative to the config's folder) and/or a pattern."""
    by_host: dict[str, Placement] = {}
    if file:
        p = Path(file).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        by_host = load_topology_file(p)
    return Topology(by_host, compile_pattern(host_pattern, where))
