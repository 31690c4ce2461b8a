"""Resolution routing: read the coarsest tier that still resolves the asked detail.

A chart of `buckets` points over `window_s` needs nothing finer than
`window_s / buckets`. Raw rows serve buckets under a minute (and recent, short
windows), the 1-minute tier buckets of a minute or more, the 1-hour tier
buckets of an hour or more. Rollups are read through the `<table>_<tier>_live`
views (storage/rollups.py), which add the buckets not rolled up yet from raw
rows, so a routed read is never missing the last minutes.

A 30-day chart of 120 points (6-hour buckets) therefore reads ~720 hourly rows
per GPU instead of 2.6 million raw ones.
"""

from __future__ import annotations

from storage.rollups import SPECS, TIERS, live_view

RAW = "raw"


def pick_tier(window_s: float, buckets: int = 1) -> str:
    """`raw`, `1m` or `1h`: the coarsest tier whose bucket fits in a chart bucket."""
    bucket_s = window_s / max(1, buckets)
    for tier in sorted(TIERS, key=lambda t: TIERS[t], reverse=True):
        if bucket_s >= TIERS[tier].total_seconds():
            return tier
    return RAW


def source_for(table: str, window_s: float, buckets: int = 1) -> tuple[str, str]:
    """(tier, relation to read) for a sample table and an asked window."""
    tier = pick_tier(window_s, buckets)
    if tier == RAW or table not in SPECS:
        return RAW, table
    return tier, live_view(table, tier)


def mean(col: str, tier: str) -> str:
    """SQL of the mean of gauge `col` over a group, at `tier` (raw: avg)."""
    if tier == RAW:
        return f"avg({col})"
    return f"(sum({col}_sum) / nullif(sum({col}_count), 0))::DOUBLE"


def time_col(tier: str) -> str:
    return "ts" if tier == RAW else "bucket"


def chart_bucket(col: str) -> str:
    """SQL of the chart bucket (0 .. $buckets - 1) of time `col` in the window of
    $window_s ending at $at, $bucket_s wide; a rollup bucket that straddles the
    window's start counts in the first."""
    return (
        f"greatest(least(floor(epoch({col} - ($at - to_seconds($window_s))) / $bucket_s), "
        "$buckets - 1), 0)::INT"
    )


def _watermark_sql(table: str, tier: str) -> str:
    return (
        "(SELECT coalesce(max(done_until), TIMESTAMP '1970-01-01') FROM rollup_state"
        f" WHERE rollup = '{table}_{tier}')"
    )


def sum_rows(table: str, tier: str, cols: tuple[str, ...]) -> str:
    """A relation of `bucket`, `table`'s keys and `<col>_sum` / `<col>_count` per
    col, at `tier`, for consumers that only add sums and counts (a weighted
    mean): the rolled-up tables below their watermarks, and the rows not rolled
    up yet as they are (raw rows one by one, `bucket` their time truncated to the
    tier), so a caller's join or filter applies before anything is aggregated.
    The tier's `_live` view instead re-aggregates the whole fleet's raw tail
    (with the 1-hour tier up to an hour of raw rows) before any filter."""
    keys = ", ".join(SPECS[table].keys)
    unit = {"1m": "minute", "1h": "hour"}[tier]
    sums = ", ".join(f"{c}_sum::DOUBLE AS {c}_sum, {c}_count" for c in cols)
    raw = ", ".join(f"{c}::DOUBLE AS {c}_sum, ({c} IS NOT NULL)::BIGINT AS {c}_count" for c in cols)
    wm = _watermark_sql(table, tier)
    parts = [f"SELECT bucket, {keys}, {sums} FROM {table}_{tier} WHERE bucket < {wm}"]
    raw_from = wm
    if tier == "1h":  # the minutes rolled up since the last hour
        wm_m = _watermark_sql(table, "1m")
        parts.append(
            f"SELECT date_trunc('hour', bucket) AS bucket, {keys}, {sums} FROM {table}_1m"
            f" WHERE bucket >= {wm} AND bucket < {wm_m}"
        )
        raw_from = f"greatest({wm}, {wm_m})"
    parts.append(
        f"SELECT date_trunc('{unit}', ts) AS bucket, {keys}, {raw} FROM {table}"
        f" WHERE ts >= {raw_from}"
    )
    return "(" + "\nUNION ALL\n".join(parts) + ")"
