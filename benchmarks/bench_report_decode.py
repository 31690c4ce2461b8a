"""CPU per report of the MQTT source's own work, without a broker: decode, batch, write.

The payloads are the ones `bench_mqtt_ingest.py` publishes (HGX H100 hosts, 8 GPUs,
18 NVLinks per GPU, v1 JSON). Every figure is CPU time of this process
(`time.process_time`, DuckDB's threads included), so it moves less than wall time
on a shared machine; each is the median over `--repeats`. One run measures:

- decode options on the same payloads: the Python reference decoder
  (`decode_checked`), the msgspec fast path (`decode`), plain `json.loads` and
  `msgspec.json.decode` without any checks (floors), and DuckDB's
  `json_transform_strict` over the whole batch of payloads (the "hand raw payloads
  to DuckDB" option, parse only);
- version 2 frames (collectors/nvml/report_v2.py) of the same reports: `parse` per
  message plus `FrameColumns` (checks and columns) per flush of `--flush` frames;
- the pipeline per report: `MqttSource.handle` (decode, dedupe, batcher),
  `take_batches` (rows -> Arrow batches) and `Store.write` (one transaction per
  flush of `--flush` reports), for `per_link` and `per_gpu` NVLink rows, v1 and v2.

    python benchmarks/bench_report_decode.py [--hosts 1250] [--repeats 5] [--flush 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402
import msgspec  # noqa: E402
import pyarrow as pa  # noqa: E402

from benchmarks.bench_mqtt_ingest import payload, templates  # noqa: E402
from collectors.mqtt_source import MqttOptions, MqttSource  # noqa: E402
from collectors.nvml import report  # noqa: E402
from collectors.nvml.report_v2 import FrameColumns, parse  # noqa: E402
from storage.store import Store  # noqa: E402


def payloads(tpl: list, rep: int, now: float, version: int = 1) -> list[tuple[str, bytes]]:
    return [(f"fleettui/{t[0]}/report", payload(t, version, rep, now)) for t in tpl]


def per_report_us(fn, items: list, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn(items)
        runs.append((time.process_time() - t0) / len(items) * 1e6)
    return statistics.median(runs)


def duckdb_batch(con: duckdb.DuckDBPyConnection, structure: str):
    def run(items: list) -> None:
        con.register("raw", pa.table({"p": [p.decode() for _, p in items]}))
        con.execute(f"SELECT json_transform_strict(p, '{structure}') FROM raw").arrow()
        con.unregister("raw")

    return run


def duck_type(kind: int) -> str:
    base = {report.NUM: "DOUBLE", report.INT: "BIGINT", report.BOOL: "BOOLEAN"}
    if kind == report.STR:
        return "VARCHAR[]"
    if kind in (report.LINKS_NUM, report.LINKS_INT, report.LINKS_BOOL):
        inner = {report.LINKS_NUM: "DOUBLE", report.LINKS_INT: "BIGINT"}.get(kind, "BOOLEAN")
        return f"{inner}[][]"
    return f"{base[kind]}[]"


def pipeline(
    tpl: list, now: float, nvlink_rows: str, flush: int, repeats: int, version: int = 1
) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    store = Store.open(work / "bench.duckdb")
    src = MqttSource(
        MqttOptions(nvlink_rows=nvlink_rows, max_new_hosts_per_min=0), clock=lambda: now
    )
    cpu = {"handle": [], "take": [], "write": []}
    try:
        for rep in range(repeats + 1):  # the first round creates hosts and windows: not timed
            items = payloads(tpl, rep, now, version)
            t = dict.fromkeys(cpu, 0.0)
            for i in range(0, len(items), flush):
                c0 = time.process_time()
                for topic, p in items[i : i + flush]:
                    src.handle(topic, p)
                c1 = time.process_time()
                batches, _, _ = src.take_batches()
                c2 = time.process_time()
                store.write(batches)
                c3 = time.process_time()
                t["handle"] += c1 - c0
                t["take"] += c2 - c1
                t["write"] += c3 - c2
            if rep:
                for k in cpu:
                    cpu[k].append(t[k] / len(items) * 1e6)
        if src.stats.rejected:
            raise SystemExit(f"{src.stats.rejected} reports rejected: the benchmark is broken")
    finally:
        store.close()
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
    return {k: statistics.median(v) for k, v in cpu.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1250, help="8-GPU hosts, one report each")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--flush", type=int, default=300, help="reports per store write")
    args = ap.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
        f"CPU time per report, median of {args.repeats}"
    )
    tpl = templates(args.hosts, 18)
    now = time.time()
    items = payloads(tpl, 0, now)
    print(f"{len(items):,} reports of {statistics.mean(len(p) for _, p in items):,.0f} bytes")

    def each(fn):
        return lambda items: [fn(p) for _, p in items]

    options = {
        "json.loads, no checks (floor)": each(json.loads),
        "msgspec.json.decode, no checks (floor)": each(msgspec.json.decode),
    }
    checked = getattr(report, "decode_checked", None)
    if checked is not None:  # the tree has the fast path: compare both decoders
        options["decode_checked (Python, value by value)"] = each(lambda p: checked(p, now=now))
        options["decode (msgspec structs, checked in C)"] = each(
            lambda p: report.decode(p, now=now)
        )
    else:
        options["decode (Python, value by value)"] = each(lambda p: report.decode(p, now=now))
    gpu = {k: duck_type(kind) for k, (kind, _, _) in report.GPU_SPEC.items()}
    structure = json.dumps(
        {"v": "INTEGER", "host": "VARCHAR", "boot": "VARCHAR", "seq": "BIGINT", "ts": "DOUBLE"}
        | {"gpu": gpu}
    )
    con = duckdb.connect()
    options["DuckDB json_transform_strict, batch, parse only"] = duckdb_batch(con, structure)
    frames = payloads(tpl, 0, now, 2)

    def v2(items: list) -> None:
        for i in range(0, len(items), args.flush):
            cols = FrameColumns([parse(p, now=now) for _, p in items[i : i + args.flush]])
            if cols.problems(True):
                raise SystemExit("v2 frames refused: the benchmark is broken")
            cols.batches(True, "nvml")

    print("decode options (µs CPU per report):")
    for name, fn in options.items():
        print(f"  {name:<50} {per_report_us(fn, items, args.repeats):8.1f}")
    print(
        f"  {'v2 frames: parse + checks + columns (per_gpu)':<50} "
        f"{per_report_us(v2, frames, args.repeats):8.1f}"
        f"   ({statistics.mean(len(p) for _, p in frames):,.0f} bytes per frame)"
    )
    for version in (1, 2):
        for mode in ("per_gpu", "per_link"):
            r = pipeline(tpl, now, mode, args.flush, args.repeats, version)
            total = sum(r.values())
            print(
                f"pipeline v{version} {mode:<8}: handle {r['handle']:6.1f} + take "
                f"{r['take']:6.1f} + write {r['write']:6.1f} = {total:6.1f} µs CPU per report "
                f"({1e6 / total:,.0f} reports/s per core)"
            )


if __name__ == "__main__":
    main()
