"""Sample tables stored as a dimension plus rows keyed by an integer (migrations 0018, 0019).

Strings that repeat in every sample (a process's host, GPU, cgroup path; a
link's host, kind, port, GPU) cost DuckDB a dictionary index or an FSST string
per row, and more once a segment's dictionary no longer fits its 256 KB block
(10,000 GPUs' UUIDs do not). Such a table is stored as a dimension (one row per
distinct key, with an integer id handed out in order of first sight) and rows of
(ts, id, values); a view under the old name joins them back into the old
columns and types, so readers, rollups and exports see the table unchanged.

Collectors still hand the store batches for the old table. A write appends
the rows whose keys have ids, joined by key, in (ts, id) order, which DuckDB
bit-packs to almost nothing; only when some key was not there (a new process
or port) does it hand those keys the next ids and append their rows. All of it
runs in the writer's transaction (on DuckLake, after the commit lock row), so
ids are never handed out twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class Keyed:
    view: str  # the old table's name, now a view
    dim: str  # one row per key
    rows: str  # (ts, id, values)
    id_col: str
    key: tuple[str, ...]  # what makes two rows the same process / link
    not_null: frozenset[str]  # key columns that are never NULL (plain equality)
    values: tuple[str, ...]  # columns kept in the rows table besides ts and the id
    # batch columns that only `encode` reads (the view gives them back)
    decoded: tuple[str, ...] = ()
    # a rows-table column stored as an expression over the batch row `s` (default `s.col`)
    encode: tuple[tuple[str, str], ...] = ()
    # view columns given back from rows-table columns (`name`, SQL over them), for
    # readers of the rows table that skip the view (fleettui/alerts/shared.py)
    decode: tuple[tuple[str, str], ...] = ()

    @property
    def rows_read(self) -> str:
        """The rows table as such readers read it: `decode`'s columns added."""
        if not self.decode:
            return self.rows
        cols = ", ".join(f"{sql} AS {name}" for name, sql in self.decode)
        return f"(SELECT *, {cols} FROM {self.rows})"

    def _same(self, a: str, b: str) -> str:
        return " AND ".join(
            f"{a}.{c} = {b}.{c}" if c in self.not_null else f"{a}.{c} IS NOT DISTINCT FROM {b}.{c}"
            for c in self.key
        )

    def write(
        self,
        cur: duckdb.DuckDBPyConnection,
        cols: list[str],
        rows: int,
        dedupe_keys: tuple[str, ...] | None = None,
    ) -> int:
        """Store the batch for `view` registered as `_batch` (columns `cols`, `rows`
        rows) in the transaction open on `cur`; returns the rows stored. `dedupe_keys`
        (DuckLake): a row whose key is already in `view` within the batch's time range,
        or twice in the batch, is a redelivery and stored once."""
        if dedupe_keys:  # new keys first, then every row that is not a redelivery
            new_ids, stored = self.insert_sqls(cols, dedupe_keys)
            cur.execute(new_ids)
            return _count(cur.execute(stored))
        known = _count(cur.execute(self._rows_sql(cols)))
        if known == rows:  # the usual write: every key has its id already
            return known
        row = cur.execute(f"SELECT coalesce(max({self.id_col}), 0) FROM {self.dim}").fetchone()
        top = row[0] if row else 0
        cur.execute(self._new_ids_sql(cols))
        return known + _count(cur.execute(self._rows_sql(cols, after_id=int(top))))

    def insert_sqls(self, cols: list[str], dedupe_keys: tuple[str, ...] | None = None) -> list[str]:
        """The two statements of a write that hands out new ids first; the last one's
        row count is the rows stored (see `write`)."""
        return [self._new_ids_sql(cols), self._rows_sql(cols, dedupe_keys=dedupe_keys)]

    def _batch(self, cols: list[str]) -> str:
        enc = dict(self.encode)
        absent = [
            f"NULL AS {c}" for c in (*self.key, *self.values) if c not in cols and c not in enc
        ]
        absent += [f"NULL AS {c}" for c in self.decoded if c not in cols]
        return f"(SELECT *{', ' if absent else ''}{', '.join(absent)} FROM _batch)"

    def _new_ids_sql(self, cols: list[str]) -> str:
        """New keys get the next ids, and go into the dimension in id order: the window
        alone let a write of more than 2,048 new keys come out in chunks (ids 2049...
        first), which compressed worse (one more 128 KiB block of `process_info` at
        3,040 GPUs; benchmarks/README.md, "Store size")."""
        key = ", ".join(self.key)
        batch = self._batch(cols)
        return (
            f"INSERT INTO {self.dim} ({key}, {self.id_col}) "
            f"SELECT {key}, (SELECT coalesce(max({self.id_col}), 0) FROM {self.dim})"
            f" + row_number() OVER (ORDER BY first_ts, {key}) "
            f"FROM (SELECT {key}, min(ts) AS first_ts FROM {batch} GROUP BY ALL) n "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.dim} d WHERE {self._same('d', 'n')}) "
            f"ORDER BY first_ts, {key}"
        )

    def _rows_sql(
        self,
        cols: list[str],
        dedupe_keys: tuple[str, ...] | None = None,
        after_id: int | None = None,
    ) -> str:
        """Append the batch's rows whose keys have ids (only ids above `after_id`: the
        keys just added), in (ts, id) order."""
        batch = self._batch(cols)
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
        if after_id is not None:
            where = f" WHERE d.{self.id_col} > {int(after_id)}"
        enc = dict(self.encode)
        vals = ", ".join(enc.get(c, f"s.{c}") for c in self.values)
        return (
            f"INSERT INTO {self.rows} (ts, {self.id_col}, {', '.join(self.values)}) "
            f"SELECT s.ts, d.{self.id_col}, {vals} FROM {src} "
            f"JOIN {self.dim} d ON {self._same('d', 's')}{where} ORDER BY s.ts, d.{self.id_col}"
        )

    def rows_by_id_sql(self, cols: list[str], ordered: bool = False) -> str:
        """Append the batch's rows with the ids it carries (column `id_col`,
        storage/key_ids.py), in (ts, id) order: the rows `_rows_sql` appends, without
        the join. `ordered`: the batch is in that order already (DuckDB keeps it)."""
        enc = dict(self.encode)
        vals = ", ".join(enc.get(c, f"s.{c}") for c in self.values)
        order = "" if ordered else f" ORDER BY s.ts, s.{self.id_col}"
        return (
            f"INSERT INTO {self.rows} (ts, {self.id_col}, {', '.join(self.values)}) "
            f"SELECT s.ts, s.{self.id_col}, {vals} FROM {self._batch(cols)} s{order}"
        )

    def prune_sql(self) -> str:
        """Keys none of whose rows are left (retention deleted them) leave the dimension."""
        return (
            f"DELETE FROM {self.dim} WHERE {self.id_col} NOT IN "
            f"(SELECT DISTINCT {self.id_col} FROM {self.rows})"
        )


