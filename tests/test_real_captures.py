"""Every real value means what it says: the mapping defects found on real captures
(issue 9), each checked on a capture in fixtures/upstream (or, where no public
capture with a compatible licence exists, on a text of ours in fixtures/ours).

Mapper-level checks go through `TelemetryPipeline`, the code both pull paths
share; the scrape path over HTTP and the store are exercised at the end.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from collectors.dcgm_blank import blank_mask, has_hbm, label_value
from collectors.promtext.parse import parse_exposition
from collectors.promtext.pipeline import TelemetryOptions, TelemetryPipeline
from collectors.scrape_source import ScrapeOptions, ScrapeSource, ScrapeTarget
from fleettui.runtime import run_record
from storage.store import Store
from storage.views.tenants import tenant_summary
from tests.upstream_samples import ours, scrapes_in, upstream

T0 = 1_773_114_090.0
MIB = 1 << 20


def rows(g, table):
    return [r for b in g.batches if b.table == table for r in b.data.to_pylist()]


def run(text, *, now=T0, source="cap", o=None, pipe=None, labels=None):
    pipe = pipe or TelemetryPipeline(source, o)
    snap = parse_exposition(text, source, now=now, complete=True, extra_labels=labels)
    return pipe, pipe.map(snap, now)


# -- 1. DCGM blanks --------------------------------------------------------------
BLANKS = [
    2147483632,
    2147483633,
    2147483634,
    2147483635,  # int32 BLANK, NOT_FOUND/SUPPORTED/PERM
    9223372036854775792,
    9223372036854775793,
    9223372036854775794,
    9223372036854775795,
    140737488355328.0,
    140737488355329.0,
    140737488355330.0,
    140737488355331.0,
]
READINGS = [
    0,
    1,
    28,
    69.5,
    2147483631,
    2147483636,
    4294967295,
    140737488355327.0,
    140737488355332.0,
    455497156,
    9.2e18,
    1e15,
]


def test_blank_mask_is_every_dcgm_sentinel_and_no_reading():
    # parsed from text, as both paths do: 9223372036854775794 -> 9.223372036854776e18
    vals = np.array([float(str(v)) for v in BLANKS + READINGS])
    assert blank_mask(vals).tolist() == [True] * len(BLANKS) + [False] * len(READINGS)
    assert float("9223372036854775794") == 9.223372036854776e18
    assert [
        label_value({"k": v}, "k")
        for v in ("<<<NULL>>>", "<<<NOT_FOUND>>>", "<<<NOT_SUPPORTED>>>", "<<<NOT_PERM>>>", "", "x")
    ] == [None, None, None, None, None, "x"]


@pytest.mark.parametrize(
    "name", ["docker-quickstart-memory-temp-blank.txt", "k8s-quickstart-memory-temp-blank.txt"]
)
def test_dcgm_exporter_readme_blank_memory_temp_is_null_not_9e18(name):
    path = upstream("dcgm-exporter", "nvidia-readme", name)
    assert "} 9223372036854775794" in path.read_text()
    _, g = run(path.read_text(), labels={"instance": "gpu-node-7:9400"})
    (s,) = rows(g, "gpu_samples")
    assert s["gpu_uuid"] == "GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52" and s["host"] == "gpu-node-7"
    assert s["mem_temp_c"] is None  # was 9.2e18
    assert s["sm_clock_mhz"] == 139 and s["mem_clock_mhz"] == 405  # the real readings stay
    why = (
        "DCGM_FI_DEV_MEMORY_TEMP: DCGM blank value (not supported/found/permitted), stored as NULL"
    )
    assert g.dropped[why] == 1


def test_every_blank_kind_on_every_column_is_null_and_counted():
    # The L4 capture with each numeric field's value replaced by one sentinel in turn.
    text = upstream(
        "dcgm-exporter", "cncf-kops-1xL4", "dcgm-exporter-full-default-counters.prom"
    ).read_text()
    lines = text.splitlines()
    samples = [i for i, ln in enumerate(lines) if ln.startswith("DCGM_FI_")]
    for k, blank in enumerate(BLANKS):
        out = list(lines)
        for i in samples:
            out[i] = out[i].rsplit(" ", 1)[0] + f" {blank}"
        _, g = run("\n".join(out) + "\n", now=T0 + k)
        (s,) = rows(g, "gpu_samples")
        values = {c: v for c, v in s.items() if c not in ("ts", "host", "gpu_uuid", "source")}
        assert values and all(v is None for v in values.values()), (blank, values)
        assert sum(g.dropped.values()) >= len(samples), blank
        assert rows(g, "events") == []  # a blank XID is no Xid


def test_string_blank_labels_are_absent():
    text = upstream(
        "dcgm-exporter", "cncf-kops-1xL4", "dcgm-exporter-full-default-counters.prom"
    ).read_text()
    text = text.replace('modelName="NVIDIA L4"', 'modelName="<<<NOT_SUPPORTED>>>"').replace(
        'DCGM_FI_DRIVER_VERSION="580.105.08"', 'DCGM_FI_DRIVER_VERSION="<<<NULL>>>"'
    )
    _, g = run(text)
    (gpu,) = rows(g, "gpus")
    assert gpu["name"] is None and rows(g, "hosts")[0]["driver_version"] is None


def test_memory_temp_zero_is_no_sensor_on_gddr_and_a_reading_on_hbm():
    l4 = upstream("dcgm-exporter", "cncf-kops-1xL4", "dcgm-exporter-full-default-counters.prom")
    _, g = run(l4.read_text())
    (s,) = rows(g, "gpu_samples")
    assert s["mem_temp_c"] is None and s["temp_c"] == 31
    assert has_hbm("NVIDIA L4") is False and has_hbm("Tesla T4") is False
    assert has_hbm("NVIDIA L40S") is False and has_hbm("NVIDIA RTX 4000 Ada Generation") is False
    a100 = upstream("dcgm-exporter", "runai-a100-mig", "a100-mig-disabled.txt")
    _, g = run(scrapes_in(a100)[0])
    (s,) = rows(g, "gpu_samples")
    assert s["mem_temp_c"] == 28  # an HBM board's sensor, kept
    # and an HBM board reading 0 keeps its 0 (only "no sensor" boards lose it)
    hbm_zero = scrapes_in(a100)[0]
    hbm_zero = "\n".join(
        ln.rsplit(" ", 1)[0] + " 0" if ln.startswith("DCGM_FI_DEV_MEMORY_TEMP{") else ln
        for ln in hbm_zero.splitlines()
    )
    _, g = run(hbm_zero + "\n", now=T0 + 1)
    assert rows(g, "gpu_samples")[0]["mem_temp_c"] == 0


# -- 2. vLLM before 0.10, Ray Serve, Dynamo -----------------------------------------
def latency_of(path, o=None, labels=None):
    first, second = scrapes_in(path)
    pipe, g0 = run(first, o=o, labels=labels)
    _, g1 = run(second, now=T0 + 15, pipe=pipe, labels=labels)
    return g0, g1


@pytest.mark.parametrize(
    "name", ["vllm-0.8-v0-tpot-only.txt", "ray-serve-llm-ray_vllm.txt", "dynamo-frontend.txt"]
)
def test_itl_from_old_vllm_ray_serve_and_dynamo(name):
    g0, g1 = latency_of(ours(name))
    assert rows(g0, "latency_samples") == []  # one scrape: no interval yet
    (r,) = rows(g1, "latency_samples")
    assert r["itl_p50_ms"] == pytest.approx(25.0) and r["itl_p99_ms"] == pytest.approx(75.0)
    assert r["ttft_p50_ms"] == pytest.approx(60.0) and r["e2e_p50_ms"] == pytest.approx(2500.0)
    assert r["requests_per_s"] == pytest.approx(4 / 15)


def test_both_itl_names_are_not_counted_twice():
    path = ours("vllm-0.9-both-itl-names.txt")
    g0, g1 = latency_of(path)
    (r,) = rows(g1, "latency_samples")
    assert r["itl_p50_ms"] == pytest.approx(25.0)
    why = (
        "vllm:time_per_output_token_seconds: vllm:inter_token_latency_seconds present, "
        "the old name is not counted twice"
    )
    assert g1.dropped[why] == 14  # its 14 buckets, left out
    # Were the old name added, an old-name histogram that differs would move the quantiles:
    # give its 100 new observations to the 0.4-0.5 s bucket instead.
    first, second = scrapes_in(path)
    old = "vllm:time_per_output_token_seconds_bucket"
    before = {
        ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
        for ln in first.splitlines()
        if ln.startswith(old)
    }
    skewed = []
    for ln in second.splitlines():
        if ln.startswith(old):
            key = ln.rsplit(" ", 1)[0]
            le = key.split('le="')[1].rstrip('"}')
            extra = 100 if le == "+Inf" or float(le) >= 0.5 else 0
            ln = f"{key} {before[key] + extra}"
        skewed.append(ln)
    pipe, _ = run(first)
    _, g = run("\n".join(skewed) + "\n", now=T0 + 15, pipe=pipe)
    (r,) = rows(g, "latency_samples")
    assert r["itl_p50_ms"] == pytest.approx(25.0) and r["itl_p99_ms"] == pytest.approx(75.0)


def test_real_vllm_v1_capture_still_reads_new_names_only():
    text = upstream("vllm", "vllm-v1-qwen2.5-0.5b-kops-metrics.txt").read_text()
    assert "vllm:time_per_output_token_seconds" not in text
    _, g = run(text)
    assert (
        g.dropped.get(
            "vllm:time_per_output_token_seconds: vllm:inter_token_latency_seconds present, "
            "the old name is not counted twice"
        )
        is None
    )


# -- 4. endpoints and tenants from inference servers --------------------------------
def test_inference_servers_become_endpoints_and_tenants_without_targets():
    g0, g1 = latency_of(
        ours("vllm-0.8-v0-tpot-only.txt"), labels={"service": "chat", "namespace": "team-a"}
    )
    assert rows(g0, "endpoints") == [
        {"endpoint": "chat", "tenant": "team-a", "model": "meta-llama/Llama-3.1-8B-Instruct"}
    ]
    assert rows(g0, "tenants") == [{"tenant": "team-a"}]
    assert rows(g1, "endpoints") == []  # written when it changes, not every gather
    assert rows(g1, "latency_samples")[0]["tenant"] == "team-a"
    store = Store.open(":memory:")
    store.con.execute("INSERT INTO endpoints VALUES ('chat', 'team-a', 'old', 30.0, 400.0)")
    store.write(g0.batches + g1.batches)
    # latency targets are config's: never overwritten (nor invented) by discovery
    assert store.con.execute("SELECT * FROM endpoints").fetchall() == [
        ("chat", "team-a", "meta-llama/Llama-3.1-8B-Instruct", 30.0, 400.0)
    ]
    at = datetime.fromtimestamp(T0 + 16, UTC).replace(tzinfo=None)
    (t,) = tenant_summary(store.con, at).to_pylist()
    assert t["tenant"] == "team-a" and t["itl_p99_ms"] == pytest.approx(75.0)


def test_pod_labels_of_a_real_scrape_make_a_tenant():
    path = upstream("dcgm-exporter", "runai-a100-mig", "t4-2gpu-k8s-pod-labels.txt")
    _, g = run(scrapes_in(path)[0])
    assert rows(g, "tenants") and {a["tenant"] for a in rows(g, "assignments")} == {
        r["tenant"] for r in rows(g, "tenants")
    }


# -- 3. node_exporter InfiniBand -----------------------------------------------------
IB = ("node_exporter", "e2e-output-infiniband.txt")


def test_node_exporter_ib_counters_kinds_hosts_and_drops():
    text = upstream(*IB).read_text()
    assert "node_infiniband_port_transmit_discards_total" not in text  # not a real name
    labels = {"instance": "ib-host-1:9100"}
    pipe, g0 = run(text, labels=labels)
    links = {(r["port"], r["kind"]): r for r in rows(g0, "link_samples")}
    # per device: the iWARP NIC is not labelled ib beside the HCA on the same host
    assert set(links) == {("mlx4_0/1", "ib"), ("mlx4_0/2", "ib"), ("i40iw0/1", "iwarp")}
    assert links[("mlx4_0/1", "ib")]["line_rate_bytes_per_s"] == 5e9
    assert links[("i40iw0/1", "iwarp")]["line_rate_bytes_per_s"] == 1.25e9
    assert all(r["link_up"] for r in links.values())
    assert all(r["errors"] is None for r in links.values())  # first sight: no interval
    # a host known only from node_exporter gets a hosts row
    assert [h["host"] for h in rows(g0, "hosts")] == ["ib-host-1"]
    assert (
        g0.dropped[
            "node_infiniband_port_transmit_wait_total: congestion ticks, not errors: "
            "no store column"
        ]
        == 1
    )
    assert sum(n for k, n in g0.dropped.items() if "legacy" in k) == 16
    # 15 s later: discards_transmitted 5 -> 8, port_discards_received 0 -> 2, vl15? absent
    later = text.replace(
        'node_infiniband_port_discards_transmitted_total{device="mlx4_0",port="1"} 5',
        'node_infiniband_port_discards_transmitted_total{device="mlx4_0",port="1"} 8',
    )
    later = later.replace(
        'node_infiniband_port_discards_received_total{device="mlx4_0",port="1"} 0',
        'node_infiniband_port_discards_received_total{device="mlx4_0",port="1"} 2',
    )
    later = later.replace(
        'node_infiniband_port_data_transmitted_bytes_total{device="mlx4_0",port="1"} 1.493376e+07',
        'node_infiniband_port_data_transmitted_bytes_total{device="mlx4_0",port="1"} 1.643376e+07',
    )
    _, g1 = run(later, now=T0 + 15, pipe=pipe, labels=labels)
    links = {r["port"]: r for r in rows(g1, "link_samples")}
    assert links["mlx4_0/1"]["errors"] == 5  # both discard counters, the real names
    assert links["mlx4_0/1"]["tx_bytes_per_s"] == pytest.approx(1.5e6 / 15)
    assert links["mlx4_0/2"]["errors"] == 0


def test_link_kind_config_by_device_wins_and_host_config_still_applies():
    text = upstream(*IB).read_text()
    o = TelemetryOptions(
        link_kind_by_host={"ib-host-*": "roce"}, link_kind_by_device={"mlx4_0": "ib"}
    )
    _, g = run(text, o=o, labels={"instance": "ib-host-1:9100"})
    assert {r["port"]: r["kind"] for r in rows(g, "link_samples")} == {
        "mlx4_0/1": "ib",
        "mlx4_0/2": "ib",
        "i40iw0/1": "iwarp",
    }
    o = TelemetryOptions(link_kind_by_host={"ib-host-*": "roce"})
    _, g = run(text, o=o, labels={"instance": "ib-host-1:9100"})
    assert {r["port"]: r["kind"] for r in rows(g, "link_samples")} == {
        "mlx4_0/1": "roce",
        "mlx4_0/2": "roce",
        "i40iw0/1": "iwarp",
    }


def test_iwarp_links_are_accepted_by_the_store():
    _, g = run(upstream(*IB).read_text(), labels={"instance": "ib-host-1:9100"})
    store = Store.open(":memory:")
    store.write(g.batches)
    assert store.con.execute(
        "SELECT kind, count(*) FROM link_samples GROUP BY kind ORDER BY kind"
    ).fetchall() == [("ib", 2), ("iwarp", 1)]


# -- 5/6. the scrape path over HTTP: failures, drops, staleness -----------------------
class Files:
    """Serves fixtures (and one unparsable body) on 127.0.0.1."""

    def __init__(self, bodies: dict[str, str]):
        self.bodies = bodies
        files = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = files.bodies.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the scraper gave up (its timeout): its side records that

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_scrape_path_records_failed_targets_drops_and_lets_hosts_go_stale():
    l4 = upstream("dcgm-exporter", "cncf-kops-1xL4", "dcgm-exporter-full-default-counters.prom")
    files = Files(
        {
            "/l4": l4.read_text(),
            "/ib": upstream(*IB).read_text(),
            "/html": "<!DOCTYPE html><html><body>login</body></html>",
        }
    )
    try:
        targets = [
            ScrapeTarget(files.url("/l4")),
            ScrapeTarget(files.url("/ib"), {"instance": "ib-host-1"}),
            ScrapeTarget(files.url("/html"), {"instance": "html-host"}),
            ScrapeTarget(files.url("/gone"), {"instance": "gone-host"}),
        ]
        src = ScrapeSource(ScrapeOptions(name="scrape", targets=[]), targets)
        store = Store.open(":memory:")
        now = datetime.now(UTC)
        g = asyncio.run(src.gather(now))
        store.write(g.batches)
        store.write([run_record(now.replace(tzinfo=None), "scrape", 0.01, 15.0, g, None)])
        fails = store.con.execute(
            "SELECT collector, ok, error FROM collector_runs WHERE NOT ok ORDER BY collector"
        ).fetchall()
        assert [(c, ok) for c, ok, _ in fails] == [
            (f"scrape {files.url('/gone')}", False),
            (f"scrape {files.url('/html')}", False),
        ]
        assert "HTTP 404" in fails[0][2] and "body is HTML" in fails[1][2]
        ((dropped, reasons),) = store.con.execute(
            "SELECT dropped, dropped_reasons FROM collector_runs WHERE collector = 'scrape'"
        ).fetchall()
        assert dropped == sum(g.dropped.values()) > 0
        assert "DCGM_FI_DEV_ENC_UTIL: encoder utilisation: no store column x1" in reasons
        assert "node_infiniband_port_transmit_wait_total" in reasons
        hosts = dict(store.con.execute("SELECT host, last_seen FROM hosts").fetchall())
        assert set(hosts) == {"i-030791dc5a37cd257", "ib-host-1"}  # failed targets: no host row
        # next gather: the node_exporter target is gone; its host keeps its old last_seen
        files.bodies.pop("/ib")
        g2 = asyncio.run(src.gather(datetime.now(UTC)))
        store.write(g2.batches)
        after = dict(store.con.execute("SELECT host, last_seen FROM hosts").fetchall())
        assert after["ib-host-1"] == hosts["ib-host-1"]
        assert [r["collector"] for r in rows(g2, "collector_runs")] == [
            f"scrape {files.url('/ib')}",
            f"scrape {files.url('/html')}",
            f"scrape {files.url('/gone')}",
        ]
    finally:
        files.close()
