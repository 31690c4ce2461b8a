"""Alert rules: TOML in the style of Prometheus alerting rules, compiled to SQL.

A rule file holds `[[rules]]` tables. Each rule has a name, a scope (what one
alert instance is about), `for`, `keep_firing_for`, a severity, labels and
templated annotations, and a condition given either as

- `expr`: a metric (a column or SQL expression over the scope's sample table),
  an aggregation over a window, a comparison and a threshold (a number, or a
  column of the scope's inventory table such as `itl_target_ms`); or
- `sql`: a query returning the offending rows, with columns `scope_key` and
  `value` (and optionally `threshold`); other columns become labels.
  `$now` (the evaluation time) and `$interval_s` (the engine's interval) may
  be used as parameters.

Every rule compiles to one SQL query (the engine evaluates the `expr` rules of
one table and scope together: shared.py), so the engine asks the store at most
once per rule per cycle whatever the fleet size. Rules are checked at load: bad keys,
types, durations, templates and SQL (run against an empty migrated store) are
one-line errors naming the file and the rule.
"""

from __future__ import annotations

import functools
import itertools
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import duckdb

from collectors.options import OptionsError, parse_options
from storage.columns import TABLE_COLUMNS
from storage.resolution import RAW, source_for
from storage.rollups import GAUGE, SPECS

SEVERITIES = ("critical", "warning", "info")
OPS = (">", ">=", "<", "<=", "==", "!=")
AGGREGATIONS = ("avg", "min", "max", "sum", "count", "last", "increase", "rate")
SQL_PARAMS = ("now", "interval_s")
DEFAULT_RULES = "default_rules.toml"


class RuleError(OptionsError):
    """A rule file is wrong; the message is one line naming the file and the rule.

    An OptionsError, so the CLI reports it as the config mistake it is."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What an alert instance is about, and where its metrics live by default."""

    table: str  # default sample table for `expr` rules (aliased `s`)
    group: tuple[str, ...]  # sample columns that identify one instance
    key: str  # SQL of the scope key over the group columns (built after aggregating)
    labels: tuple[str, ...]  # sample columns carried as labels
    inventory: tuple[str, str, str] | None  # (table, its key column, sample column) for thresholds


SCOPES: dict[str, Scope] = {
    "gpu": Scope(
        "gpu_samples", ("gpu_uuid",), "gpu_uuid", ("host",), ("gpus", "gpu_uuid", "gpu_uuid")
    ),
    "slice": Scope(
        "slice_samples",
        ("slice_id",),
        "slice_id",
        ("gpu_uuid",),
        ("slices", "slice_id", "slice_id"),
    ),
    "host": Scope("gpu_samples", ("host",), "host", (), ("hosts", "host", "host")),
    "link": Scope(
        "link_samples", ("host", "port"), "host || ':' || port", ("host", "port", "kind"), None
    ),
    "tenant": Scope("latency_samples", ("tenant",), "tenant", (), ("tenants", "tenant", "tenant")),
    "endpoint": Scope(
        "latency_samples",
        ("endpoint",),
        "endpoint",
        ("tenant", "model"),
        ("endpoints", "endpoint", "endpoint"),
    ),
    "source": Scope("collector_runs", ("collector",), "collector", (), None),
    "fleet": Scope("gpu_samples", (), "'fleet'", (), None),
}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TEMPLATE = re.compile(r"\{\{\s*\$(\w+)(?:\.(\w+))?\s*(?:\|\s*printf\s+\"([^\"]*)\"\s*)?\}\}")
_TEMPLATE_VARS = ("value", "threshold", "scope_key", "scope", "rule", "severity", "labels")
_SQL_PARAM = re.compile(r"\$([A-Za-z_]\w*)")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_duration(value: Any) -> float:
    """Seconds from "90s", "2m", "1h30m", "500ms" or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"bad duration {value!r} (negative)")
        return float(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f'bad duration {value!r} (use e.g. "90s", "2m", "1h30m")')
    pos, total = 0, 0.0
    for m in _DURATION.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(value):
        raise ValueError(f'bad duration {value!r} (use e.g. "90s", "2m", "1h30m")')
    return total


def render(template: str, variables: dict[str, Any]) -> str:
    """Fill `{{ $value }}`, `{{ $labels.host }}`, `{{ $value | printf "%.1f" }}`."""
    out = []
    for part in _template_parts(template):
        if isinstance(part, str):
            out.append(part)
            continue
        name, attr, fmt = part
        val = variables.get(name)
        if attr is not None:
            val = val.get(attr, "") if isinstance(val, dict) else ""
        out.append(_piece(val, fmt))
    return "".join(out)


def _piece(val: Any, fmt: str | None) -> str:
    """One placeholder's text: nothing for None (unknown or NULL)."""
    if val is None:
        return ""
    if fmt:
        try:
            return fmt % val
        except (TypeError, ValueError):
            return str(val)
    if isinstance(val, float):
        return f"{val:.4g}"
    return str(val)