def _count(res: duckdb.DuckDBPyConnection) -> int:
    row = res.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


PROCESSES = Keyed(
    view="processes",
    dim="process_info",
    rows="process_listings",
    id_col="process_id",
    key=("host", "gpu_uuid", "slice_id", "pid", "container", "cgroup", "tenant_guess", "source"),
    not_null=frozenset({"host", "gpu_uuid", "pid"}),
    values=("used_mem_bytes",),
)

# kind first: ids handed out together follow it, so each write's rows stay grouped by
# kind (rates of one kind in a narrower range, one line rate per kind: ALP and RLE)
LINKS = Keyed(
    view="link_samples",
    dim="link_info",
    rows="link_values",
    id_col="link_id",
    key=("kind", "host", "port", "gpu_uuid", "source"),
    not_null=frozenset({"kind", "host", "port"}),
    values=("tx_bytes_per_s", "rx_bytes_per_s", "line_rate_bytes_per_s", "errors", "link_up"),
)

# Energy counters (NVML and DCGM count whole mJ) are stored as integer mJ, which DuckDB
# bit-packs in fewer bits than ALP takes for the same numbers as DOUBLE joules (5.0 vs
# 6.3 MB in one 10-minute 3,040-GPU store). Only where that is exact: the view's
# `energy_mj::DOUBLE / 1000` must give back the very double written (finite, not -0.0,
# below 2^53 mJ); any other value goes to `energy_j_raw` as it came.
_EXACT_MJ = (
    "isfinite(s.energy_j) AND NOT signbit(s.energy_j) AND s.energy_j < 9e12"
    " AND round(s.energy_j * 1000) / 1000 = s.energy_j"
)


