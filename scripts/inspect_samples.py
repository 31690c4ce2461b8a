"""Print what the collectors make of every real sample in fixtures/upstream.

    python scripts/inspect_samples.py [path/to/fixtures/upstream]

Per file (and per scrape, where a file holds two): GPUs, MIG slices, tenants,
series found, series used, and series dropped with why.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collectors.dcgm_map import DcgmMapper  # noqa: E402
from collectors.latency import LatencyMapper, is_latency_bucket  # noqa: E402
from collectors.promtext.parse import parse_exposition  # noqa: E402
from collectors.promtext.series import from_prometheus_result, merge  # noqa: E402
from tests.upstream_samples import scrapes_in, upstream_dir  # noqa: E402

NOW = 1_773_114_090.0


def table_rows(result) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for b in result.batches:
        out.setdefault(b.table, []).extend(b.data.to_pylist())
    return out


def describe(name: str, snap, label: str) -> None:
    r = DcgmMapper("inspect").map(snap, NOW)
    t = table_rows(r)
    tenants = sorted({a["tenant"] for a in t.get("assignments", [])})
    why, lines = Counter(), Counter()
    for s in snap.skipped:
        reason = s.split(": ", 1)[1] if ": " in s else s
        (lines if reason.startswith(("line ", "truncated", "body is", "empty")) else why)[
            reason
        ] += 1
    for k, n in r.dropped.items():
        why[k] += n
    print(f"\n{name}{label}")
    print(
        f"  GPUs {r.gpus}: "
        + ", ".join(f"{g['gpu_uuid'][:12]}..@{g['host']}" for g in t.get("gpus", []))
    )
    print(
        f"  slices {r.slices}: "
        + ", ".join(f"{s['slice_id'].split('/')[-1]} {s['profile']}" for s in t.get("slices", []))
    )
    print(f"  tenants: {', '.join(tenants) or '-'}")
    print(
        f"  series found {len(snap) + sum(1 for s in snap.skipped if 'sample skipped' in s)}, "
        f"used {r.used}, dropped {sum(why.values())}"
    )
    for k, n in sorted(why.items()):
        print(f"    - {n} x {k}")
    for k, n in sorted(lines.items()):
        print(f"  not a series: {n} x {k}")


def main() -> int:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else upstream_dir()
    if base is None or not base.is_dir():
        print("fixtures/upstream not found; pass its path", file=sys.stderr)
        return 2
    dcgm = base / "dcgm-exporter"
    for path in sorted(dcgm.glob("*/*")):
        rel = path.relative_to(dcgm)
        if path.suffix == ".csv":
            fields = [
                ln.split(",")[0].strip()
                for ln in path.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")
            ]
            print(
                f"\n{rel}: a counter list, not a scrape ({len(fields)} enabled fields); "
                "tests/test_dcgm_samples.py checks each is mapped or dropped with a reason"
            )
            continue
        if path.suffix == ".json":
            continue
        texts = scrapes_in(path)
        for i, text in enumerate(texts):
            snap = parse_exposition(text, str(rel), now=NOW, complete=True)
            describe(str(rel), snap, f" (scrape {i + 1} of {len(texts)})" if len(texts) > 1 else "")
    jsons = sorted(dcgm.glob("*/*.json"))
    if jsons:
        snaps = []
        for p in jsons:
            doc = json.loads(p.read_text())
            snaps.append(from_prometheus_result(doc["data"]["result"], p.name))
        describe(
            f"{jsons[0].parent.name}/prom-api-query-*.json ({len(jsons)} Prometheus API answers)",
            merge(snaps),
            "",
        )
    for path in sorted((base / "vllm").glob("*.txt")):
        snap = parse_exposition(path.read_text(), path.name, now=NOW, complete=True)
        m = LatencyMapper("inspect")
        m.map(snap)
        r = m.map(parse_exposition(path.read_text(), path.name, now=NOW + 15, complete=True))
        rows = [row for b in r.batches for row in b.data.to_pylist()]
        fams = Counter(n.rsplit("_bucket", 1)[0] for n in snap.names if n.endswith("_bucket"))
        print(f"\nvllm/{path.name}")
        print(
            f"  series found {len(snap)}, latency buckets used {r.used} "
            f"({', '.join(f for f in fams if is_latency_bucket(f + '_bucket'))})"
        )
        eps = ", ".join(f"{x['endpoint']} ({x['model']})" for x in rows)
        print(
            f"  endpoints/models: {eps}; "
            f"tenant: {rows[0]['tenant'] if rows else '-'}; "
            f"itl_p99_ms over two reads: {rows[0]['itl_p99_ms'] if rows else '-'} "
            "(all counts are 0)"
        )
        print(
            f"  not latency (not read): {len(snap) - r.used} series of "
            f"{len({n for n in snap.names})} names; skipped: {len(snap.skipped)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
