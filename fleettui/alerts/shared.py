"""Shared window scans: every `expr` rule over one table and scope reads it once per cycle.

A rule compiled on its own (`Rule.query`) scans its window of the sample table,
groups by the scope and compares; with eleven such rules the engine read the
same two minutes of `gpu_samples` six times a cycle. Here the rules of one
(table, scope) pair become one query: the longest of their windows is scanned
once, grouped once, and each rule's aggregate is computed over its own rows
with `FILTER (WHERE ts in its window AND its where)`. The comparisons then run
over that per-key result (one row per GPU, slice, link...), still in DuckDB so
NULL and NaN compare exactly as in the rule's own query.

What each rule sees is what its own query sees:
- its window and `where` are its aggregate's filter, so its value is the same
  aggregate over the same rows;
- a key with no rows in a rule's window and `where` is no row for that rule
  (its own query would not have grouped it): a `count` of 0 is not a value;
- a threshold column is read from the scope's inventory after grouping; the
  inventory tables are keyed by that column, so it is the value the rule's
  join would have found, and a key missing from the inventory has no
  threshold and no alert, as with the rule's inner join;
- the fleet scope has no key: its one row exists with or without samples, as
  an aggregate without GROUP BY returns one row.
- a `where` that only asks whether the scope's key is in an uncorrelated
  subquery (`s.gpu_uuid IN (SELECT gpu_uuid FROM assignments ...)`) is the
  same for every row of a key: it is asked once per key after grouping, and
  the rule's aggregate reads all the key's rows in its window (the rows the
  filter keeps, when the key passes). Asked per row, it was a join of the
  whole window (a third of the 100,000-GPU scan);
- labels (`any_value` of the scope's label columns) are taken over the scan's
  rows rather than the rule's: the same where a key's labels are the same on
  all its rows (a GPU's host), and an arbitrary one of them either way.

A table stored as rows keyed by an integer id plus a dimension (`gpu_samples`,
`slice_samples`, `link_samples`: storage/keyed.py) is read without its view:
the window's rows are grouped by that id first (an integer, not the view's
joined strings), and the dimension is joined to the grouped ids. While the
dimension gives each id its own scope key (one source per GPU and port), a
grouped id is a grouped key and each rule's own aggregate is taken per id;
otherwise (two sources for one GPU, the host scope) each aggregate is kept
per id as partials (avg as sum and count, last as its value and time...)
and the partials are combined per key. Which of the two holds is
asked of the dimension inside the scan's transaction, and remembered while
the dimension's fingerprint (count, top id, hash of ids and keys) stays the
same. The first time, one pass reads the fingerprint and the number of distinct
key hashes: as many as ids answers it; fewer (two ids for a key, or a hash
collision) runs the exact check. This path is taken only when the query binds on the rows table: a
metric or `where` naming a column of the dimension (or `energy_j`, computed by
the view) reads the view.

Routed rules (windows read from the rollups), `sql` rules and rules whose
`where` could name the inventory join keep their own query. When a shared
query fails the engine runs its rules' own queries that cycle, so one rule's
failure is still only its own (tests/test_alert_shared.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fleettui.alerts.rules import SCOPES, Rule, SharedExpr
from storage.columns import TABLE_COLUMNS
from storage.keyed import KEYED, Keyed

# As compile_expr writes them; {f} is the rule's FILTER clause on every aggregate.
_AGGS = {
    "avg": "avg({m}){f}",
    "min": "min({m}){f}",
    "max": "max({m}){f}",
    "sum": "sum({m}){f}",
    "count": "count({m}){f}",
    "last": "arg_max({m}, s.ts){f}",
    "increase": "greatest(arg_max({m}, s.ts){f} - arg_min({m}, s.ts){f}, 0)",
    "rate": "greatest(arg_max({m}, s.ts){f} - arg_min({m}, s.ts){f}, 0) / {w}",
}


# The id path's partials per aggregate (from the rows table, grouped by id), and how they
# combine per scope key over several ids. {x} is the partials' name prefix; {f} the
# rule's FILTER clause; {nn} a FILTER keeping the rule's rows where the metric is not
# NULL (arg_max skips those).
_INCREASE = (
    "arg_max({m}, s.ts){f} AS {x}l",
    "max(s.ts){nn} AS {x}lt",
    "arg_min({m}, s.ts){f} AS {x}e",
    "min(s.ts){nn} AS {x}et",
)
_PARTIALS: dict[str, tuple[tuple[str, ...], str]] = {
    "avg": (
        ("sum({m}){f} AS {x}s", "count({m}){f} AS {x}n"),
        "sum({x}s) / nullif(sum({x}n), 0)",
    ),
    "min": (("min({m}){f} AS {x}v",), "min({x}v)"),
    "max": (("max({m}){f} AS {x}v",), "max({x}v)"),
    "sum": (("sum({m}){f} AS {x}v",), "sum({x}v)"),
    "count": (("count({m}){f} AS {x}v",), "sum({x}v)"),
    "last": (
        ("arg_max({m}, s.ts){f} AS {x}l", "max(s.ts){nn} AS {x}lt"),
        "arg_max({x}l, {x}lt)",
    ),
    "increase": (
        _INCREASE,
        "greatest(arg_max({x}l, {x}lt) - arg_min({x}e, {x}et), 0)",
    ),
    "rate": (
        _INCREASE,
        "greatest(arg_max({x}l, {x}lt) - arg_min({x}e, {x}et), 0) / {w}",
    ),
}


# `s.<column> IN (<subquery>)` and nothing else; the subquery may not name the scanned row.
_KEY_IN = re.compile(r"\s*s\.(\w+)\s+IN\s*(\(.*\))\s*", re.S | re.I)


def key_level(
    where: str | None, group: tuple[str, ...], standalone: Callable[[str], bool] | None
) -> str | None:
    """`where` as a condition on the grouped rows (`a.<key> IN (...)`) when it only
    tests a group column's membership in a subquery that runs on its own
    (`standalone(sql)`: it names no column of the scanned row); else None."""
    m = _KEY_IN.fullmatch(where or "")
    if standalone is None or m is None or m.group(1) not in group:
        return None
    sub = m.group(2)
    depth = 0  # the parentheses must close only at the end: one subquery, nothing after
    for i, ch in enumerate(sub):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and i < len(sub) - 1:
            return None
    if re.search(r"\bs\.", sub) or not standalone(sub[1:-1]):
        return None
    return f"a.{m.group(1)} IN {sub}"


@dataclass(slots=True)
class Scan:
    """One query over a table's window for the rules of one scope."""

    table: str
    scope: str
    rules: list[Rule] = field(default_factory=list)
    # Grouped by the scope's key: the view's rows, or on the id path the ids' partials.
    sql: str = ""
    labels: tuple[str, ...] = ()
    # The id path (module docstring): `direct_sql` reads a grouped id as its key, for
    # while `injective_sql` holds; `fingerprint_sql` tells when to ask that again.
    keyed: Keyed | None = None
    direct_sql: str = ""
    fingerprint_sql: str = ""
    first_sql: str = ""
    injective_sql: str = ""
    _fingerprint: tuple | None = None
    _direct: bool = False

    def build(self, standalone: Callable[[str], bool] | None = None) -> None:
        scope = SCOPES[self.scope]
        exprs: list[SharedExpr] = [r.shared for r in self.rules]  # type: ignore[misc]
        wide_us = max(e.window_us for e in exprs)
        cols = TABLE_COLUMNS[self.table]
        self.labels = tuple(c for c in scope.labels if c in cols)
        conds: dict[str, int] = {}  # a rule's filter -> its presence column
        filters: list[str] = []  # each rule's condition ("" for the scan's window)
        # Columns of the grouped rows are named a.*: the inventory joined as d may
        # have columns of the same names (endpoints.tenant).
        key = scope.key if scope.inventory is None else f"a.{scope.key}"
        outer: list[str] = [f"{key} AS scope_key"] + [f"a.{c} AS {c}" for c in self.labels]
        hits: list[str] = []
        join = ""
        for i, e in enumerate(exprs):
            parts = []
            if e.window_us < wide_us:
                parts.append(f"s.ts > $now - to_microseconds({e.window_us})")
            per_key = key_level(e.where, scope.group, standalone) if scope.group else None
            if e.where and per_key is None:
                parts.append(f"({e.where})")
            cond = " AND ".join(parts)
            if cond and cond not in conds:
                conds[cond] = len(conds)
            filters.append(cond)
            if isinstance(e.threshold, str):
                inv, inv_key, sample_col = scope.inventory  # type: ignore[misc]
                join = f" LEFT JOIN {inv} d ON d.{inv_key} = a.{sample_col}"
                thr = f"d.{e.threshold}::DOUBLE"
            else:
                thr = repr(float(e.threshold))
            hit = f"(a.v{i} {e.op} {thr})"
            if cond and scope.group:
                hit = f"({hit} AND a.p{conds[cond]} > 0)"
            if per_key:
                hit = f"({hit} AND ({per_key}))"
            outer += [f"a.v{i} AS v{i}", f"{thr} AS t{i}"]
            hits.append(hit)
        hit_cols = ", ".join(f"coalesce({h}, false) AS h{i}" for i, h in enumerate(hits))
        # Each distinct filter is computed once per row (a `where` with a subquery is a
        # join: written in every aggregate's FILTER, it was joined once per aggregate).
        flags = "".join(f", ({c}) AS _rule_c{k}" for c, k in conds.items())
        window = f"WHERE s.ts > $now - to_microseconds({wide_us}) AND s.ts <= $now"

        def query(grouped: str) -> str:
            return (
                f"SELECT * FROM (SELECT {', '.join(outer)}, {hit_cols} FROM ({grouped}) a{join})"
                f" WHERE {' OR '.join(f'h{i}' for i in range(len(hits)))}"
            )

        presence = [k for k in conds.values()] if scope.group else []
        aggs = [f"count(*) FILTER (WHERE _rule_c{k}) AS p{k}" for k in presence]
        for i, (e, cond) in enumerate(zip(exprs, filters, strict=True)):
            f = f" FILTER (WHERE _rule_c{conds[cond]})" if cond else ""
            agg = _AGGS[e.agg].format(m=f"({e.metric})", w=e.window_us / 1e6, f=f)
            aggs.append(f"({agg})::DOUBLE AS v{i}")
        inner: list[str] = [f"s.{g} AS {g}" for g in scope.group]
        inner += [f"any_value(s.{c}) AS {c}" for c in self.labels if c not in scope.group]
        group_by = f" GROUP BY {', '.join(f's.{g}' for g in scope.group)}" if scope.group else ""
        self.sql = query(
            f"SELECT {', '.join(inner + aggs)} FROM (SELECT *{flags} FROM {self.table} s"
            f" {window}) s{group_by}"
        )
        keyed = KEYED.get(self.table)
        if (
            keyed is None
            or standalone is None
            or not set(scope.group + self.labels) <= set(keyed.key)
        ):
            return
        # The id path: the rows table grouped by id, then the dimension. Each rule's
        # aggregate per id (direct), or partials per id combined per key (regroup).
        rows = f"(SELECT *{flags} FROM {keyed.rows_read} s {window}) s GROUP BY s.{keyed.id_col}"
        dim = f"JOIN {keyed.dim} k ON k.{keyed.id_col} = s._id"
        first = [f"s.{keyed.id_col} AS _id"]
        first += [f"count(*) FILTER (WHERE _rule_c{k}) AS _p{k}" for k in presence]
        regroup = [f"k.{g} AS {g}" for g in scope.group]
        regroup += [f"any_value(k.{c}) AS {c}" for c in self.labels if c not in scope.group]
        regroup += [f"sum(s._p{k}) AS p{k}" for k in presence]
        for i, (e, cond) in enumerate(zip(exprs, filters, strict=True)):
            m = f"({e.metric})"
            rule_c = f"_rule_c{conds[cond]} AND " if cond else ""
            partials, combine = _PARTIALS[e.agg]
            first += [
                p.format(
                    m=m,
                    x=f"_x{i}",
                    f=f" FILTER (WHERE _rule_c{conds[cond]})" if cond else "",
                    nn=f" FILTER (WHERE {rule_c}{m} IS NOT NULL)",
                )
                for p in partials
            ]
            regroup.append(f"({combine.format(x=f's._x{i}', w=e.window_us / 1e6)})::DOUBLE AS v{i}")
        group_k = f" GROUP BY {', '.join(f'k.{g}' for g in scope.group)}" if scope.group else ""
        regrouped = query(
            f"SELECT {', '.join(regroup)} FROM (SELECT {', '.join(first)} FROM {rows}) s {dim}"
            f"{group_k}"
        )
        if not standalone(regrouped):
            return  # a metric or `where` reads a column of the view only
        self.sql, self.keyed = regrouped, keyed
        if scope.group:  # without one, all ids are the fleet's one key
            direct = [f"k.{c} AS {c}" for c in dict.fromkeys(scope.group + self.labels)]
            direct += [f"s.p{k} AS p{k}" for k in presence]
            direct += [f"s.v{i} AS v{i}" for i in range(len(exprs))]
            self.direct_sql = query(
                f"SELECT {', '.join(direct)} FROM (SELECT s.{keyed.id_col} AS _id, "
                f"{', '.join(aggs)} FROM {rows}) s {dim}"
            )
            group = ", ".join(scope.group)
            fingerprint = f"count(*), max({keyed.id_col}), bit_xor(hash({keyed.id_col}, {group}))"
            self.fingerprint_sql = f"SELECT {fingerprint} FROM {keyed.dim}"
            # The first fingerprint, and in the same pass how many distinct hashes of the
            # keys there are: as many as ids, each id is its own key (equal keys hash
            # alike); fewer, the exact check tells (two keys, or a collision).
            self.first_sql = f"SELECT {fingerprint}, count(DISTINCT hash({group})) FROM {keyed.dim}"
            self.injective_sql = (
                f"SELECT (SELECT count(*) FROM {keyed.dim})"
                f" = (SELECT count(*) FROM (SELECT DISTINCT {group} FROM {keyed.dim}))"
            )

    def pick(self, cur: Any) -> str:
        """The query to run now: the direct one while each id of the dimension is its own
        scope key. Run it in the scan query's transaction (`cur`), so both see one
        dimension. The fingerprint holds the dimension's count, top id and a hash of ids
        and keys: ids are handed out above the top one, so a pruned top id taken again by
        another key changes the hash."""
        if not self.direct_sql:
            return self.sql
        if self._fingerprint is None:  # the first time: one pass over the dimension
            *fingerprint, hashes = cur.execute(self.first_sql).fetchone()
            fingerprint = tuple(fingerprint)
            if hashes == fingerprint[0]:
                self._direct = True
            else:
                (self._direct,) = cur.execute(self.injective_sql).fetchone()
            self._fingerprint = fingerprint
            return self.direct_sql if self._direct else self.sql
        fingerprint = cur.execute(self.fingerprint_sql).fetchone()
        if fingerprint != self._fingerprint:
            (self._direct,) = cur.execute(self.injective_sql).fetchone()
            self._fingerprint = fingerprint
        return self.direct_sql if self._direct else self.sql

    def params(self, now: Any, interval_s: float) -> dict[str, Any]:
        values = {"now": now, "interval_s": float(interval_s)}
        return {p: values[p] for r in self.rules for p in r.params}

    def split(self, t: pa.Table) -> dict[str, tuple[list[str], list[tuple]]]:
        """Each rule's offending rows, shaped as its own query returns them."""
        cols = ["scope_key", "value", "threshold", *self.labels]
        out: dict[str, tuple[list[str], list[tuple]]] = {}
        for i, r in enumerate(self.rules):
            rows = t.filter(t.column(f"h{i}"))
            if rows.num_rows == 0:
                out[r.name] = (cols, [])
                continue
            picked = [
                rows.column("scope_key").to_pylist(),
                rows.column(f"v{i}").to_pylist(),
                thresholds(rows.column(f"t{i}")),
            ]
            picked += [rows.column(c).to_pylist() for c in self.labels]
            out[r.name] = (cols, list(zip(*picked, strict=True)))
        return out


