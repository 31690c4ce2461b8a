"""Sample tables stored as a dimension plus rows keyed by an integer (migration 0018).

Strings that repeat in every sample (a process's host, GPU, cgroup path; a
link's host, kind, port, GPU) cost DuckDB a dictionary index or an FSST string
per row, and more once a segment's dictionary no longer fits its 256 KB block
(10,000 GPUs' UUIDs do not). Such a table is stored as a dimension (one row per
distinct key, with an integer id handed out in order of first sight) and rows of
(ts, id, values); a view under the old name joins them back into the old
columns and types, so readers, rollups and exports see the table unchanged.

Collectors still hand the store batches for the old table. A write gives each
key not seen before the next id, then appends the rows by id, in (ts, id)
order, which DuckDB bit-packs to almost nothing. Both statements run in the
writer's transaction (on DuckLake, after the commit lock row), so ids are never
handed out twice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keyed:
    view: str  # the old table's name, now a view
    dim: str  # one row per key
    rows: str  # (ts, id, values)
    id_col: str
    key: tuple[str, ...]  # what makes two rows the same process / link
    not_null: frozenset[str]  # key columns that are never NULL (plain equality)
    values: tuple[str, ...]  # columns kept in the rows table besides ts and the id

    def _same(self, a: str, b: str) -> str:
        return " AND ".join(
            f"{a}.{c} = {b}.{c}" if c in self.not_null else f"{a}.{c} IS NOT DISTINCT FROM {b}.{c}"
            for c in self.key
        )

    def insert_sqls(self, cols: list[str], dedupe_keys: tuple[str, ...] | None = None) -> list[str]:
        """Statements that store a batch for `view` registered as `_batch` with columns
        `cols`; the last one's row count is the rows stored. `dedupe_keys` (DuckLake): a
        row whose key is already in `view` within the batch's time range, or twice in
        the batch, is a redelivery and stored once."""
        key = ", ".join(self.key)
        absent = [f"NULL AS {c}" for c in (*self.key, *self.values) if c not in cols]
        batch = f"(SELECT *{', ' if absent else ''}{', '.join(absent)} FROM _batch)"
        new_ids = (
            f"INSERT INTO {self.dim} ({key}, {self.id_col}) "
            f"SELECT {key}, (SELECT coalesce(max({self.id_col}), 0) FROM {self.dim})"
            f" + row_number() OVER (ORDER BY first_ts, {key}) "
            f"FROM (SELECT {key}, min(ts) AS first_ts FROM {batch} GROUP BY ALL) n "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.dim} d WHERE {self._same('d', 'n')})"
        )
        src, where = f"{batch} s", ""
        if dedupe_keys:
            part = ", ".join(dedupe_keys)
            on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in dedupe_keys)
            src = f"(SELECT * FROM {batch} QUALIFY row_number() OVER (PARTITION BY {part}) = 1) s"
            where = (
                f" WHERE NOT EXISTS (SELECT 1 FROM {self.view} t WHERE t.ts BETWEEN"
                " (SELECT min(ts) FROM _batch) AND (SELECT max(ts) FROM _batch)"
                f" AND {on})"
            )
        vals = ", ".join(f"s.{c}" for c in self.values)
        rows = (
            f"INSERT INTO {self.rows} (ts, {self.id_col}, {', '.join(self.values)}) "
            f"SELECT s.ts, d.{self.id_col}, {vals} FROM {src} "
            f"JOIN {self.dim} d ON {self._same('d', 's')}{where} ORDER BY s.ts, d.{self.id_col}"
        )
        return [new_ids, rows]

    def prune_sql(self) -> str:
        """Keys none of whose rows are left (retention deleted them) leave the dimension."""
        return (
            f"DELETE FROM {self.dim} WHERE {self.id_col} NOT IN "
            f"(SELECT DISTINCT {self.id_col} FROM {self.rows})"
        )


PROCESSES = Keyed(
    view="processes",
    dim="process_info",
    rows="process_listings",
    id_col="process_id",
    key=("host", "gpu_uuid", "slice_id", "pid", "container", "cgroup", "tenant_guess", "source"),
    not_null=frozenset({"host", "gpu_uuid", "pid"}),
    values=("used_mem_bytes",),
)

# Keyed tables by the name collectors write to.
KEYED: dict[str, Keyed] = {k.view: k for k in (PROCESSES,)}
# The view a base table stands behind (retention's rollup watermarks are the view's).
VIEW_OF: dict[str, str] = {t: k.view for k in KEYED.values() for t in (k.dim, k.rows)}
