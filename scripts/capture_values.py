"""Real captures -> store, by both pull paths: a value table (text vs store).

    python scripts/capture_values.py [--markdown]

Serves every capture in fixtures/upstream (and, marked "ours", the texts we
wrote in fixtures/ours) on 127.0.0.1, then
- the "scrape" source reads them directly, twice (15 s of fake time apart for
  the second text of two-scrape files), into one store;
- a real Prometheus (Debian package, 1 s scrapes) scrapes them and the
  "prometheus" source reads it, twice, into another store.
Prints, per capture, a handful of values as they stand in the text and as
they stand in each store. Prometheus cannot parse a text with a title line (the
run:ai files): it gets the sample lines only, and the raw file as one more
target, which shows up as a recorded failure.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collectors.prometheus_source import PrometheusOptions, PrometheusSource  # noqa: E402
from collectors.promtext.parse import _SAMPLE  # noqa: E402
from collectors.scrape_source import ScrapeOptions, ScrapeSource, ScrapeTarget  # noqa: E402
from fleettui.runtime import run_record  # noqa: E402
from storage.store import Store  # noqa: E402
from tests.services import prometheus as promsvc  # noqa: E402
from tests.test_real_captures import Files  # noqa: E402
from tests.upstream_samples import OURS, UPSTREAM, scrapes_in  # noqa: E402


@dataclass
class Check:
    what: str  # metric (and label filter) in the text
    metric: str | None  # text line: metric name ...
    has: str  # ... whose line contains this
    sql: str  # store value (first column of the first row)


@dataclass
class Capture:
    name: str
    path: Path
    instance: str
    checks: list[Check]
    labels: dict | None = None


H100 = "GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005"
L4 = "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c"
A100 = "GPU-7099682b-a20d-2bcc-74ab-b9060454d81e"
T4 = "GPU-7a2e92f2-be71-d37e-a744-541600ffc722"
README = "GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52"


def g(col: str, uuid: str) -> str:
    return f"SELECT {col} FROM gpu_samples WHERE gpu_uuid = '{uuid}' ORDER BY ts DESC LIMIT 1"


def link(col: str, port: str) -> str:
    return (
        f"SELECT {col} FROM link_samples WHERE host = 'ib-host-1' AND port = '{port}' "
        "ORDER BY ts DESC LIMIT 1"
    )


D = UPSTREAM / "dcgm-exporter"
CAPTURES = [
    Capture(
        "L4 1x (cncf kops)",
        D / "cncf-kops-1xL4/dcgm-exporter-full-default-counters.prom",
        "l4-node",
        [
            Check("POWER_USAGE W", "DCGM_FI_DEV_POWER_USAGE", "", g("power_w", L4)),
            Check(
                "TOTAL_ENERGY mJ -> J",
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                "",
                g("energy_j", L4),
            ),
            Check("FB_USED MiB -> bytes", "DCGM_FI_DEV_FB_USED", "", g("mem_used_bytes", L4)),
            Check(
                "MEMORY_TEMP (GDDR: no sensor)", "DCGM_FI_DEV_MEMORY_TEMP", "", g("mem_temp_c", L4)
            ),
            Check(
                "modelName -> gpus.name",
                None,
                'modelName="',
                f"SELECT name FROM gpus WHERE gpu_uuid = '{L4}'",
            ),
        ],
    ),
    Capture(
        "README (dcgm-exporter docs)",
        D / "nvidia-readme/docker-quickstart-memory-temp-blank.txt",
        "readme-node",
        [
            Check(
                "MEMORY_TEMP (INT64 blank+2)",
                "DCGM_FI_DEV_MEMORY_TEMP",
                "",
                g("mem_temp_c", README),
            ),
            Check("SM_CLOCK MHz", "DCGM_FI_DEV_SM_CLOCK", "", g("sm_clock_mhz", README)),
        ],
    ),
    Capture(
        "H100 8x (NVIDIA aicr)",
        D / "nvidia-aicr-8xH100/dcgm-exporter-sampled.prom",
        "h100-node",
        [
            Check("GPU 0 GPU_TEMP", "DCGM_FI_DEV_GPU_TEMP", 'gpu="0"', g("temp_c", H100)),
            Check("GPU 0 POWER_USAGE", "DCGM_FI_DEV_POWER_USAGE", 'gpu="0"', g("power_w", H100)),
            Check(
                "GPU 0 namespace -> tenant",
                None,
                'namespace="',
                f"SELECT tenant FROM assignments WHERE gpu_uuid = '{H100}'",
            ),
        ],
    ),
    Capture(
        "A100 MIG 2x1g+2g (run:ai)",
        D / "runai-a100-mig/a100-mig-active-2x1g.5gb-1x2g.10gb.txt",
        "a100-node",
        [
            Check(
                "POWER (repeated per GI) once",
                "DCGM_FI_DEV_POWER_USAGE",
                'GPU_I_ID="5"',
                g("power_w", A100),
            ),
            Check(
                "GI 9 FB_USED MiB -> bytes",
                "DCGM_FI_DEV_FB_USED",
                'GPU_I_ID="9"',
                f"SELECT mem_used_bytes FROM slice_samples WHERE slice_id = '{A100}/gi9' "
                "ORDER BY ts DESC LIMIT 1",
            ),
            Check(
                "GI profile -> slices.profile (GI 5)",
                None,
                'GPU_I_PROFILE="2',
                f"SELECT profile FROM slices WHERE slice_id = '{A100}/gi5'",
            ),
        ],
    ),
    Capture(
        "T4 2x pod labels (run:ai)",
        D / "runai-a100-mig/t4-2gpu-k8s-pod-labels.txt",
        "t4-node",
        [
            Check("GPU 0 POWER_USAGE", "DCGM_FI_DEV_POWER_USAGE", 'gpu="0"', g("power_w", T4)),
            Check(
                "GPU 0 namespace -> tenant",
                None,
                'namespace="r',
                f"SELECT tenant FROM assignments WHERE gpu_uuid = '{T4}'",
            ),
        ],
    ),
    Capture(
        "node_exporter IB (its e2e fixture)",
        UPSTREAM / "node_exporter/e2e-output-infiniband.txt",
        "ib-host-1",
        [
            Check(
                "mlx4_0/1 rate B/s",
                "node_infiniband_rate_bytes_per_second",
                'device="mlx4_0",port="1"',
                link("line_rate_bytes_per_s", "mlx4_0/1"),
            ),
            Check("mlx4_0/1 kind", None, "", link("kind", "mlx4_0/1")),
            Check("i40iw0 hca_type -> kind", None, 'hca_type="I', link("kind", "i40iw0/1")),
            Check(
                "mlx4_0/1 discards_tx -> errors/interval",
                "node_infiniband_port_discards_transmitted_total",
                'port="1"',
                link("errors", "mlx4_0/1"),
            ),
            Check(
                "mlx4_0/1 state_id 4 -> up",
                "node_infiniband_state_id",
                'device="mlx4_0",port="1"',
                link("link_up", "mlx4_0/1"),
            ),
            Check("hosts row", None, "", "SELECT host FROM hosts WHERE host = 'ib-host-1'"),
        ],
    ),
    Capture(
        "vLLM V1 (cncf kops)",
        UPSTREAM / "vllm/vllm-v1-qwen2.5-0.5b-kops-metrics.txt",
        "vllm-node",
        [
            Check(
                "model_name -> endpoints.model",
                None,
                'model_name="',
                "SELECT model FROM endpoints WHERE endpoint = 'qwen'",
            ),
            Check(
                "target label namespace -> tenant",
                None,
                "",
                "SELECT tenant FROM endpoints WHERE endpoint = 'qwen'",
            ),
            Check(
                "ITL count (0: no requests)",
                "vllm:inter_token_latency_seconds_count",
                "",
                "SELECT itl_p99_ms FROM latency_samples WHERE endpoint = 'qwen' LIMIT 1",
            ),
        ],
        labels={"service": "qwen", "namespace": "team-q"},
    ),
    Capture(
        "ours: vLLM 0.8 (TPOT only)",
        OURS / "vllm-0.8-v0-tpot-only.txt",
        "vllm08-node",
        [
            Check(
                "ITL p50 ms (2 scrapes)",
                None,
                "",
                "SELECT itl_p50_ms FROM latency_samples WHERE endpoint = 'chat08' "
                "AND itl_p50_ms IS NOT NULL ORDER BY ts DESC LIMIT 1",
            ),
            Check(
                "ITL p99 ms (2 scrapes)",
                None,
                "",
                "SELECT itl_p99_ms FROM latency_samples WHERE endpoint = 'chat08' "
                "AND itl_p99_ms IS NOT NULL ORDER BY ts DESC LIMIT 1",
            ),
        ],
        labels={"service": "chat08", "namespace": "team-a"},
    ),
    Capture(
        "ours: Ray Serve ray_vllm:",
        OURS / "ray-serve-llm-ray_vllm.txt",
        "ray-node",
        [
            Check(
                "ITL p99 ms (2 scrapes)",
                None,
                "",
                "SELECT itl_p99_ms FROM latency_samples WHERE endpoint = 'ray-llm' "
                "AND itl_p99_ms IS NOT NULL ORDER BY ts DESC LIMIT 1",
            ),
        ],
        labels={"service": "ray-llm"},
    ),
    Capture(
        "ours: Dynamo frontend",
        OURS / "dynamo-frontend.txt",
        "dynamo-node",
        [
            Check(
                "ITL p99 ms (2 scrapes)",
                None,
                "",
                "SELECT itl_p99_ms FROM latency_samples WHERE endpoint = 'dynamo' "
                "AND itl_p99_ms IS NOT NULL ORDER BY ts DESC LIMIT 1",
            ),
        ],
        labels={"service": "dynamo"},
    ),
]


def text_value(text: str, c: Check) -> str:
    if c.metric is None:  # a label: `has` is 'name="' (first line holding it), or nothing
        m = re.search(re.escape(c.has) + r'([^"]*)"', text) if c.has else None
        return f'{c.has}{m.group(1)}"' if m else "(derived)"
    for ln in text.splitlines():
        if ln.startswith(c.metric) and (ln[len(c.metric)] in "{ ") and c.has in ln:
            return ln.rsplit(" ", 1)[1]
    return "(absent)"


def sample_lines(text: str) -> str:
    """What Prometheus can parse: comments and sample lines (a title line would fail the scrape)."""
    keep = [ln for ln in text.splitlines() if ln.startswith("#") or _SAMPLE.match(ln.strip())]
    return "\n".join(keep) + "\n"


def fmt(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


async def main(markdown: bool) -> int:
    texts = {c.name: scrapes_in(c.path) for c in CAPTURES}
    bodies = {f"/{i}": sample_lines(texts[c.name][0]) for i, c in enumerate(CAPTURES)}
    bodies["/raw-title"] = CAPTURES[3].path.read_text()  # run:ai file as it is: a title line first
    files = Files(bodies)
    targets = [
        (f"/{i}", {"instance": c.instance, **(c.labels or {})}) for i, c in enumerate(CAPTURES)
    ]
    scrape = ScrapeSource(
        ScrapeOptions(name="scrape", targets=[]),
        [ScrapeTarget(files.url(p), lab) for p, lab in targets],
    )
    s_store, p_store = Store.open(":memory:"), Store.open(":memory:")
    work = Path(tempfile.mkdtemp(prefix="capture-values-"))
    prom = promsvc.start(
        [promsvc.ScrapeTarget(f"127.0.0.1:{files.port}", p, lab) for p, lab in targets]
        + [
            promsvc.ScrapeTarget(
                f"127.0.0.1:{files.port}", "/raw-title", {"instance": "raw-title-node"}
            )
        ],
        work,
    )
    try:
        n = prom.wait_for_series("up", len(targets) + 1)
        prom.wait_for_series("DCGM_FI_DEV_GPU_TEMP", 12)
        await asyncio.sleep(1.5)
        src = PrometheusSource(PrometheusOptions(url=prom.url, interval_s=2.0, backfill_s=0))
        now = datetime.now(UTC)
        gs = await scrape.gather(now)
        s_store.write(
            gs.batches + [run_record(now.replace(tzinfo=None), "scrape", 0, 15.0, gs, None)]
        )
        gp = await src.gather(now)
        p_store.write(
            gp.batches + [run_record(now.replace(tzinfo=None), "prometheus", 0, 2.0, gp, None)]
        )
        # second texts (two-scrape files): both paths see them a few seconds later
        for i, c in enumerate(CAPTURES):
            if len(texts[c.name]) > 1:
                files.bodies[f"/{i}"] = sample_lines(texts[c.name][1])
        await asyncio.sleep(2.5)
        later = datetime.now(UTC)
        gs2 = await scrape.gather(later)
        s_store.write(gs2.batches)
        gp2 = await src.gather(later)
        p_store.write(gp2.batches)
        await src.close()
    finally:
        promsvc.stop(prom)
        files.close()
    rows = []
    for c in CAPTURES:
        for ch in c.checks:
            sv = s_store.con.execute(ch.sql).fetchone()
            pv = p_store.con.execute(ch.sql).fetchone()
            rows.append(
                (
                    c.name,
                    ch.what,
                    text_value(texts[c.name][0], ch),
                    fmt(sv[0]) if sv else "(no row)",
                    fmt(pv[0]) if pv else "(no row)",
                )
            )
    head = ("capture", "value", "in the text", "store (scrape path)", "store (prometheus path)")
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        w = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            print("  ".join(str(x).ljust(w[i]) for i, x in enumerate(r)))
    print(f"\nPrometheus targets: {n}; failed-target rows (prometheus path):")
    for coll, err in p_store.con.execute(
        "SELECT collector, error FROM collector_runs WHERE NOT ok"
    ).fetchall():
        print(f"  {coll}: {err[:150]}")
    for label, st in (("scrape", s_store), ("prometheus", p_store)):
        ((d, r),) = st.con.execute(
            f"SELECT dropped, dropped_reasons FROM collector_runs WHERE collector = '{label}'"
        ).fetchall()
        blank = sum(int(m) for m in re.findall(r"DCGM blank[^;]*? x(\d+)", r or ""))
        print(f"{label}: dropped {d} series in the first gather ({blank} DCGM blanks)")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    t0 = time.time()
    rc = asyncio.run(main(ap.parse_args().markdown))
    print(f"({time.time() - t0:.1f} s)")
    sys.exit(rc)
