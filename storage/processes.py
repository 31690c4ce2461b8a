"""Process listings into the dimension tables of migration 0018 (issue 13).

Collectors still hand the store `processes` batches with every column. A write
gives each process not seen before the next integer id in `process_info` (one
row per process: host, GPU, pid, cgroup, ...) and appends the listing as
(ts, process_id, used_mem_bytes) to `process_listings`; the `processes` view
joins the two back into the old rows. Both statements run in the writer's
transaction (on DuckLake, after the commit lock row), so ids are never handed
out twice.
"""

from __future__ import annotations

TABLE = "processes"

# What makes two listed rows the same process.
IDENTITY = ("host", "gpu_uuid", "slice_id", "pid", "container", "cgroup", "tenant_guess", "source")
_NOT_NULL = frozenset({"host", "gpu_uuid", "pid"})


def _same(a: str, b: str) -> str:
    return " AND ".join(
        f"{a}.{c} = {b}.{c}" if c in _NOT_NULL else f"{a}.{c} IS NOT DISTINCT FROM {b}.{c}"
        for c in IDENTITY
    )


def _batch(cols: list[str]) -> str:
    """The batch with every identity column (absent ones NULL), as `_b`."""
    missing = [f"NULL::VARCHAR AS {c}" for c in IDENTITY if c not in cols]
    extra = (", " + ", ".join(missing)) if missing else ""
    mem = "" if "used_mem_bytes" in cols else ", NULL::BIGINT AS used_mem_bytes"
    return f"(SELECT *{extra}{mem} FROM _batch)"


def insert_sqls(cols: list[str], dedupe_keys: tuple[str, ...] | None = None) -> list[str]:
    """Statements that store a `processes` batch registered as `_batch` with columns
    `cols`; the last one's row count is the listings stored. `dedupe_keys` (DuckLake):
    a row whose key is already in `processes` within the batch's time range, or twice
    in the batch, is a redelivery and stored once."""
    ident = ", ".join(IDENTITY)
    batch = _batch(cols)
    new_ids = (
        f"INSERT INTO process_info ({ident}, process_id) "
        f"SELECT {ident}, (SELECT coalesce(max(process_id), 0) FROM process_info)"
        f" + row_number() OVER (ORDER BY first_ts, {ident}) "
        f"FROM (SELECT {ident}, min(ts) AS first_ts FROM {batch} GROUP BY ALL) n "
        f"WHERE NOT EXISTS (SELECT 1 FROM process_info i WHERE {_same('i', 'n')})"
    )
    rows = f"{batch} s"
    where = ""
    if dedupe_keys:
        part = ", ".join(dedupe_keys)
        on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in dedupe_keys)
        rows = f"(SELECT * FROM {batch} QUALIFY row_number() OVER (PARTITION BY {part}) = 1) s"
        where = (
            f" WHERE NOT EXISTS (SELECT 1 FROM {TABLE} t WHERE t.ts BETWEEN"
            " (SELECT min(ts) FROM _batch) AND (SELECT max(ts) FROM _batch)"
            f" AND {on})"
        )
    # one listing's rows in id order: DuckDB bit-packs the ids as small deltas
    listings = (
        "INSERT INTO process_listings (ts, process_id, used_mem_bytes) "
        f"SELECT s.ts, i.process_id, s.used_mem_bytes FROM {rows} "
        f"JOIN process_info i ON {_same('i', 's')}{where} ORDER BY s.ts, i.process_id"
    )
    return [new_ids, listings]


# Processes none of whose listings are left (retention deleted them) leave the dimension.
PRUNE_SQL = (
    "DELETE FROM process_info WHERE process_id NOT IN "
    "(SELECT DISTINCT process_id FROM process_listings)"
)
