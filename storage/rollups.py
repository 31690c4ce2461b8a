"""Rollups: 1-minute and 1-hour aggregates of every sample table.

For each sample table `T` the store keeps `T_1m` and `T_1h`: one row per key
(the GPU, slice, port or endpoint) and bucket (its start, `bucket`), with
`samples` (raw rows in it) and `last_ts` (the newest), and per metric column,
by its kind:

- gauge:   `_min`, `_max`, `_sum`, `_count` (mean = `_sum / _count`), `_last`;
           a few also `_p95` (see `P95`);
- counter: `_increase` (growth over the bucket, resets counted from 0), `_last`;
- total:   `_sum`, `_max` (per-interval counts such as link errors);
- bits:    `_or` (every bit seen), `_last` (throttle reason masks);
- flag:    `_min`, `_max`, `_last` (booleans: any false, any true);
- last:    `_last` only (sizes that do not move: memory totals, line rates).

Exactness. Sums are DECIMAL(38,6): each value is rounded to 1e-6 of its unit
before summing, so sums are exact integers underneath and a sum of per-minute
sums *is* the hour's sum in any order (DOUBLE sums are not associative). `last`
is the value of the newest row (ties broken by the larger value, NULL
greatest), which re-aggregates exactly as the max of `{ts, value}`. So the 1-h
tier is built from the 1-m tier for everything except `_p95`: a percentile
does not re-aggregate, so the 1-h `_p95` is computed from raw rows (kept
48 h by default, far beyond the 1-h tier's lag).

Counters: a row's increase is its value minus the previous non-NULL value of
the same key within `COUNTER_LOOKBACK` (5 minutes; a lower value is a reset:
the new value counts from 0); the increase belongs to the bucket of the later
row.

Incremental maintenance (`roll_up`, run by `RollupTask`) is set-based SQL:
buckets that have been closed for `grace_s` are rolled from a watermark kept
in `rollup_state`. Late rows: every run also compares raw row counts per
bucket with `samples` over the last `late_s` before the watermark; from the
first bucket that differs, the tier is recomputed (later buckets too, since a
late counter row changes the next row's increase). Rows arriving more than
`late_s` after their bucket closed stay in raw only and are not rolled up.
With that rule the rollups equal a recomputation from raw rows
(tests/test_rollups.py proves it over a simulated week).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from storage.columns import TABLE_COLUMNS

log = logging.getLogger("fleettui.rollups")

GAUGE, COUNTER, TOTAL, BITS, FLAG, LAST = "gauge", "counter", "total", "bits", "flag", "last"
SUM_TYPE = "DECIMAL(38,6)"
# A counter's increase between two samples further apart than this is not
# counted (unknown: the source was away), as Prometheus looks back 5 minutes.
# It also bounds the raw rows each incremental step re-reads before its range.
COUNTER_LOOKBACK = timedelta(minutes=5)
TIERS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1)}
_TRUNC = {"1m": "minute", "1h": "hour"}


@dataclass(frozen=True)
class Spec:
    table: str
    keys: tuple[str, ...]
    metrics: tuple[tuple[str, str], ...]  # (column, kind)
    p95: tuple[str, ...] = ()  # gauges whose 95th percentile matters

    def kinds(self, kind: str) -> list[str]:
        return [c for c, k in self.metrics if k == kind]


# p95 where a tail matters for people: utilisation and power (capacity),
# temperature, link throughput and the latency percentiles (SLOs).
SPECS: dict[str, Spec] = {
    s.table: s
    for s in (
        Spec(
            "gpu_samples",
            ("host", "gpu_uuid"),
            (
                ("util_pct", GAUGE),
                ("mem_util_pct", GAUGE),
                ("mem_used_bytes", GAUGE),
                ("mem_total_bytes", LAST),
                ("power_w", GAUGE),
                ("energy_j", COUNTER),
                ("temp_c", GAUGE),
                ("mem_temp_c", GAUGE),
                ("sm_clock_mhz", GAUGE),
                ("mem_clock_mhz", GAUGE),
                ("pcie_tx_bytes_per_s", GAUGE),
                ("pcie_rx_bytes_per_s", GAUGE),
                ("ecc_sbe_total", COUNTER),
                ("ecc_dbe_total", COUNTER),
                ("throttle_reasons", BITS),
            ),
            p95=("util_pct", "power_w", "temp_c"),
        ),
        Spec(
            "slice_samples",
            ("slice_id", "gpu_uuid"),
            (
                ("util_pct", GAUGE),
                ("mem_used_bytes", GAUGE),
                ("mem_total_bytes", LAST),
            ),
            p95=("util_pct",),
        ),
        Spec(
            "link_samples",
            ("host", "kind", "port", "gpu_uuid"),
            (
                ("tx_bytes_per_s", GAUGE),
                ("rx_bytes_per_s", GAUGE),
                ("line_rate_bytes_per_s", LAST),
                ("errors", TOTAL),
                ("link_up", FLAG),
            ),
            p95=("tx_bytes_per_s", "rx_bytes_per_s"),
        ),
        Spec(
            "latency_samples",
            ("endpoint", "tenant", "model"),
            (
                ("itl_p50_ms", GAUGE),
                ("itl_p99_ms", GAUGE),
                ("ttft_p50_ms", GAUGE),
                ("ttft_p99_ms", GAUGE),
                ("e2e_p50_ms", GAUGE),
                ("e2e_p99_ms", GAUGE),
                ("requests_per_s", GAUGE),
            ),
            p95=("itl_p99_ms", "ttft_p99_ms", "e2e_p99_ms"),
        ),
        Spec(
            "gpu_mem_samples",
            ("host", "gpu_uuid"),
            (
                ("mem_reserved_bytes", GAUGE),
                ("remapped_rows_correctable", COUNTER),
                ("remapped_rows_uncorrectable", COUNTER),
                ("remap_pending", FLAG),
                ("remap_failed", FLAG),
            ),
        ),
    )
}


def rollup_table(table: str, tier: str) -> str:
    return f"{table}_{tier}"


# -- schema ------------------------------------------------------------------
def _sql_type(table: str, col: str) -> str:
    t = str(TABLE_COLUMNS[table][col])
    return {
        "string": "VARCHAR",
        "double": "DOUBLE",
        "int64": "BIGINT",
        "bool": "BOOLEAN",
        "int32": "INTEGER",
        "timestamp[us]": "TIMESTAMP",
    }[t]


def rollup_columns(spec: Spec) -> list[tuple[str, str]]:
    """(name, SQL type) of a rollup table of `spec`, in order."""
    cols = [("bucket", "TIMESTAMP NOT NULL")]
    cols += [(k, _sql_type(spec.table, k)) for k in spec.keys]
    cols += [("samples", "BIGINT NOT NULL"), ("last_ts", "TIMESTAMP NOT NULL")]
    for c, kind in spec.metrics:
        t = _sql_type(spec.table, c)
        if kind == GAUGE:
            cols += [
                (f"{c}_min", t),
                (f"{c}_max", t),
                (f"{c}_sum", SUM_TYPE),
                (f"{c}_count", "BIGINT"),
                (f"{c}_last", t),
            ]
            if c in spec.p95:
                cols.append((f"{c}_p95", "DOUBLE"))
        elif kind == COUNTER:
            cols += [(f"{c}_increase", SUM_TYPE), (f"{c}_last", t)]
        elif kind == TOTAL:
            cols += [(f"{c}_sum", SUM_TYPE), (f"{c}_max", t)]
        elif kind == BITS:
            cols += [(f"{c}_or", t), (f"{c}_last", t)]
        elif kind == FLAG:
            cols += [(f"{c}_min", t), (f"{c}_max", t), (f"{c}_last", t)]
        elif kind == LAST:
            cols.append((f"{c}_last", t))
    # added by migration 0015, hence last: where the next bucket's increase starts
    for c in spec.kinds(COUNTER):
        cols += [(f"{c}_nonnull_last", SUM_TYPE), (f"{c}_nonnull_ts", "TIMESTAMP")]
    return cols


def ddl() -> str:
    """Migration 0015: the counters' carry columns (`_nonnull_last`, `_nonnull_ts`),
    and every live view again with the SQL of today. (0012 created the tables and
    views from this module as it was then; it is history and no longer generated.)"""
    out = [
        "-- Rollups (issue 14): each counter's last non-NULL value and its time per bucket,",
        "-- so an increase starts from the 1-minute tier instead of re-reading raw rows.",
        "-- Generated by `python -m storage.rollups` from storage/rollups.py SPECS;",
        "-- tests/test_rollups.py checks the two agree. Column meanings: SCHEMA.md.",
    ]
    for spec in SPECS.values():
        for tier in TIERS:
            for c in spec.kinds(COUNTER):
                t = rollup_table(spec.table, tier)
                out += [
                    f"ALTER TABLE {t} ADD COLUMN {c}_nonnull_last {SUM_TYPE};",
                    f"ALTER TABLE {t} ADD COLUMN {c}_nonnull_ts TIMESTAMP;",
                ]
    for spec in SPECS.values():
        for tier in TIERS:
            out += [
                "",
                f"CREATE OR REPLACE VIEW {live_view(spec.table, tier)} AS",
                live_view_sql(spec, tier) + ";",
            ]
    return "\n".join(out) + "\n"


def live_view(table: str, tier: str) -> str:
    return f"{table}_{tier}_live"


def live_view_sql(spec: Spec, tier: str) -> str:
    name = rollup_table(spec.table, tier)
    names = ", ".join(n for n, _ in rollup_columns(spec))
    wm = (
        f"(SELECT coalesce(max(done_until), TIMESTAMP '1970-01-01') FROM rollup_state"
        f" WHERE rollup = '{name}')"
    )
    tail = from_raw_sql(spec, tier).replace("$lo", wm).replace("$hi", "TIMESTAMP 'infinity'")
    return (
        f"SELECT {names} FROM {name} WHERE bucket < {wm}\nUNION ALL\nSELECT {names} FROM ({tail})"
    )


# -- the aggregation SQL -------------------------------------------------------
def _dec(expr: str) -> str:
    # values outside DECIMAL(38,6) (inf, NaN, > 1e32) are left out of sum and count
    return f"TRY_CAST({expr} AS {SUM_TYPE})"


def _keys_on(spec: Spec, a: str, b: str) -> str:
    return " AND ".join(f"{a}.{k} IS NOT DISTINCT FROM {b}.{k}" for k in spec.keys)


def _from_raw_select(spec: Spec, tier: str, p95_only: bool = False) -> str:
    """SELECT list aggregating raw rows (counter increases are joined on: from_raw_sql)."""
    keys = ", ".join(spec.keys)
    parts = [f"date_trunc('{_TRUNC[tier]}', ts) AS bucket", keys]
    if p95_only:
        parts += [f"quantile_cont({c}, 0.95) AS {c}_p95" for c in spec.p95]
        return ", ".join(parts)
    parts += ["count(*) AS samples", "max(ts) AS last_ts"]

    def last(c: str) -> str:
        return f"max({{'t': ts, 'v': {c}}}).v AS {c}_last"

    for c, kind in spec.metrics:
        if kind == GAUGE:
            parts += [
                f"min({c}) AS {c}_min",
                f"max({c}) AS {c}_max",
                f"sum({_dec(c)}) AS {c}_sum",
                f"count({_dec(c)}) AS {c}_count",
                last(c),
            ]
            if c in spec.p95:
                parts.append(f"quantile_cont({c}, 0.95) AS {c}_p95")
        elif kind == COUNTER:
            parts.append(last(c))  # the increase comes from _counter_increases
        elif kind == TOTAL:
            parts += [f"sum({_dec(c)}) AS {c}_sum", f"max({c}) AS {c}_max"]
        elif kind == BITS:
            parts += [f"bit_or({c}) AS {c}_or", last(c)]
        elif kind == FLAG:
            parts += [f"min({c}) AS {c}_min", f"max({c}) AS {c}_max", last(c)]
        elif kind == LAST:
            parts.append(last(c))
    # the last non-NULL value of each counter in the window's order (_counter_increases:
    # ts, then every counter's value, NULL last); max of a struct puts NULL greatest too
    counters = spec.kinds(COUNTER)
    if counters:
        order = ", ".join(f"'v_{c}': {_dec(c)}" for c in counters)
        for c in counters:
            m = f"max({{'t': ts, {order}}}) FILTER (WHERE {_dec(c)} IS NOT NULL)"
            parts += [f"{m}.v_{c} AS {c}_nonnull_last", f"{m}.t AS {c}_nonnull_ts"]
    return ",\n       ".join(parts)


def _counter_increases(spec: Spec, tier: str) -> str:
    """Per key and bucket in [$lo, $hi): `_inc_<c>`, the sum of the counter deltas.

    The window reads only keys, ts and the counters of rows in [$lo, $hi) (a
    sort carrying every column, or minutes of rows before $lo, costs several
    times more); each key's first delta starts from the last non-NULL value
    before $lo, which the 1-minute tier keeps (`_nonnull_last`, `_nonnull_ts`)."""
    counters = spec.kinds(COUNTER)
    keys = ", ".join(spec.keys)
    lookback = int(COUNTER_LOOKBACK.total_seconds())
    # one window for every counter (one sort): ordered by ts, then the counter
    # values, a total order on what the deltas read, so ties are deterministic
    order = ", ".join(f"_v_{c}" for c in counters)
    w = f"(PARTITION BY {keys} ORDER BY ts, {order})"
    values = ", ".join(f"{_dec(c)} AS _v_{c}" for c in counters)
    lags = ", ".join(
        f"lag(_v_{c} IGNORE NULLS) OVER {w} AS _p_{c}, "
        f"lag(CASE WHEN _v_{c} IS NOT NULL THEN ts END IGNORE NULLS) OVER {w} AS _pt_{c}"
        for c in counters
    )
    # the newest minute at or after $lo - lookback holding a value; older ones are
    # further than the lookback from every row in range, so they would not count
    carry = ", ".join(
        f"max({{'t': {c}_nonnull_ts, 'v': {c}_nonnull_last}})"
        f" FILTER (WHERE {c}_nonnull_ts IS NOT NULL) AS _c_{c}"
        for c in counters
    )
    before = (
        f"SELECT {keys}, {carry} FROM {rollup_table(spec.table, '1m')}"
        f" WHERE bucket >= $lo - to_seconds({lookback + 60}) AND bucket < $lo GROUP BY ALL"
    )
    prev = ", ".join(
        f"coalesce(r._p_{c}, b._c_{c}.v) AS _p_{c}, coalesce(r._pt_{c}, b._c_{c}.t) AS _pt_{c}"
        for c in counters
    )
    sums = ", ".join(
        f"sum(CASE WHEN _v_{c} IS NULL OR _p_{c} IS NULL"
        f" OR ts - _pt_{c} > to_seconds({lookback}) THEN NULL"
        f" WHEN _v_{c} >= _p_{c} THEN _v_{c} - _p_{c} ELSE _v_{c} END) AS _inc_{c}"
        for c in counters
    )
    rkeys = ", ".join(f"r.{k}" for k in spec.keys)
    rvals = ", ".join(f"r._v_{c}" for c in counters)
    return (
        f"SELECT date_trunc('{_TRUNC[tier]}', ts) AS bucket, {keys}, {sums} FROM ("
        f"SELECT {rkeys}, r.ts, {rvals}, {prev} FROM ("
        f"SELECT {keys}, ts, {order}, {lags} FROM (SELECT {keys}, ts, {values} FROM {spec.table}"
        f" WHERE ts >= $lo AND ts < $hi)) r LEFT JOIN ({before}) b ON {_keys_on(spec, 'r', 'b')}"
        f") GROUP BY ALL"
    )


def from_raw_sql(spec: Spec, tier: str) -> str:
    """Every column of the `tier` rollup for buckets in [$lo, $hi), straight from raw rows."""
    main = (
        f"SELECT {_from_raw_select(spec, tier)}\nFROM {spec.table}"
        f" WHERE ts >= $lo AND ts < $hi\nGROUP BY ALL"
    )
    counters = spec.kinds(COUNTER)
    if not counters:
        return main
    on = "a.bucket = d.bucket AND " + _keys_on(spec, "a", "d")
    incs = ", ".join(f"d._inc_{c} AS {c}_increase" for c in counters)
    return (
        f"SELECT a.*, {incs} FROM ({main}) a\n"
        f"LEFT JOIN ({_counter_increases(spec, tier)}) d ON {on}"
    )


def hour_from_minutes_sql(spec: Spec) -> str:
    """The 1-h rollup for [$lo, $hi) from the 1-m rollup; `_p95` from raw rows."""
    keys = ", ".join(spec.keys)
    parts = [
        "date_trunc('hour', bucket) AS bucket",
        keys,
        "sum(samples)::BIGINT AS samples",
        "max(last_ts) AS last_ts",
    ]

    def last(c: str) -> str:
        return f"max({{'t': last_ts, 'v': {c}_last}}).v AS {c}_last"

    for c, kind in spec.metrics:
        if kind == GAUGE:
            parts += [
                f"min({c}_min) AS {c}_min",
                f"max({c}_max) AS {c}_max",
                f"sum({c}_sum) AS {c}_sum",
                f"sum({c}_count)::BIGINT AS {c}_count",
                last(c),
            ]
        elif kind == COUNTER:
            parts += [f"sum({c}_increase) AS {c}_increase", last(c)]
        elif kind == TOTAL:
            parts += [f"sum({c}_sum) AS {c}_sum", f"max({c}_max) AS {c}_max"]
        elif kind == BITS:
            parts += [f"bit_or({c}_or) AS {c}_or", last(c)]
        elif kind == FLAG:
            parts += [f"min({c}_min) AS {c}_min", f"max({c}_max) AS {c}_max", last(c)]
        elif kind == LAST:
            parts.append(last(c))
    for c in spec.kinds(COUNTER):  # minutes hold distinct times: no ties
        m = f"max({{'t': {c}_nonnull_ts, 'v': {c}_nonnull_last}}) FILTER (WHERE {c}_nonnull_ts IS NOT NULL)"
        parts += [f"{m}.v AS {c}_nonnull_last", f"{m}.t AS {c}_nonnull_ts"]
    m = (
        f"SELECT {', '.join(parts)} FROM {rollup_table(spec.table, '1m')}"
        f" WHERE bucket >= $lo AND bucket < $hi GROUP BY ALL"
    )
    if not spec.p95:
        return m
    p = (
        f"SELECT {_from_raw_select(spec, '1h', p95_only=True)} FROM {spec.table}"
        f" WHERE ts >= $lo AND ts < $hi GROUP BY ALL"
    )
    on = "m.bucket = p.bucket AND " + _keys_on(spec, "m", "p")
    p95 = ", ".join(f"p.{c}_p95" for c in spec.p95)
    return f"SELECT m.*, {p95} FROM ({m}) m LEFT JOIN ({p}) p ON {on}"


def _insert(spec: Spec, tier: str, select: str) -> str:
    names = ", ".join(n for n, _ in rollup_columns(spec))
    return f"INSERT INTO {rollup_table(spec.table, tier)} ({names}) SELECT {names} FROM ({select})"


# -- incremental maintenance ---------------------------------------------------
@dataclass(frozen=True)
class RollupOptions:
    grace_s: float = 30.0  # a bucket is rolled once closed this long
    late_s: float = 900.0  # and re-checked for late rows this long after that
    max_span_h: float = 6.0  # at most this much raw history per step (catching up)


def _watermark(cur: duckdb.DuckDBPyConnection, name: str) -> datetime | None:
    row = cur.execute("SELECT done_until FROM rollup_state WHERE rollup = ?", [name]).fetchone()
    return row[0] if row else None


def _floor(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1)
    return epoch + ((ts - epoch) // step) * step


def _execute(cur: duckdb.DuckDBPyConnection, sql: str, lo: datetime, hi: datetime):
    used = {k: v for k, v in (("lo", lo), ("hi", hi)) if f"${k}" in sql}
    return cur.execute(sql, used)


def roll_tier(
    cur: duckdb.DuckDBPyConnection,
    spec: Spec,
    tier: str,
    now: datetime,
    opts: RollupOptions = RollupOptions(),
) -> int:
    """One incremental step of one tier of one table, inside the caller's transaction.
    Returns rollup rows written."""
    step = TIERS[tier]
    name = rollup_table(spec.table, tier)
    wm = _watermark(cur, name)
    if tier == "1m":
        closed = _floor(now - timedelta(seconds=opts.grace_s), step)
        counts_src = f"SELECT date_trunc('minute', ts) AS bucket, count(*) AS n FROM {spec.table}"
        ts_col = "ts"
    else:
        wm_m = _watermark(cur, rollup_table(spec.table, "1m"))
        if wm_m is None:
            return 0
        closed = _floor(wm_m, step)
        counts_src = (
            f"SELECT date_trunc('hour', bucket) AS bucket, sum(samples) AS n"
            f" FROM {rollup_table(spec.table, '1m')}"
        )
        ts_col = "bucket"
    if wm is None:
        first_src = spec.table if tier == "1m" else rollup_table(spec.table, "1m")
        row = cur.execute(f"SELECT min({ts_col}) FROM {first_src}").fetchone()
        if not row or row[0] is None:
            return 0
        wm = _floor(row[0], step)
        check_from = wm
    else:
        late = timedelta(seconds=opts.late_s) if tier == "1m" else timedelta(hours=2)
        check_from = _floor(wm - late, step)
    hi = min(closed, max(wm, check_from) + timedelta(hours=opts.max_span_h))
    if hi <= check_from:
        return 0
    # the first bucket in [check_from, hi) whose raw count differs from what is rolled up
    dirty = _execute(
        cur,
        f"""
        SELECT min(bucket) FROM (
            SELECT bucket, n FROM ({counts_src} WHERE {ts_col} >= $lo AND {ts_col} < $hi
                                   GROUP BY ALL)
        ) r FULL JOIN (
            SELECT bucket, sum(samples) AS n FROM {name}
            WHERE bucket >= $lo AND bucket < $hi GROUP BY bucket
        ) u USING (bucket)
        WHERE r.n IS DISTINCT FROM u.n""",
        check_from,
        hi,
    ).fetchone()
    lo = dirty[0] if dirty and dirty[0] is not None else None
    written = 0
    if lo is not None:
        _execute(cur, f"DELETE FROM {name} WHERE bucket >= $lo AND bucket < $hi", lo, hi)
        select = from_raw_sql(spec, "1m") if tier == "1m" else hour_from_minutes_sql(spec)
        res = _execute(cur, _insert(spec, tier, select), lo, hi).fetchone()
        written = int(res[0]) if res else 0
    # MERGE, not INSERT OR REPLACE: the same on DuckLake, which has no primary keys
    cur.execute(
        "MERGE INTO rollup_state AS t USING (SELECT ? AS rollup, ?::TIMESTAMP AS done_until) AS s"
        " ON t.rollup = s.rollup WHEN MATCHED THEN UPDATE SET done_until = s.done_until,"
        " updated_at = now()::TIMESTAMP WHEN NOT MATCHED THEN INSERT"
        " VALUES (s.rollup, s.done_until, now()::TIMESTAMP)",
        [name, max(hi, wm)],
    )
    return written


def recompute(
    cur: duckdb.DuckDBPyConnection, spec: Spec, tier: str, lo: datetime, hi: datetime
) -> None:
    """Rebuild one tier over [lo, hi) straight from raw rows (both tiers from raw)."""
    name = rollup_table(spec.table, tier)
    _execute(cur, f"DELETE FROM {name} WHERE bucket >= $lo AND bucket < $hi", lo, hi)
    _execute(cur, _insert(spec, tier, from_raw_sql(spec, tier)), lo, hi)


# -- the daemon task: roll up, then expire tiers in small steps ---------------------
@dataclass(frozen=True)
class TierRetention:
    keep_1m: timedelta = timedelta(days=30)
    keep_1h: timedelta = timedelta(days=730)
    step: timedelta = timedelta(hours=6)  # at most this much of a tier deleted per transaction


def expire_step(
    cur: duckdb.DuckDBPyConnection, table: str, cutoff: datetime, step: timedelta
) -> int:
    """Delete the oldest `step` of rollup rows before `cutoff`; returns rows deleted."""
    row = cur.execute(f"SELECT min(bucket) FROM {table}").fetchone()
    if not row or row[0] is None or row[0] >= cutoff:
        return 0
    until = min(cutoff, row[0] + step)
    res = cur.execute(f"DELETE FROM {table} WHERE bucket < ?", [until]).fetchone()
    return int(res[0]) if res else 0


class RollupTask:
    """Periodic daemon task: roll closed buckets up, then expire old rollup rows.

    Each table and tier is its own transaction on a cursor beside the store's
    writer (`Store.side_writer`), so batches from the collectors are written while
    it runs; expiry deletes at most `retention.step` of a tier per transaction."""

    name = "rollups"

    def __init__(
        self,
        store,
        interval_s: float = 30.0,
        opts: RollupOptions = RollupOptions(),
        retention: TierRetention = TierRetention(),
        tables: Iterable[str] | None = None,
    ):
        self.store = store
        self.interval_s = interval_s
        self.opts = opts
        self.retention = retention
        self.tables = [SPECS[t] for t in (tables or SPECS)]
        self.last_written: dict[str, int] = {}
        self.last_expired: dict[str, int] = {}

    def run_once(self, now: datetime) -> None:
        for spec in self.tables:
            for tier in TIERS:
                name = rollup_table(spec.table, tier)
                with self._rollup_cursor() as cur:
                    self.last_written[name] = roll_tier(cur, spec, tier, now, self.opts)
        for spec in self.tables:
            for tier, keep in (("1m", self.retention.keep_1m), ("1h", self.retention.keep_1h)):
                name = rollup_table(spec.table, tier)
                total = 0
                while True:
                    with self.store.writer() as cur:
                        n = expire_step(cur, name, now - keep, self.retention.step)
                    total += n
                    if n == 0:
                        break
                self.last_expired[name] = total

    def _rollup_cursor(self):
        # beside the ingest writer, not behind its lock: a tick never holds up appends
        return self.store.side_writer()

    async def tick(self, now: datetime) -> None:
        await asyncio.to_thread(self.run_once, now)


_MEANING = {
    "min": "smallest value",
    "max": "largest value",
    "sum": "sum of the values, each rounded to 1e-6 of the unit (exact; mean = sum / count)",
    "count": "non-NULL values in the sum",
    "last": "value of the newest row",
    "p95": "95th percentile of the raw values (quantile_cont)",
    "increase": "growth over the bucket; a reset counts from 0; gaps over 5 min not counted",
    "or": "bitwise OR of every value",
    "nonnull_last": "the newest non-NULL value (DECIMAL), where the next bucket's increase starts",
    "nonnull_ts": "time of that value",
}


def schema_md() -> str:
    """SCHEMA.md's section on the rollups, generated from SPECS (tests check it)."""
    out = [
        "## History ([docs/history.md](docs/history.md))",
        "",
        "Each sample table has a 1-minute and a 1-hour rollup table (`T_1m`, `T_1h`) and a",
        "view of each that adds the buckets not rolled up yet (`T_1m_live`, `T_1h_live`),",
        "all with the same columns. Metrics keep the raw column's unit.",
        "",
        "### `rollup_state`: how far each rollup table is maintained",
        "| column | type | meaning |",
        "| --- | --- | --- |",
        "| rollup | VARCHAR, key | rollup table, e.g. `gpu_samples_1m` |",
        "| done_until | TIMESTAMP | buckets before this are rolled up |",
        "| updated_at | TIMESTAMP | when the rollups task last moved it |",
    ]
    for spec in SPECS.values():
        names = [f"`{rollup_table(spec.table, t)}`" for t in TIERS]
        names += [f"`{live_view(spec.table, t)}`" for t in TIERS]
        out += [
            "",
            f"### {', '.join(names)}: rollups of `{spec.table}`",
            "| column | type | meaning |",
            "| --- | --- | --- |",
            "| bucket | TIMESTAMP | start of the minute or hour (UTC) |",
            f"| {', '.join(spec.keys)} | VARCHAR | the key, as in `{spec.table}` |",
            "| samples | BIGINT | raw rows in the bucket |",
            "| last_ts | TIMESTAMP | time of the newest raw row |",
        ]
        cols = rollup_columns(spec)[3 + len(spec.keys) :]
        groups: dict[tuple[str, str], list[str]] = {}
        for name, typ in cols:
            metric = next(
                c
                for c, _ in spec.metrics
                if name.startswith(c + "_") and name[len(c) + 1 :] in _MEANING
            )
            groups.setdefault((metric, typ), []).append(name)
        for (metric, typ), names_ in groups.items():
            what = "; ".join(
                f"{n[len(metric) + 1 :]}: {_MEANING[n[len(metric) + 1 :]]}" for n in names_
            )
            out.append(f"| {', '.join(names_)} | {typ} | {what} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(ddl(), end="")