def thresholds(col: pa.ChunkedArray) -> list:
    """A threshold column as the engine steps it: DECIMAL as float (what it makes of a
    Decimal), NULL as None. A literal threshold is a DECIMAL, one value on every row: it is
    converted once (a Decimal per row cost more than the rest of the split)."""
    if not pa.types.is_decimal(col.type):
        return col.to_pylist()
    n = len(col)
    if n and col.null_count == 0:
        low, high = (x.as_py() for x in pc.min_max(col).values())
        if low == high:
            return [float(low)] * n
    return [None if v is None else float(v) for v in col.to_pylist()]


def plan(rules: list[Rule], standalone: Callable[[str], bool] | None = None) -> list[Scan]:
    """The shared scans for the rules that can share (at least two per table and scope).

    `standalone(sql)`: whether a `where`'s subquery runs on its own (then it is asked
    per key, not per row); without it every `where` is asked per row."""
    scans: dict[tuple[str, str], Scan] = {}
    for r in rules:
        if r.shared is None:
            continue
        key = (r.shared.table, r.scope)
        scans.setdefault(key, Scan(*key)).rules.append(r)
    out = []
    for s in scans.values():
        if len(s.rules) > 1 or s.table in KEYED:
            s.build(standalone)
            # one rule alone shares nothing: it is a scan only for the id path's sake
            if len(s.rules) > 1 or s.keyed is not None:
                out.append(s)
    return out