# the bits a whole MiB in 0 .. 2^51 leaves zero (below 2^20, from 2^51, the sign): one
# AND instead of a modulo and two comparisons (4 columns of 10,032 rows: ~9 -> ~2 ms)
_NOT_MIB = ~(((1 << 51) - 1) ^ ((1 << 20) - 1))


def _mib(col: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """A framebuffer byte count as whole MiB (INTEGER) where it is one, else as it came
    (`*_raw`): DCGM reports MiB, and bit-packing keeps the 20 zero bits (migration 0021)."""
    exact = f"(s.{col} & {_NOT_MIB}) = 0"
    return (
        (
            col.removesuffix("_bytes") + "_mib",
            f"CASE WHEN {exact} THEN (s.{col} >> 20)::INTEGER END",
        ),
        (f"{col}_raw", f"CASE WHEN NOT coalesce({exact}, false) THEN s.{col} END"),
    )


_MEM = (*_mib("mem_used_bytes"), *_mib("mem_total_bytes"))
_MEM_COLS = ("mem_used_bytes_raw", "mem_used_mib", "mem_total_bytes_raw", "mem_total_mib")
_MEM_DECODE = tuple(
    (f"{m}_bytes", f"coalesce({m}_bytes_raw, {m}_mib::BIGINT * 1048576)")
    for m in ("mem_used", "mem_total")
)

# One series per GPU and source: the UUID strings cost more than the values at 10,000
# GPUs, where their dictionary no longer fits a segment (benchmarks/README.md)
GPUS = Keyed(
    view="gpu_samples",
    dim="gpu_series",
    rows="gpu_values",
    id_col="series_id",
    key=("host", "gpu_uuid", "source"),
    not_null=frozenset({"host", "gpu_uuid"}),
    values=(
        "util_pct",
        "mem_util_pct",
        *_MEM_COLS,
        "power_w",
        "energy_mj",
        "energy_j_raw",
        "temp_c",
        "mem_temp_c",
        "sm_clock_mhz",
        "mem_clock_mhz",
        "pcie_tx_bytes_per_s",
        "pcie_rx_bytes_per_s",
        "ecc_sbe_total",
        "ecc_dbe_total",
        "throttle_reasons",
    ),
    encode=(
        ("energy_mj", f"CASE WHEN {_EXACT_MJ} THEN round(s.energy_j * 1000)::BIGINT END"),
        ("energy_j_raw", f"CASE WHEN NOT coalesce({_EXACT_MJ}, false) THEN s.energy_j END"),
        *_MEM,
    ),
    decoded=("energy_j", "mem_used_bytes", "mem_total_bytes"),
    decode=_MEM_DECODE,
)

# One series per slice and source (0019): at 100,000 GPUs the slice ids and their GPUs'
# UUIDs overflow the per-segment dictionary as GPU UUIDs did at 10,000
SLICES = Keyed(
    view="slice_samples",
    dim="slice_series",
    rows="slice_values",
    id_col="slice_series_id",
    key=("slice_id", "gpu_uuid", "source"),
    not_null=frozenset({"slice_id"}),
    values=("util_pct", *_MEM_COLS),
    encode=_MEM,
    decoded=("mem_used_bytes", "mem_total_bytes"),
    decode=_MEM_DECODE,
)

# Keyed tables by the name collectors write to.
KEYED: dict[str, Keyed] = {k.view: k for k in (PROCESSES, LINKS, GPUS, SLICES)}
# The view a base table stands behind (retention's rollup watermarks are the view's).
VIEW_OF: dict[str, str] = {t: k.view for k in KEYED.values() for t in (k.dim, k.rows)}
