"""The alert engine: rules evaluated on an interval, one state machine per rule and scope key.

    inactive -> pending -> firing -> resolved
                   \\-> inactive (the condition stopped before `for` elapsed)

Each cycle runs one query per table and scope for the `expr` rules that share
it (fleettui/alerts/shared.py) and one per other rule (the offending rows for
the whole fleet at once), steps the state of every open instance in memory, and writes
rows to the `alerts` table in one transaction:

- at once, every instance whose state changed (new, fired, resolved, ended) or whose
  threshold changed: state and times in the table are exact after every cycle;
- the current value, peak, `last_active_at`, `evaluated_at` and annotations of the
  other open instances are refreshed in rotation, oldest row first: every one at least
  every `refresh_s`, and all of them every cycle while they are few
  (`REFRESH_ROWS_EVERY_CYCLE`). Rewriting 20,000 open alerts every cycle cost about
  half of a 100,000-GPU cycle; writing each new peak at once cost about 2,000 rows
  a cycle more (noisy values creep up);
- `flush()` (called by `close()` at shutdown) writes every row that is behind.

Open instances (pending or firing) are read back from that table at start, so a
restarted daemon keeps its pending timers, peaks and firing alerts.

`evaluate(now)` is the synchronous core (tests drive it with a controlled
clock); `tick(now)` is what the runtime calls on `interval_s`: it evaluates in
a worker thread and hands the cycle's notifications to delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import json
import json.encoder
import logging
import math
import operator
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from fleettui.alerts.rules import Rule, render, render_many
from fleettui.alerts.shared import Scan, plan
from fleettui.alerts.silences import Silence, active_silences
from storage.batch import Batch, BatchError, make_batch
from storage.columns import TABLE_COLUMNS
from storage.store import Store, StoreError

log = logging.getLogger("fleettui.alerts")

PENDING, FIRING, RESOLVED, INACTIVE = "pending", "firing", "resolved", "inactive"

# While at most this many open alerts are behind, every one is rewritten every cycle
# (a few thousand rows cost a few ms); beyond it, `refresh_s` spreads them out.
REFRESH_ROWS_EVERY_CYCLE = 1000

# A cycle's queries (shared scans, rules' own queries) run this many at a time, each on a
# cursor of its own and as a snapshot of its own, as they did one after another. One
# query leaves a core idle in its single-threaded parts (a hash table's finalize, its
# rows handed to Python, a scan's split); the next one's scan fills it.
QUERY_WORKERS = 2

# The engine's cursors group dense integer ids (storage/keyed.py: ~100,000 GPUs, ~180,000
# links) into a direct-indexed table, not a hash table: DuckDB's perfect_ht_threshold, a
# session setting, raised on them only (as storage/views/tenants.py does for its sums).
DENSE_HT_BITS = 18


@dataclass(slots=True)
class Instance:
    """One alert: a rule about one scope key, from pending until it ends."""

    alert_id: str
    rule: str
    scope: str
    scope_key: str
    severity: str
    state: str
    started_at: datetime
    last_active_at: datetime
    evaluated_at: datetime
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    peak_value: float | None = None
    last_value: float | None = None
    threshold: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notification:
    """What delivery sends: an instance that fired, resolved, or is still firing (resend)."""

    reason: str  # "fired" | "resolved" | "resend"
    alert: Instance


@dataclass(slots=True)
class Cycle:
    """The outcome of one evaluation."""

    now: datetime
    transitions: list[tuple[Instance, str, str]] = field(default_factory=list)  # (alert, from, to)
    notifications: list[Notification] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    query_ms: float = 0.0  # all rule queries, wall time (QUERY_WORKERS at a time)
    total_ms: float = 0.0  # queries, state steps and the write
    write_ms: float = 0.0  # the write (rendering, JSON and the store's transaction)
    rows_written: int = 0  # alerts rows written: changes, plus the refresh rotation's
    rule_ms: dict[str, float] = field(default_factory=dict)
    scan_ms: dict[str, float] = field(default_factory=dict)  # shared scans, "table/scope"
    scan_errors: list[str] = field(default_factory=list)  # shared scans that fell back


class Delivery(Protocol):
    async def send(self, notifications: list[Notification], now: datetime) -> None: ...

    async def close(self, timeout_s: float = 2.0) -> None: ...


def alert_id(rule: str, scope_key: str, started_at: datetime) -> str:
    return f"{rule}|{scope_key}|{started_at.isoformat(timespec='seconds')}"


# Python's cyclic garbage collector is paused while a cycle runs. The first cycle after a
# start makes every open alert: ~100,000 tracked objects at 100,000 GPUs (instances, their
# rows), which set off ~260 collections, two of them over the whole heap, and none found
# garbage (an alert's objects hold no cycles; they are freed by reference count). Paused,
# the objects the cycle leaves are collected once, as young ones, after it.
_pause_lock = threading.Lock()
_pauses = 0  # cycles running with the collector paused (engines in other threads)
_paused_by_us = False  # whether the collector was running when the first of them began


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block, unless it is already off; the
    last block to end turns it back on if it was on when the first began."""
    global _pauses, _paused_by_us
    with _pause_lock:
        if _pauses == 0:
            _paused_by_us = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _paused_by_us:
                gc.enable()


