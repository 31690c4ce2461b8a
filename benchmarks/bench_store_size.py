"""Store size: file bytes per stored numeric value, each saving measured in one run.

Fills a store file with the simulated fleet at 1 s (one write per tick, as the
daemon's sim source does), closes it (a final checkpoint), and divides the
file's bytes by the non-NULL numeric values (numbers and booleans) in the
`*_samples` tables: timestamps, keys and every other table (processes, events,
dimensions) are overhead charged to them, as Prometheus' bytes per sample
charge its index. Prometheus' TSDB stores 1-2 bytes per sample on typical data.

Steps, each a fresh file with the same fleet and seconds, cumulative:

1. before: the sim's values with every bit of model noise, rows as the sim
   emits them, DuckDB's default checkpoint threshold (16 MB of WAL);
2. values at the real sources' precision (integer %, degrees, MHz; mW, mJ;
   integer bytes/s; framebuffer in whole MiB and slice activity to 6 decimals of
   the ratio, as DCGM and dcgm-exporter report them);
3. link rows grouped by kind within each write (`storage.columns.COMPRESSION_ORDER`);
4. the store's checkpoint threshold (`storage.store.checkpoint_threshold`);
5. processes as a dimension (migration 0018: `process_info` once per process,
   `process_listings` of (ts, process_id, used_mem_bytes));
6. links as a dimension (0018: `link_info` once per port, `link_values` of
   (ts, link_id, values));
7. GPU samples as a dimension (0019: `gpu_series` once per GPU and source,
   `gpu_values` of (ts, series_id, values)), energy as DOUBLE joules;
8. slices as a dimension (0019: `slice_series`, `slice_values`);
9. energy as whole mJ (BIGINT) where that is exact (0019, `storage.keyed.GPUS`);
10. the file in DuckDB 1.5's own format (`storage.store.STORAGE_VERSION`; the steps
   before use DuckDB's default, v0.10.2's);
11. 128 KiB blocks (`storage.store.BLOCK_SIZE_BYTES`; the steps before use DuckDB's
   default, 256 KiB);
12. framebuffer bytes as whole MiB where they are (0021: `mem_used_mib`,
   `mem_total_mib`; the steps before keep every byte count in `*_bytes_raw`);
13. no PRIMARY KEY on the four dimensions whose ids the writer hands out (0021; the
   steps before add it back);
14. no PRIMARY KEY on the tables the writer merges on their key (0025: `hosts`,
   `gpus`, `slices`, `tenants`, `endpoints`, `host_status`, `rollup_state`,
   `schema_version`; the steps before add it back);
15. GPU UUIDs, cgroup paths and container ids stored with ZSTD in `gpus`, `gpu_series`,
   `link_info` and `process_info` (0026; the steps before store them as DuckDB
   chooses) = today's store;
16. (`--float`) FLOAT instead of DOUBLE for percentages, degrees and MHz, as the
   unmerged branch `issue13` did, to show what narrower types add on top.

Sizes are deterministic for a given fleet and duration (no timing in them);
the fill time is not, and is printed only as a guide.

    .venv/bin/python benchmarks/bench_store_size.py [--scale 10] [--seconds 120] [--float]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import storage.batch  # noqa: E402
import storage.store  # noqa: E402
from collectors.sim.source import SimSource  # noqa: E402
from fleettui.tui.demo import FIXED_START  # noqa: E402
from storage.keyed import KEYED  # noqa: E402
from storage.migrate import migrations  # noqa: E402
from storage.store import Store  # noqa: E402

_NUMERIC = (
    "DOUBLE",
    "FLOAT",
    "BIGINT",
    "INTEGER",
    "SMALLINT",
    "TINYINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "BOOLEAN",
    "HUGEINT",
)
# issue13's 0014: FLOAT for percentages, degrees and MHz
_FLOAT = [
    ("gpu_samples", c)
    for c in ("util_pct", "mem_util_pct", "temp_c", "mem_temp_c", "sm_clock_mhz", "mem_clock_mhz")
] + [("slice_samples", "util_pct")]


def sample_tables(con) -> list[str]:
    """`*_samples` tables, or the views that stand for them (storage/keyed.py)."""
    return [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '%\\_samples' ESCAPE '\\'"
            " UNION SELECT view_name FROM duckdb_views() WHERE NOT internal"
            " AND view_name LIKE '%\\_samples' ESCAPE '\\' ORDER BY 1"
        ).fetchall()
    ]


def numeric_values(con) -> tuple[int, dict[str, int]]:
    """Non-NULL numeric values in every *_samples table (ts and text keys excluded)."""
    per_table = {}
    for t in sample_tables(con):
        cols = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND data_type IN "
                f"({', '.join('?' * len(_NUMERIC))})",
                [t, *_NUMERIC],
            ).fetchall()
        ]
        if cols:
            n = con.execute(f"SELECT {' + '.join(f'count({c})' for c in cols)} FROM {t}").fetchone()
            per_table[t] = int(n[0] or 0)
    return sum(per_table.values()), per_table


def column_bytes(con) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], set[str]]]:
    """Bytes per (table, column), from where `pragma_storage_info` puts each segment:
    a segment runs to the next one in its block (or the block's end: an upper bound)."""
    tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
            " AND schema_name = 'main'"
        ).fetchall()
    ]
    block_bytes = con.execute(
        "SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
    ).fetchone()[0]
    by_block = defaultdict(list)
    for t in tables:
        for col, block, offset, comp in con.execute(
            "SELECT column_name, block_id, block_offset, compression"
            f" FROM pragma_storage_info('{t}') WHERE persistent AND block_id >= 0"
        ).fetchall():
            by_block[block].append((offset, t, col, comp))
    size: dict[tuple[str, str], int] = defaultdict(int)
    comps: dict[tuple[str, str], set[str]] = defaultdict(set)
    for segs in by_block.values():
        segs.sort()
        for i, (offset, t, col, comp) in enumerate(segs):
            end = segs[i + 1][0] if i + 1 < len(segs) else block_bytes
            size[(t, col)] += end - offset
            comps[(t, col)].add(comp)
    return size, comps