def render_many(template: str, column: Callable[[str], list[Any]], n: int) -> list[str]:
    """`render(template, variables)` for `n` alerts at once, the same strings: `column(name)`
    is a variable's value for each alert, in order. A placeholder is filled for all the
    alerts in one pass (the first cycle after a start renders every open alert)."""
    pieces: list[Any] = []
    for part in _template_parts(template):
        if isinstance(part, str):
            if part:
                pieces.append(itertools.repeat(part, n))
            continue
        name, attr, fmt = part
        vals = column(name) if name in _TEMPLATE_VARS else [None] * n
        if attr is not None:
            vals = [v.get(attr, "") if isinstance(v, dict) else "" for v in vals]
        pieces.append(_pieces(vals, fmt))
    if not pieces:
        return [""] * n
    return list(map("".join, zip(*pieces, strict=True)))


def _pieces(vals: list[Any], fmt: str | None) -> list[str]:
    """`_piece(v, fmt)` for each of `vals`."""
    if fmt:
        try:  # what _piece does for each value, unless one of them needs its fallback
            return [fmt % v if v is not None else "" for v in vals]
        except (TypeError, ValueError):
            pass
    elif all(type(v) is str for v in vals):
        return vals  # str(v) is v
    return [_piece(v, fmt) for v in vals]


@functools.lru_cache(maxsize=1024)
def _template_parts(template: str) -> tuple[str | tuple[str, str | None, str | None], ...]:
    """A template split once into text and (name, attr, printf format) placeholders:
    the engine renders every open alert's annotations every cycle."""
    parts: list[str | tuple[str, str | None, str | None]] = []
    pos = 0
    for m in _TEMPLATE.finditer(template):
        parts += [template[pos : m.start()], m.groups()]
        pos = m.end()
    parts.append(template[pos:])
    return tuple(parts)


def _check_template(text: str) -> None:
    for m in re.finditer(r"\{\{.*?\}\}", text):
        t = _TEMPLATE.fullmatch(m.group(0))
        if t is None:
            raise ValueError(
                f"bad template {m.group(0)!r} (use {{{{ $value }}}}, "
                '{{ $labels.host }}, {{ $value | printf "%.1f" }})'
            )
        name, attr, fmt = t.groups()
        if name not in _TEMPLATE_VARS:
            raise ValueError(
                f"unknown template variable ${name} "
                f"(known: {', '.join('$' + v for v in _TEMPLATE_VARS)})"
            )
        if (name == "labels") != (attr is not None):
            raise ValueError(f"bad template {m.group(0)!r}: use $labels.NAME for labels only")
        if fmt:
            try:
                fmt % 1.0
            except (TypeError, ValueError) as exc:
                raise ValueError(f"bad printf format {fmt!r}: {exc}") from exc


# -- the TOML shape, validated with parse_options ------------------------------


@dataclass(frozen=True)
class ExprSpec:
    """`expr = { metric, agg, over, op, threshold }`: aggregate a metric over a window."""

    SIGNED_KEYS: ClassVar[frozenset[str]] = frozenset({"threshold"})

    metric: str  # a column or SQL expression over the sample table
    op: str
    threshold: float | str  # a number, or a column of the scope's inventory table
    agg: str = "avg"
    over: str | float = "1m"
    table: str | None = None  # defaults to the scope's sample table
    where: str | None = None  # extra SQL predicate over the sample table

    def __post_init__(self) -> None:
        if self.agg not in AGGREGATIONS:
            raise ValueError(f"agg must be one of {', '.join(AGGREGATIONS)}, got {self.agg!r}")
        if self.op not in OPS:
            raise ValueError(f"op must be one of {' '.join(OPS)}, got {self.op!r}")
        if self.table is not None and self.table not in TABLE_COLUMNS:
            raise ValueError(f"unknown table {self.table!r}")
        parse_duration(self.over)