def _more_extreme(op: str, a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return b if a is None else a
    return min(a, b) if op in ("<", "<=") else max(a, b)


class AlertEngine:
    """A runtime task: `name`, `interval_s`, `async tick(now)`."""

    def __init__(
        self,
        store: Store,
        rules: list[Rule],
        *,
        interval_s: float = 15.0,
        resend_s: float = 60.0,
        delivery: Delivery | None = None,
        name: str = "alerts",
        shared: bool = True,
        refresh_s: float = 60.0,
        query_workers: int = QUERY_WORKERS,
    ):
        self.name = name
        self.interval_s = interval_s
        self.resend_s = resend_s
        self.store = store
        self.rules = list(rules)
        # shared=False runs every rule's own query (the reference the tests compare with).
        self._shared = shared
        self._scans: list[Scan] = []
        self._planned: tuple[Rule, ...] | None = None  # the rules _scans were planned for
        self.query_workers = query_workers
        # Each query's ms in the last cycle that ran it: the slowest start first.
        self._last_query_ms: dict[tuple[str, str], float] = {}
        self.delivery = delivery
        self.refresh_s = refresh_s
        # Open instances per rule, by scope key.
        self._open: dict[str, dict[str, Instance]] = {}
        # Open instances by alert id, oldest row in the table first (the refresh rotation),
        # each with the evaluation time its row was last written for.
        self._rows: dict[str, tuple[Instance, datetime]] = {}
        # When each firing alert was last handed to delivery (the resend schedule); each
        # target keeps it queued and retries until its receiver confirms.
        self._last_sent: dict[str, datetime] = {}
        self._rule_by_name: dict[str, Rule] = {}
        # When a firing alert's condition stopped holding (for keep_firing_for). Kept in
        # memory only: after a restart the hold starts again, erring towards firing longer.
        self._clear_since: dict[str, datetime] = {}
        self._unsaved: dict[str, Instance] = {}
        # Per open alert: the (value, threshold, templates) its annotations were rendered for
        # (they are rendered when written or delivered), and the JSON of its labels and
        # annotations as last written (the dicts are replaced, never changed in place).
        self._rendered_for: dict[str, tuple[float | None, float | None, dict]] = {}
        self._json: dict[str, tuple[dict, str, dict, str]] = {}
        # evaluate() runs in a worker thread; open_alerts() may be called from the loop.
        self._lock = threading.Lock()
        self._load_open()

    # -- state kept in the store --------------------------------------------
    def _load_open(self) -> None:
        cur = self.store.cursor()
        try:
            rows = cur.execute(
                "SELECT alert_id, rule, scope, scope_key, severity, state, started_at,"
                " last_active_at, evaluated_at, fired_at, resolved_at, peak_value, last_value,"
                " threshold, labels, annotations FROM alerts WHERE state IN ('pending', 'firing')"
            ).fetchall()
        finally:
            cur.close()
        for r in rows:
            a = Instance(
                *r[:14], labels=json.loads(r[14] or "{}"), annotations=json.loads(r[15] or "{}")
            )
            self._open.setdefault(a.rule, {})[a.scope_key] = a
            self._rows[a.alert_id] = (a, a.evaluated_at)

    def open_alerts(self) -> list[Instance]:
        """Pending and firing instances, as the engine holds them now (the app should
        rather query the store: `silences.open_alerts`). Their annotations are as last
        written or delivered."""
        with self._lock:
            return [a for by_key in self._open.values() for a in by_key.values()]

    def flush(self, timeout_s: float = -1) -> bool:
        """Write every open alert whose row is behind (at shutdown: the table is then
        exact). False when the lock was not had within `timeout_s` or the write failed."""
        if not self._lock.acquire(timeout=timeout_s):
            return False
        try:
            behind = self._unsaved | {
                i: a for i, (a, at) in self._rows.items() if at != a.evaluated_at
            }
            try:
                self._write(list(behind.values()))
            except (duckdb.Error, BatchError, StoreError) as exc:
                log.warning(
                    "alerts: saving %d alert(s) failed: %s",
                    len(behind),
                    str(exc).splitlines()[0],
                )
                return False
            self._unsaved = {}
            return True
        finally:
            self._lock.release()

    def _annotated(self, a: Instance) -> Instance:
        """`a` with its annotations rendered for its current value and threshold."""
        rule = self._rule_by_name.get(a.rule)
        if rule is not None:  # a rule no longer loaded keeps what was rendered last
            inputs = (a.last_value, a.threshold, rule.annotations)
            if self._rendered_for.get(a.alert_id) != inputs:
                a.annotations = self._annotate(rule, a)
                self._rendered_for[a.alert_id] = inputs
        return a

    def _write(self, changed: list[Instance]) -> None:
        if not changed:
            return
        # Alerts this engine has not written yet (new this cycle, or a failed write's)
        # are rows the table does not hold: inserted, not merged (Batch.new_keys).
        rows = self._rows
        new = [a for a in changed if a.alert_id not in rows]
        known = [a for a in changed if a.alert_id in rows] if new else changed
        self.store.write([self._batch(part, new_keys=part is new) for part in (new, known) if part])
        for a in changed:  # to the end of the rotation; ended alerts leave it
            rows.pop(a.alert_id, None)
            if a.state in (PENDING, FIRING):
                rows[a.alert_id] = (a, a.evaluated_at)

    def _batch(self, alerts: list[Instance], *, new_keys: bool) -> Batch:
        """The `alerts` rows of these instances, annotations rendered."""
        self._annotate_many(alerts)
        cols: dict[str, list | pa.Array] = {name: list(map(get, alerts)) for name, get in _COLUMNS}
        for name in _TIMES:  # one time for all (`now` in the first cycle): one Arrow scalar
            col = cols[name]
            if col[0] is not None and col.count(col[0]) == len(col):
                cols[name] = pa.repeat(pa.scalar(col[0], type=_TIMES[name]), len(col))
        cols["labels"], cols["annotations"] = self._json_of(cols["alert_id"], alerts)  # type: ignore[arg-type]
        batch = make_batch("alerts", cols)
        return Batch(batch.table, batch.data, new_keys=True) if new_keys else batch

    def _json_of(self, ids: list[str], alerts: list[Instance]) -> tuple[list[str], list[str]]:
        """The labels and annotations JSON of `alerts` (ids `ids`): the text last written
        where its dict is the same object, else encoded now (and remembered). The first
        cycle after a start remembers none: it encodes all, with no test per alert."""
        memo = self._json
        label_dicts = list(map(_LABELS, alerts))
        note_dicts = list(map(_ANNOTATIONS, alerts))
        known = list(map(memo.get, ids))
        if not any(known):
            labels = _json_many(label_dicts)
            notes = _json_many(note_dicts)
            memo.update(
                zip(ids, zip(label_dicts, labels, note_dicts, notes, strict=True), strict=True)
            )
            return labels, notes
        labels = [""] * len(alerts)
        notes = [""] * len(alerts)
        stale: list[int] = []  # annotations to encode
        relabel: list[int] = []  # and labels (an alert's labels rarely change)
        for i, j in enumerate(known):
            if j is None or j[0] is not label_dicts[i]:
                stale.append(i)
                relabel.append(i)
            elif j[2] is not note_dicts[i]:
                stale.append(i)
                labels[i] = j[1]
            else:
                labels[i], notes[i] = j[1], j[3]
        if stale:
            for i, text in zip(relabel, _json_many([label_dicts[i] for i in relabel]), strict=True):
                labels[i] = text
            for i, text in zip(stale, _json_many([note_dicts[i] for i in stale]), strict=True):
                notes[i] = text
                memo[ids[i]] = (label_dicts[i], labels[i], note_dicts[i], text)
        return labels, notes

    def _annotate_many(self, alerts: list[Instance]) -> None:
        """What `_annotated` does for each of `alerts`, a rule's alerts rendered together."""
        by_rule: dict[str, tuple[list[Instance], list[tuple]]] = {}
        rendered_for = self._rendered_for
        rules = self._rule_by_name
        for a in alerts:
            rule = rules.get(a.rule)
            if rule is not None:  # a rule no longer loaded keeps what was rendered last
                inputs = (a.last_value, a.threshold, rule.annotations)
                if rendered_for.get(a.alert_id) != inputs:
                    todo = by_rule.get(a.rule)
                    if todo is None:
                        todo = by_rule[a.rule] = ([], [])
                    todo[0].append(a)
                    todo[1].append(inputs)
        for name, (group, inputs_of) in by_rule.items():
            rendered = self._annotate_group(rules[name], group)
            for a, texts in zip(group, rendered, strict=True):
                a.annotations = texts
            rendered_for.update(zip([a.alert_id for a in group], inputs_of, strict=True))

    @staticmethod
    def _annotate_group(rule: Rule, alerts: list[Instance]) -> list[dict[str, str]]:
        """`_annotate(rule, a)` for each of `alerts` (of `rule`), each template filled
        for all of them at once (`render_many`)."""
        columns: dict[str, list] = {}

        def column(name: str) -> list:
            if name not in columns:
                columns[name] = list(map(_VARIABLES[name], alerts))
            return columns[name]

        keys = list(rule.annotations)
        texts = [render_many(t, column, len(alerts)) for t in rule.annotations.values()]
        if len(keys) == 1:
            (k0,) = keys
            return [{k0: x} for x in texts[0]]
        if len(keys) == 2:  # a summary and a description, say: a dict display is quicker
            k0, k1 = keys
            return [{k0: x, k1: y} for x, y in zip(*texts, strict=True)]
        if not keys:
            return [{} for _ in alerts]
        return [dict(zip(keys, row, strict=True)) for row in zip(*texts, strict=True)]

    def _forget_ended(self) -> None:
        """Drop the render and JSON memos of alerts that are no longer open."""
        if len(self._json) > len(self._rows) or len(self._rendered_for) > len(self._rows):
            open_ids = self._rows.keys()
            for memo in (self._json, self._rendered_for):
                for k in memo.keys() - open_ids:
                    del memo[k]

    # -- evaluation ---------------------------------------------------------
    def evaluate(self, now: datetime) -> Cycle:
        """One cycle at `now` (naive UTC): query every rule, step states, write changes."""
        with self._lock, collector_paused():
            return self._evaluate(now)

    def offending(self, now: datetime, cycle: Cycle | None = None) -> dict[str, object]:
        """Each rule's offending rows at `now`, as (columns, rows), or its error message.

        The shared scans run first; a rule they answered does not run its own query."""
        cycle = cycle or Cycle(now)
        out: dict[str, object] = {}
        if self._planned != tuple(self.rules):  # `rules` may be replaced (a reload, a test)
            self._planned = tuple(self.rules)
            self._scans = plan(self.rules, self._runs_alone) if self._shared else []
            self._rule_by_name = {r.name: r for r in self.rules}
            self._last_query_ms = {}
        q0 = time.perf_counter()
        in_scans = {r.name for scan in self._scans for r in scan.rules}
        jobs: dict[tuple[str, str], Callable[[], Any]] = {
            ("scan", f"{scan.table}/{scan.scope}"): functools.partial(self._shared_scan, scan, now)
            for scan in self._scans
        }
        jobs |= {
            ("rule", r.name): functools.partial(self._own_query, r, now)
            for r in self.rules
            if r.name not in in_scans
        }
        done = self._run_queries(jobs)
        scanned: dict[str, tuple[list[str], list[tuple]]] = {}
        for scan in self._scans:
            name = f"{scan.table}/{scan.scope}"
            result, cycle.scan_ms[name] = done[("scan", name)]
            if isinstance(result, str):
                # Its rules run their own queries below: a failure stays the failing rule's.
                log.warning("%s (its rules ran their own queries)", result)
                cycle.scan_errors.append(result)
            else:
                scanned |= result
        fallback = {
            ("rule", r.name): functools.partial(self._own_query, r, now)
            for r in self.rules
            if r.name in in_scans and r.name not in scanned
        }
        if fallback:
            done |= self._run_queries(fallback)
        for rule in self.rules:
            if rule.name in scanned:
                out[rule.name] = scanned[rule.name]
                cycle.rule_ms[rule.name] = 0.0  # answered by its table's scan
                continue
            result, ms = done[("rule", rule.name)]
            out[rule.name] = result
            if not isinstance(result, str):
                cycle.rule_ms[rule.name] = ms
        cycle.query_ms += (time.perf_counter() - q0) * 1000
        return out

    def _run_queries(
        self, jobs: dict[tuple[str, str], Callable[[], Any]]
    ) -> dict[tuple[str, str], tuple[Any, float]]:
        """Each job's result and its own ms, `query_workers` jobs at a time, the slowest
        of the last cycle first (a long scan started last would run alone at the end)."""

        def timed(key: tuple[str, str]) -> tuple[Any, float]:
            t0 = time.perf_counter()
            result = jobs[key]()
            return result, (time.perf_counter() - t0) * 1000

        order = sorted(jobs, key=lambda k: -self._last_query_ms.get(k, math.inf))
        if self.query_workers > 1 and len(order) > 1:
            with ThreadPoolExecutor(self.query_workers, thread_name_prefix="alerts-q") as pool:
                results = list(pool.map(timed, order))
        else:
            results = list(map(timed, order))
        done = dict(zip(order, results, strict=True))
        self._last_query_ms.update((k, ms) for k, (_, ms) in done.items())
        return done

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the engine's own, its GROUP BYs over dense integer ids (the id
        path's scans: storage/keyed.py) as direct-indexed tables (`DENSE_HT_BITS`)."""
        cur = self.store.cursor()
        try:
            cur.execute(f"SET perfect_ht_threshold = {DENSE_HT_BITS}")
        except BaseException:
            cur.close()
            raise
        return cur

    def _shared_scan(
        self, scan: Scan, now: datetime
    ) -> dict[str, tuple[list[str], list[tuple]]] | str:
        """The offending rows of `scan`'s rules, or the scan's error message."""
        try:
            cur = self._cursor()
        except duckdb.Error as exc:
            return f"shared scan {scan.table}/{scan.scope}: {str(exc).splitlines()[0]}"
        try:
            cur.begin()  # the scan's choice of query and the query see one store
            try:
                sql = scan.pick(cur)
                table = cur.execute(sql, scan.params(now, self.interval_s)).to_arrow_table()
            finally:
                cur.rollback()  # it only read
            return scan.split(table)
        except duckdb.Error as exc:
            return f"shared scan {scan.table}/{scan.scope}: {str(exc).splitlines()[0]}"
        finally:
            cur.close()  # a cursor left open blocks the store's checkpoint

    def _own_query(self, rule: Rule, now: datetime) -> tuple[list[str], list[tuple]] | str:
        """`rule`'s offending rows by its own query, or its error message."""
        try:
            cur = self._cursor()
            try:
                cur.execute(rule.query, rule.bind(now, self.interval_s))
                return ([d[0] for d in cur.description], cur.fetchall())
            finally:
                cur.close()
        except duckdb.Error as exc:
            return f"{rule.origin}: evaluation failed: {str(exc).splitlines()[0]}"

    def _runs_alone(self, sql: str) -> bool:
        """Whether `sql` binds on its own (names no column of an outer query)."""
        values = {"now": datetime(2000, 1, 1), "interval_s": 1.0}
        params = {p: values[p] for p in set(_PARAM.findall(sql)) if p in values}
        cur = self.store.cursor()
        try:
            cur.execute(f"EXPLAIN {sql}", params)
            return True
        except duckdb.Error:
            return False
        finally:
            cur.close()

    def _evaluate(self, now: datetime) -> Cycle:
        t0 = time.perf_counter()
        cycle = Cycle(now)
        changed: dict[str, Instance] = {}
        names = set()
        found = self.offending(now, cycle)
        for rule in self.rules:
            names.add(rule.name)
            result = found[rule.name]
            if isinstance(result, str):
                # Keep this rule's instances as they are: an error is not a resolution.
                log.warning(result)
                cycle.errors.append(result)
                continue
            cols, rows = result
            self._step_rule(rule, cols, rows, now, cycle, changed)
        # Instances of rules that are no longer loaded end now.
        for rname in self._open.keys() - names:
            for a in self._open.pop(rname).values():
                self._end(a, now, cycle, changed)
        # Changes a failed write could not save are retried with the next cycle's, and
        # the rows longest behind are refreshed (the module's docstring).
        pending_writes = self._unsaved | changed
        budget = max(
            REFRESH_ROWS_EVERY_CYCLE, math.ceil(len(self._rows) * self.interval_s / self.refresh_s)
        )
        due = (
            (i, a)
            for i, (a, at) in self._rows.items()
            if at != a.evaluated_at and i not in pending_writes
        )
        pending_writes.update(itertools.islice(due, budget))
        w0 = time.perf_counter()
        try:
            self._write(list(pending_writes.values()))
            cycle.rows_written = len(pending_writes)
            self._unsaved = {}
            self._forget_ended()
        except (duckdb.Error, BatchError, StoreError) as exc:
            self._unsaved = pending_writes
            msg = (
                f"alerts: saving {len(pending_writes)} alert(s) failed: {str(exc).splitlines()[0]}"
            )
            log.warning(msg)
            cycle.errors.append(msg)
        cycle.write_ms = (time.perf_counter() - w0) * 1000
        self._notify(cycle, now)
        cycle.total_ms = (time.perf_counter() - t0) * 1000
        return cycle

    def _step_rule(
        self,
        rule: Rule,
        cols: list[str],
        rows: list[tuple],
        now: datetime,
        cycle: Cycle,
        changed: dict[str, Instance],
    ) -> None:
        i_key, i_val = cols.index("scope_key"), cols.index("value")
        i_thr = cols.index("threshold") if "threshold" in cols else None
        label_cols = [
            (i, c) for i, c in enumerate(cols) if c not in ("scope_key", "value", "threshold")
        ]
        seen: set[str] = set()
        open_now = self._open.setdefault(rule.name, {})
        clear_since = self._clear_since
        # What every new alert of this rule shares: its labels after the row's, in the
        # order they are set (scope_key last), and its id's tail.
        rule_labels = rule.labels | {
            "alertname": rule.name,
            "severity": rule.severity,
            "scope": rule.scope,
        }
        id_tail = alert_id("", "", now)[1:]
        name, scope, severity = rule.name, rule.scope, rule.severity
        fires_at_once = 0.0 >= rule.for_s  # a new alert has been pending for 0 s
        transitions = cycle.transitions
        for row in rows:
            key = row[i_key]
            if key is None or key in seen:
                continue
            key = str(key)
            seen.add(key)
            v = row[i_val]
            value = v if type(v) is float else _number(v)  # _number(v) is v for a float
            if i_thr is None:
                thr = None
            else:
                v = row[i_thr]
                thr = v if type(v) is float else _number(v)
            a = open_now.get(key)
            if a is None:
                labels = {c: str(row[i]) for i, c in label_cols if row[i] is not None}
                labels |= rule_labels
                labels["scope_key"] = key
                # pending since now; its value, threshold and peak this row's (by position:
                # the first cycle after a start makes every open alert)
                a = Instance(
                    f"{name}|{key}{id_tail}",
                    name,
                    scope,
                    key,
                    severity,
                    PENDING,
                    now,
                    now,
                    now,
                    None,
                    None,
                    value,
                    value,
                    thr,
                    labels,
                    {},
                )
                open_now[key] = a
                transitions.append((a, INACTIVE, PENDING))
                changed[a.alert_id] = a
                if clear_since:
                    clear_since.pop(a.alert_id, None)
                if fires_at_once:
                    a.state, a.fired_at = FIRING, now
                    transitions.append((a, PENDING, FIRING))
                continue
            peak = _more_extreme(rule.op, a.peak_value, value)
            if thr != a.threshold:
                changed[a.alert_id] = a  # written at once; a new peak waits for its turn
            a.last_value, a.threshold, a.peak_value = value, thr, peak
            a.last_active_at = a.evaluated_at = now
            if clear_since:
                clear_since.pop(a.alert_id, None)
            if a.state == PENDING and (now - a.started_at).total_seconds() >= rule.for_s:
                a.state, a.fired_at = FIRING, now
                cycle.transitions.append((a, PENDING, FIRING))
                changed[a.alert_id] = a
        for key in open_now.keys() - seen:
            a = open_now[key]
            a.evaluated_at = now
            if a.state == FIRING and rule.keep_firing_for_s > 0:
                since = clear_since.setdefault(a.alert_id, now)
                if (now - since).total_seconds() < rule.keep_firing_for_s:
                    continue  # kept firing: hysteresis, as Prometheus does
            clear_since.pop(a.alert_id, None)
            self._end(a, now, cycle, changed)
            del open_now[key]

    @staticmethod
    def _annotate(rule: Rule, a: Instance) -> dict[str, str]:
        variables = {
            "value": a.last_value,
            "threshold": a.threshold,
            "scope_key": a.scope_key,
            "scope": a.scope,
            "rule": a.rule,
            "severity": a.severity,
            "labels": a.labels,
        }
        return {k: render(v, variables) for k, v in rule.annotations.items()}

    @staticmethod
    def _end(a: Instance, now: datetime, cycle: Cycle, changed: dict[str, Instance]) -> None:
        before = a.state
        a.state = RESOLVED if before == FIRING else INACTIVE
        a.resolved_at = a.evaluated_at = now
        cycle.transitions.append((a, before, a.state))
        changed[a.alert_id] = a

    # -- what to deliver ----------------------------------------------------
    def _notify(self, cycle: Cycle, now: datetime) -> None:
        if self.delivery is None:
            return
        try:
            silences = active_silences(self.store.cursor(), now)
        except duckdb.Error as exc:
            cycle.errors.append(f"silences: {str(exc).splitlines()[0]}")
            silences = []
        resend_before = now - timedelta(seconds=self.resend_s)
        fired = {a.alert_id for a, _, to in cycle.transitions if to == FIRING}
        for a, _, to in cycle.transitions:
            if to == RESOLVED:
                cycle.notifications.append(Notification("resolved", self._annotated(a)))
                self._last_sent.pop(a.alert_id, None)
        for by_key in self._open.values():
            for a in by_key.values():
                if a.state != FIRING or _silenced(a, silences):
                    continue
                if a.alert_id in fired:
                    cycle.notifications.append(Notification("fired", self._annotated(a)))
                elif self._last_sent.get(a.alert_id, datetime.min) <= resend_before:
                    cycle.notifications.append(Notification("resend", self._annotated(a)))
                else:
                    continue
                self._last_sent[a.alert_id] = now

    async def tick(self, now: datetime) -> None:
        # The worker thread cannot be interrupted: if this tick is cancelled, wait for
        # the cycle to finish (and save) before letting the caller close the store.
        evaluation = asyncio.ensure_future(asyncio.to_thread(self.evaluate, now))
        try:
            cycle = await asyncio.shield(evaluation)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await evaluation
            raise
        if self.delivery is not None and cycle.notifications:
            try:
                await self.delivery.send(cycle.notifications, now)
            except Exception as exc:  # delivery trouble never stops evaluation
                log.warning(
                    "alert delivery failed: %s", str(exc).splitlines()[0] if str(exc) else exc
                )

    async def close(self, timeout_s: float = 2.0) -> None:
        """At shutdown: write the rows that are behind, and give queued notifications
        `timeout_s` to be confirmed."""
        await asyncio.to_thread(self.flush, timeout_s)
        if self.delivery is not None:
            await self.delivery.close(timeout_s)


_PARAM = re.compile(r"\$([A-Za-z_]\w*)")

# The `alerts` table's columns, in order, as read from an instance; labels and
# annotations, dicts there, are written as JSON.
_COLUMNS = [
    (c, operator.attrgetter(c))
    for c in TABLE_COLUMNS["alerts"]
    if c not in ("labels", "annotations")
]

_LABELS = operator.attrgetter("labels")
_ANNOTATIONS = operator.attrgetter("annotations")

# The `alerts` table's time columns and their Arrow types.
_TIMES = {c: t for c, t in TABLE_COLUMNS["alerts"].items() if pa.types.is_timestamp(t)}

# Labels and annotations as JSON: what json.dumps(d, sort_keys=True) gives, for a third
# of its time (one encoder, and no check for cycles: they are dicts of strings). The first
# cycle after a start encodes both for every open alert.
_encode_str = json.encoder.encode_basestring_ascii  # what _json encodes a str with
_json = json.JSONEncoder(sort_keys=True, check_circular=False).encode

# The template variables of an alert (`_annotate`), read from its instance.
_VARIABLES = {
    "value": operator.attrgetter("last_value"),
    "threshold": operator.attrgetter("threshold"),
    "scope_key": operator.attrgetter("scope_key"),
    "scope": operator.attrgetter("scope"),
    "rule": operator.attrgetter("rule"),
    "severity": operator.attrgetter("severity"),
    "labels": operator.attrgetter("labels"),
}


def _json_many(dicts: list[dict]) -> list[str]:
    """`_json(d)` for each of `dicts`, the same text: the dicts with the same keys are
    encoded together, a key's values for all of them in one pass (`_json_columns`)."""
    if not dicts:
        return []
    keys = list(map(tuple, dicts))
    runs = [(k, len(list(same))) for k, same in itertools.groupby(keys)]
    if len(runs) * _RUN_MIN <= len(dicts):  # a rule's alerts follow each other: run by run
        out: list[str] = []
        at = 0
        for k, n in runs:
            out += _json_columns(k, dicts[at : at + n])
            at += n
        return out
    out = [""] * len(dicts)
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    for k, at in groups.items():
        for i, text in zip(at, _json_columns(k, [dicts[i] for i in at]), strict=True):
            out[i] = text
    return out


def _json_columns(keys: tuple, dicts: list[dict]) -> list[str]:
    """`_json(d)` for dicts that all have `keys`: where keys and values are all str, the
    text json.dumps gives (sorted keys, `", "` and `": "`, each string as
    `encode_basestring_ascii`, the encoder's own) built column by column; a value shared
    by all of them (a rule's labels) is encoded once."""
    if not all(type(k) is str for k in keys):
        return list(map(_json, dicts))
    n = len(dicts)
    pieces: list = []
    text = "{"
    for at, k in enumerate(sorted(keys)):
        text += (", " if at else "") + _encode_str(k) + ": "
        col = list(map(operator.itemgetter(k), dicts))
        if set(map(type, col)) != _STR_ONLY:
            return list(map(_json, dicts))
        if col.count(col[0]) == n:
            text += _encode_str(col[0])
        else:
            pieces += [itertools.repeat(text, n), map(_encode_str, col)]
            text = ""
    pieces.append(itertools.repeat(text + "}", n))
    return list(map("".join, zip(*pieces, strict=True)))


_STR_ONLY = {str}
# Dicts with the same keys in runs at least this long on average are encoded run by run,
# with no index per dict; shorter runs are grouped by their keys first.
_RUN_MIN = 32


def _number(v: object) -> float | None:
    """A rule's value as a float; NULL, or anything that is not a number, is None."""
    if v is None or isinstance(v, bool | str | bytes):
        return None
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _silenced(a: Instance, silences: list[Silence]) -> bool:
    return any(s.matches(a.rule, a.scope_key, a.alert_id) for s in silences)