# byte counts before migration 0021: every one in `*_bytes` as it came (later entries win)
_RAW_MEM = tuple(
    (c, e)
    for m in ("mem_used", "mem_total")
    for c, e in ((f"{m}_mib", "NULL::INTEGER"), (f"{m}_bytes_raw", f"s.{m}_bytes"))
)

# the dimensions' keys before migration 0021
_DIM_KEYS = (
    ("process_info", "process_id"),
    ("link_info", "link_id"),
    ("gpu_series", "series_id"),
    ("slice_series", "slice_series_id"),
)

# the merged tables' keys before migration 0025
_MERGE_KEYS = (
    ("hosts", "host"),
    ("gpus", "gpu_uuid"),
    ("slices", "slice_id"),
    ("tenants", "tenant"),
    ("endpoints", "endpoint"),
    ("host_status", "host"),
    ("rollup_state", "rollup"),
    ("schema_version", "version"),
)

# migration 0026 without its ZSTD columns: the tables as DuckDB compresses them by itself
_NO_ZSTD = next(sql for v, _, sql in migrations() if v == 26).replace(" USING COMPRESSION zstd", "")

# the `processes` table before migration 0018, every column in every listing
_PROCESSES_TABLE = (
    "DROP VIEW processes; DROP TABLE process_listings; DROP TABLE process_info; "
    "CREATE TABLE processes (ts TIMESTAMP NOT NULL, host VARCHAR NOT NULL, "
    "gpu_uuid VARCHAR NOT NULL, slice_id VARCHAR, pid BIGINT NOT NULL, used_mem_bytes BIGINT, "
    "container VARCHAR, cgroup VARCHAR, tenant_guess VARCHAR, source VARCHAR)"
)
# `link_samples` before migration 0018 (0005's table)
_LINK_TABLE = (
    "DROP VIEW link_samples; DROP TABLE link_values; DROP TABLE link_info; "
    "CREATE TABLE link_samples (ts TIMESTAMP NOT NULL, host VARCHAR NOT NULL, "
    "kind VARCHAR NOT NULL, port VARCHAR NOT NULL, gpu_uuid VARCHAR, tx_bytes_per_s DOUBLE, "
    "rx_bytes_per_s DOUBLE, line_rate_bytes_per_s DOUBLE, errors BIGINT, link_up BOOLEAN, "
    "source VARCHAR)"
)
# `gpu_samples` before migration 0019 (0001's table)
_GPU_TABLE = (
    "DROP VIEW gpu_samples; DROP TABLE gpu_values; DROP TABLE gpu_series; "
    "CREATE TABLE gpu_samples (ts TIMESTAMP NOT NULL, host VARCHAR NOT NULL, "
    "gpu_uuid VARCHAR NOT NULL, util_pct DOUBLE, mem_util_pct DOUBLE, mem_used_bytes BIGINT, "
    "mem_total_bytes BIGINT, power_w DOUBLE, energy_j DOUBLE, temp_c DOUBLE, mem_temp_c DOUBLE, "
    "sm_clock_mhz DOUBLE, mem_clock_mhz DOUBLE, pcie_tx_bytes_per_s DOUBLE, "
    "pcie_rx_bytes_per_s DOUBLE, ecc_sbe_total BIGINT, ecc_dbe_total BIGINT, "
    "throttle_reasons BIGINT, source VARCHAR)"
)
# `slice_samples` before migration 0019 (0001's table)
_SLICE_TABLE = (
    "DROP VIEW slice_samples; DROP TABLE slice_values; DROP TABLE slice_series; "
    "CREATE TABLE slice_samples (ts TIMESTAMP NOT NULL, slice_id VARCHAR NOT NULL, "
    "gpu_uuid VARCHAR, util_pct DOUBLE, mem_used_bytes BIGINT, mem_total_bytes BIGINT, "
    "source VARCHAR)"
)