@dataclass(frozen=True)
class RuleSpec:
    name: str
    scope: str
    expr: dict | None = None
    sql: str | None = None
    for_: str | float = 0.0  # TOML key `for`
    keep_firing_for: str | float = 0.0
    severity: str = "warning"
    labels: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError("name must be letters, digits and _ (it becomes `alertname`)")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}"
            )
        if (self.expr is None) == (self.sql is None):
            raise ValueError("give exactly one of `expr` or `sql`")
        for what, d in (("labels", self.labels), ("annotations", self.annotations)):
            for k, v in d.items():
                if not isinstance(v, str):
                    raise ValueError(f"{what}.{k} must be a string, got {v!r}")
        for k, v in self.annotations.items():
            try:
                _check_template(v)
            except ValueError as exc:
                raise ValueError(f"annotations.{k}: {exc}") from exc
        for key in ("for_", "keep_firing_for"):
            try:
                parse_duration(getattr(self, key))
            except ValueError as exc:
                raise ValueError(f"{key.rstrip('_')}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SharedExpr:
    """An `expr` rule's parts, for evaluating it in a scan shared with others
    (fleettui/alerts/shared.py); None for rules that keep their own query."""

    table: str
    metric: str
    agg: str
    window_us: int
    op: str
    threshold: float | str
    where: str | None


@dataclass(frozen=True, slots=True)
class Rule:
    """A loaded, compiled rule."""

    name: str
    scope: str
    severity: str
    for_s: float
    keep_firing_for_s: float
    labels: dict[str, str]
    annotations: dict[str, str]
    query: str  # returns scope_key, value, threshold, then label columns
    params: tuple[str, ...]  # which of SQL_PARAMS the query uses
    op: str  # for the peak value: the more extreme in this direction
    origin: str  # "file.toml rule 'Name'"
    shared: SharedExpr | None = None

    def bind(self, now: Any, interval_s: float) -> dict[str, Any]:
        values = {"now": now, "interval_s": float(interval_s)}
        return {p: values[p] for p in self.params}


def _sql_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def compile_expr(scope_name: str, e: ExprSpec) -> str:
    """SQL returning the offending rows of an `expr` rule: scope_key, value, threshold, labels."""
    scope = SCOPES[scope_name]
    table = e.table or scope.table
    cols = TABLE_COLUMNS[table]
    window_us = int(round(parse_duration(e.over) * 1e6))
    routed = _routed_expr(scope_name, e, table, window_us)
    if routed is not None:
        return routed
    m = f"({e.metric})"
    agg = {
        "avg": f"avg({m})",
        "min": f"min({m})",
        "max": f"max({m})",
        "sum": f"sum({m})",
        "count": f"count({m})",
        "last": f"arg_max({m}, s.ts)",
        # counters: the rise over the window (a reset counts from zero)
        "increase": f"greatest(arg_max({m}, s.ts) - arg_min({m}, s.ts), 0)",
        "rate": f"greatest(arg_max({m}, s.ts) - arg_min({m}, s.ts), 0) / {window_us / 1e6}",
    }[e.agg]
    labels = [c for c in scope.labels if c in cols]
    missing = [g for g in scope.group if g not in cols]
    if missing:
        raise ValueError(f"table {table} has no column {missing[0]!r} to tell {scope_name}s apart")
    # Group by the plain columns and build the key after aggregating: building
    # it per row (host || ':' || port) costs more than the aggregation itself.
    inner_cols = "".join(f"s.{g} AS {g}, " for g in scope.group)
    inner_labels = "".join(f", any_value(s.{c}) AS {c}" for c in labels if c not in scope.group)
    group_by = f" GROUP BY {', '.join(f's.{g}' for g in scope.group)}" if scope.group else ""
    outer_labels = "".join(f", {c}" for c in labels)
    join, threshold = "", None
    if isinstance(e.threshold, str):
        if scope.inventory is None:
            raise ValueError(
                f"threshold {e.threshold!r}: scope {scope_name} has no inventory "
                "table to take a threshold column from; use a number"
            )
        inv, inv_key, sample_col = scope.inventory
        if e.threshold not in TABLE_COLUMNS[inv]:
            raise ValueError(
                f"threshold {e.threshold!r} is not a column of {inv} "
                f"(known: {', '.join(TABLE_COLUMNS[inv])})"
            )
        join = f" JOIN {inv} d ON d.{inv_key} = s.{sample_col}"
        threshold = f"any_value(d.{e.threshold})"
    else:
        threshold = repr(float(e.threshold))
    where = f" AND ({e.where})" if e.where else ""
    return (
        f"SELECT {scope.key} AS scope_key, value, threshold{outer_labels} FROM ("
        f"SELECT {inner_cols}{agg}::DOUBLE AS value, {threshold}::DOUBLE AS threshold"
        f"{inner_labels} FROM {table} s{join} "
        f"WHERE s.ts > $now - to_microseconds({window_us}) AND s.ts <= $now{where}{group_by}"
        f") WHERE value {e.op} threshold"
    )


# Windows of an hour or more over a plain gauge column read the 1-minute (or
# 1-hour) rollup views instead of every raw row (storage/resolution.py): the
# buckets that start inside [now - over, now).
_ROUTED_AGGS = {
    "avg": "sum({m}_sum) / nullif(sum({m}_count), 0)",
    "min": "min({m}_min)",
    "max": "max({m}_max)",
}


def _routed_expr(scope_name: str, e: ExprSpec, table: str, window_us: int) -> str | None:
    spec = SPECS.get(table)
    if (
        spec is None
        or e.agg not in _ROUTED_AGGS
        or e.where
        or window_us < 3600e6
        or dict(spec.metrics).get(e.metric.strip()) != GAUGE
    ):
        return None
    tier, rel = source_for(table, window_us / 1e6, 60)
    if tier == RAW:
        return None
    scope = SCOPES[scope_name]
    if not set(scope.group) | set(scope.labels) <= set(spec.keys):
        return None
    m = e.metric.strip()
    agg = _ROUTED_AGGS[e.agg].format(m=m)
    inner_cols = "".join(f"s.{g} AS {g}, " for g in scope.group)
    inner_labels = "".join(
        f", any_value(s.{c}) AS {c}" for c in scope.labels if c not in scope.group
    )
    group_by = f" GROUP BY {', '.join(f's.{g}' for g in scope.group)}" if scope.group else ""
    outer_labels = "".join(f", {c}" for c in scope.labels)
    join, threshold = "", repr(float(e.threshold)) if not isinstance(e.threshold, str) else None
    if threshold is None:
        if scope.inventory is None or e.threshold not in TABLE_COLUMNS[scope.inventory[0]]:
            return None  # the raw path reports the mistake
        inv, inv_key, sample_col = scope.inventory
        join = f" JOIN {inv} d ON d.{inv_key} = s.{sample_col}"
        threshold = f"any_value(d.{e.threshold})"
    return (
        f"SELECT {scope.key} AS scope_key, value, threshold{outer_labels} FROM ("
        f"SELECT {inner_cols}({agg})::DOUBLE AS value, {threshold}::DOUBLE AS threshold"
        f"{inner_labels} FROM {rel} s{join} "
        f"WHERE s.bucket >= $now - to_microseconds({window_us}) AND s.bucket < $now{group_by}"
        f") WHERE value {e.op} threshold"
    )


def _shared_expr(scope_name: str, e: ExprSpec) -> SharedExpr | None:
    """The parts of a plain-window `expr` rule, or None where it keeps its own query:
    routed to the rollups, or a metric or `where` that could name the inventory
    join (`d.`), which a shared scan joins only after grouping."""
    table = e.table or SCOPES[scope_name].table
    window_us = int(round(parse_duration(e.over) * 1e6))
    if _routed_expr(scope_name, e, table, window_us) is not None:
        return None
    if isinstance(e.threshold, str) and (e.where or re.search(r"\bd\s*\.", e.metric)):
        return None
    return SharedExpr(
        table=table,
        metric=e.metric,
        agg=e.agg,
        window_us=window_us,
        op=e.op,
        threshold=e.threshold if isinstance(e.threshold, str) else float(e.threshold),
        where=e.where,
    )


def _build(spec: RuleSpec, origin: str) -> Rule:
    shared = None
    if spec.expr is not None:
        e = parse_options(ExprSpec, spec.expr, f"{origin} expr")
        query = compile_expr(spec.scope, e)
        op = e.op
        shared = _shared_expr(spec.scope, e)
    else:
        query, op = spec.sql.strip().rstrip(";"), ">"
    params = tuple(dict.fromkeys(_SQL_PARAM.findall(query)))
    bad = [p for p in params if p not in SQL_PARAMS]
    if bad:
        raise ValueError(
            f"uses unknown parameter ${bad[0]} (known: {', '.join('$' + p for p in SQL_PARAMS)})"
        )
    return Rule(
        name=spec.name,
        scope=spec.scope,
        severity=spec.severity,
        for_s=parse_duration(spec.for_),
        keep_firing_for_s=parse_duration(spec.keep_firing_for),
        labels=dict(spec.labels),
        annotations=dict(spec.annotations),
        query=query,
        params=params,
        op=op,
        origin=origin,
        shared=shared,
    )


def _check_sql(rules: list[Rule]) -> None:
    """Run every query on an empty migrated store: catches bad SQL and missing columns."""
    from datetime import datetime

    from storage.store import Store

    store = Store.open(":memory:")
    try:
        cur = store.cursor()
        for r in rules:
            try:
                cur.execute(r.query, r.bind(datetime(2000, 1, 1), 15.0))
                names = [d[0] for d in cur.description]
            except duckdb.Error as exc:
                msg = str(exc).splitlines()[0]
                raise RuleError(f"{r.origin}: query fails: {msg}") from exc
            missing = [c for c in ("scope_key", "value") if c not in names]
            if missing:
                raise RuleError(f"{r.origin}: query must return column(s) {', '.join(missing)}")
    finally:
        store.close()


def parse_rules(doc: dict[str, Any], where: str) -> list[Rule]:
    """Rules from a parsed TOML document (`[[rules]]` tables); `where` names the file."""
    unknown = sorted(set(doc) - {"rules"})
    if unknown:
        raise RuleError(f"{where}: unknown top-level key {unknown[0]!r} (expected [[rules]])")
    raw_rules = doc.get("rules", [])
    if not isinstance(raw_rules, list):
        raise RuleError(f"{where}: `rules` must be an array of tables ([[rules]])")
    out: list[Rule] = []
    for i, raw in enumerate(raw_rules):
        name = raw.get("name") if isinstance(raw, dict) else None
        origin = f"{where} rule {name!r}" if isinstance(name, str) else f"{where} rule #{i + 1}"
        if isinstance(raw, dict) and "for_" in raw:
            raise RuleError(f"{origin}: unknown key 'for_' (the key is `for`)")
        if isinstance(raw, dict) and "for" in raw:
            raw = {("for_" if k == "for" else k): v for k, v in raw.items()}
        try:
            spec = parse_options(RuleSpec, raw, origin)
            out.append(_build(spec, origin))
        except OptionsError as exc:
            raise RuleError(str(exc).replace("'for_'", "'for'").replace("for_,", "for,")) from exc
        except ValueError as exc:
            raise RuleError(f"{origin}: {exc}") from exc
    seen: set[str] = set()
    for r in out:
        if r.name in seen:
            raise RuleError(f"{r.origin}: rule name used twice")
        seen.add(r.name)
    return out


def load_rules_text(text: str, where: str, *, check_sql: bool = True) -> list[Rule]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{where}: not valid TOML: {exc}") from exc
    rules = parse_rules(doc, where)
    if check_sql:
        _check_sql(rules)
    return rules


def load_rule_files(paths: list[str | Path], *, default_pack: bool = True) -> list[Rule]:
    """The default pack (unless disabled) plus every file, names unique across all."""
    rules: list[Rule] = []
    if default_pack:
        text = resources.files("fleettui.alerts").joinpath(DEFAULT_RULES).read_text()
        rules += load_rules_text(text, DEFAULT_RULES, check_sql=False)
    for p in paths:
        path = Path(p)
        try:
            text = path.read_text()
        except OSError as exc:
            raise RuleError(f"{path}: cannot read rule file: {exc.strerror}") from exc
        rules += load_rules_text(text, str(path), check_sql=False)
    seen: dict[str, str] = {}
    for r in rules:
        if r.name in seen:
            raise RuleError(f"{r.origin}: rule name already defined in {seen[r.name]}")
        seen[r.name] = r.origin
    _check_sql(rules)
    return rules


def default_rules() -> list[Rule]:
    return load_rule_files([], default_pack=True)