class _StoreWithoutLive(Store):
    live_snapshot = False  # it reads the keyed tables, which the early steps take away


def fill(
    args,
    *,
    precise: bool,
    grouped: bool,
    threshold: bool,
    proc_dim: bool,
    link_dim: bool,
    gpu_dim: bool,
    slice_dim: bool,
    energy_mj: bool,
    new_format: bool,
    small_blocks: bool,
    mem_mib: bool,
    no_dim_keys: bool,
    no_merge_keys: bool,
    zstd_ids: bool,
    floats: bool,
    detail: bool,
):
    saved = (
        storage.batch.COMPRESSION_ORDER,
        dict(KEYED),
        storage.store.STORAGE_VERSION,
        storage.store.BLOCK_SIZE_BYTES,
    )
    if not new_format:
        storage.store.STORAGE_VERSION = "v0.10.2"  # DuckDB's default
    if not small_blocks:
        storage.store.BLOCK_SIZE_BYTES = 256 << 10  # DuckDB's default
    raw_mem = () if mem_mib else _RAW_MEM  # every byte count as it came
    if not energy_mj and gpu_dim:  # every energy value as it came
        KEYED["gpu_samples"] = dataclasses.replace(
            KEYED["gpu_samples"],
            encode=(
                *KEYED["gpu_samples"].encode,
                ("energy_mj", "NULL::BIGINT"),
                ("energy_j_raw", "s.energy_j"),
                *raw_mem,
            ),
        )
    elif gpu_dim and raw_mem:
        KEYED["gpu_samples"] = dataclasses.replace(
            KEYED["gpu_samples"], encode=(*KEYED["gpu_samples"].encode, *raw_mem)
        )
    if slice_dim and raw_mem:
        KEYED["slice_samples"] = dataclasses.replace(KEYED["slice_samples"], encode=raw_mem)
    if not grouped:
        storage.batch.COMPRESSION_ORDER = {}
    if not proc_dim:
        del KEYED["processes"]  # the store inserts `processes` batches as they are
    if not link_dim:
        del KEYED["link_samples"]
    if not gpu_dim:
        del KEYED["gpu_samples"]
    if not slice_dim:
        del KEYED["slice_samples"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "size.duckdb"
            keyed = proc_dim and link_dim and gpu_dim and slice_dim
            store = (Store if keyed else _StoreWithoutLive).open(path)
            if not zstd_ids:  # before the steps below drop or re-create these tables
                store.con.execute(_NO_ZSTD)
            if not threshold:
                store.con.execute("SET checkpoint_threshold = '16MB'")
            if not proc_dim:
                store.con.execute(_PROCESSES_TABLE)
            if not link_dim:
                store.con.execute(_LINK_TABLE)
            if not gpu_dim:
                store.con.execute(_GPU_TABLE)
            if not slice_dim:
                store.con.execute(_SLICE_TABLE)
            dims = {"process_info": proc_dim, "link_info": link_dim}
            dims |= {"gpu_series": gpu_dim, "slice_series": slice_dim}
            for table, key in _DIM_KEYS if not no_dim_keys else ():
                if dims[table]:  # the table exists (empty): its key as before 0021
                    store.con.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")
            for table, key in _MERGE_KEYS if not no_merge_keys else ():
                store.con.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")
            for t, c in _FLOAT if floats else []:
                t = "gpu_values" if gpu_dim and t == "gpu_samples" else t
                t = "slice_values" if slice_dim and t == "slice_samples" else t
                store.con.execute(f"ALTER TABLE {t} ALTER COLUMN {c} TYPE FLOAT")
            source = SimSource(scale=args.scale, start=FIXED_START)
            source.ensure_model(FIXED_START).source_precision = precise
            t0 = time.perf_counter()
            store.write(source.describe(FIXED_START))  # sample() skips it: the model exists
            for k in range(int(args.seconds)):
                store.write(source.sample(FIXED_START + timedelta(seconds=k)).batches)
            fill_s = time.perf_counter() - t0
            store.checkpoint()
            con = store.con
            gpus = con.execute("SELECT count(*) FROM gpus").fetchone()[0]
            values, per_table = numeric_values(con)
            cols = column_bytes(con) if detail else None
            store.close()
            size = path.stat().st_size
    finally:
        storage.batch.COMPRESSION_ORDER = saved[0]
        KEYED.clear()
        KEYED.update(saved[1])
        storage.store.STORAGE_VERSION = saved[2]
        storage.store.BLOCK_SIZE_BYTES = saved[3]
    return gpus, size, values, per_table, fill_s, cols


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--float", action="store_true", help="also measure FLOAT columns on top")
    ap.add_argument("--top", type=int, default=15, help="columns listed for the last step")
    ap.add_argument("--after-only", action="store_true", help="only today's store (the ladder)")
    args = ap.parse_args()
    # label, then: precise, grouped, threshold, proc_dim, link_dim, gpu_dim, slice_dim,
    # energy_mj, new_format, small_blocks, mem_mib, no_dim_keys, no_merge_keys, zstd_ids, floats
    steps = [
        (
            "before: full-precision values, sim order, 16 MB checkpoints",
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ),
        ("+ values at the sources' precision", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        ("+ link rows grouped by kind per write", 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        ("+ store's checkpoint threshold", 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        ("+ processes as a dimension (0018)", 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        ("+ links as a dimension (0018)", 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
        ("+ GPU samples as a dimension (0019)", 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0),
        ("+ slices as a dimension (0019)", 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0),
        ("+ energy as whole mJ where exact (0019)", 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),
        ("+ DuckDB 1.5's file format", 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0),
        ("+ 128 KiB blocks", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0),
        ("+ framebuffer bytes in whole MiB (0021)", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0),
        (
            "+ no key index on 4 dimensions (0021)",
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            0,
        ),
    ]
    # the steps above keep the merged tables' keys (before 0025): no_merge_keys 0
    steps = [(*step[:-1], 0, step[-1]) for step in steps]
    steps.append(("+ no key index on 8 merged tables (0025)", *(1,) * 13, 0))
    # the steps above store UUIDs as DuckDB chooses (before 0026): zstd_ids 0
    steps = [(*step[:-1], 0, step[-1]) for step in steps]
    steps.append(("+ ZSTD UUIDs, cgroups, containers (0026) = today's store", *(1,) * 14, 0))
    if args.after_only:
        steps = steps[-1:]
    elif args.float:
        steps.append(
            (
                "+ FLOAT for %, degrees, MHz (issue13's 0014)",
                *(1,) * 15,
            )
        )
    print(f"sim --scale {args.scale}, {args.seconds:.0f} s at 1 s, one write per tick")
    print(f"{'step':<58}{'file MB':>9}{'bytes/value':>13}{'GB/hour':>9}{'fill s':>8}")
    last = None
    for i, step in enumerate(steps):
        label, precise, grouped, threshold, proc_dim, link_dim, gpu_dim, slice_dim = step[:8]
        mj, fmt, blocks, mib, no_keys, no_merge_keys, zstd_ids, floats = step[8:16]
        detail = i == len(steps) - 1
        gpus, size, values, per_table, fill_s, cols = fill(
            args,
            precise=bool(precise),
            grouped=bool(grouped),
            threshold=bool(threshold),
            proc_dim=bool(proc_dim),
            link_dim=bool(link_dim),
            gpu_dim=bool(gpu_dim),
            slice_dim=bool(slice_dim),
            energy_mj=bool(mj),
            new_format=bool(fmt),
            small_blocks=bool(blocks),
            mem_mib=bool(mib),
            no_dim_keys=bool(no_keys),
            no_merge_keys=bool(no_merge_keys),
            zstd_ids=bool(zstd_ids),
            floats=bool(floats),
            detail=detail,
        )
        per_hour = size * 3600.0 / args.seconds
        print(
            f"{label:<58}{size / 1e6:>9.1f}{size / values:>13.2f}{per_hour / 1e9:>9.2f}"
            f"{fill_s:>8.1f}",
            flush=True,
        )
        last = (gpus, values, per_table, cols, size)
    gpus, values, per_table, cols, size = last
    print(f"\n{gpus:,} GPUs; {values:,} numeric values in *_samples:")
    for t, n in per_table.items():
        print(f"  {t:<18}{n:>14,} values")
    if cols:
        sizes, comps = cols
        by_table: dict[str, int] = defaultdict(int)
        for (t, _c), b in sizes.items():
            by_table[t] += b
        print(
            f"\nlast step, bytes by table (segment extents, {sum(by_table.values()) / 1e6:.1f} "
            f"of {size / 1e6:.1f} MB; the rest is metadata and free blocks):"
        )
        for t, b in sorted(by_table.items(), key=lambda kv: -kv[1])[:8]:
            print(f"  {t:<18}{b / 1e6:>8.2f} MB  {b / values:>5.2f} bytes/value")
        print(f"\nlast step, the {args.top} largest columns:")
        for (t, c), b in sorted(sizes.items(), key=lambda kv: -kv[1])[: args.top]:
            comp = ",".join(sorted(comps[(t, c)]))
            print(f"  {t + '.' + c:<40}{b / 1e6:>8.2f} MB  {b / values:>5.2f} bytes/value  {comp}")


if __name__ == "__main__":
    main()
