"""The DCGM mapper over every real dcgm-exporter sample in fixtures/upstream/dcgm-exporter:
exact GPUs, MIG slices, tenants and values (see SOURCES.md there)."""

from __future__ import annotations

import csv
import json

import pytest

from collectors.dcgm_map import _FIELD_INDEX, NO_COLUMN, XID_FIELDS, DcgmMapper, mig_fraction
from collectors.fabric import NVLINK_NAMES
from collectors.promtext.parse import parse_exposition
from collectors.promtext.series import from_prometheus_result, merge
from tests.upstream_samples import scrapes_in, upstream

NOW = 1_773_114_090.0
MIB = 1 << 20


def mapped(path, *, tenants=None):
    from collectors.dcgm_map import TenantRules

    snaps = [parse_exposition(t, path.name, now=NOW, complete=True) for t in scrapes_in(path)]
    m = DcgmMapper("file", tenants or TenantRules())
    results = [m.map(s, NOW) for s in snaps]
    return snaps, results


def rows(result, table):
    return [r for b in result.batches if b.table == table for r in b.data.to_pylist()]


def by(rows_, key):
    return {r[key]: r for r in rows_}


def test_l4_full_default_counters():
    path = upstream("dcgm-exporter", "cncf-kops-1xL4", "dcgm-exporter-full-default-counters.prom")
    (snap,), (r,) = mapped(path)
    assert len(snap) == 23 and snap.skipped == []
    (g,) = rows(r, "gpus")
    assert g == {
        "gpu_uuid": "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c",
        "host": "i-030791dc5a37cd257",
        "gpu_index": 0,
        "name": "NVIDIA L4",
        "pci_bus_id": "00000000:31:00.0",
        "mig_mode": False,
        "mem_total_bytes": (22563 + 0 + 470) * MIB,
    }
    (s,) = rows(r, "gpu_samples")
    # the L4 is GDDR: MEMORY_TEMP 0 there is "no sensor", not 0 degC
    (mt,) = [
        ln for ln in path.read_text().splitlines() if ln.startswith("DCGM_FI_DEV_MEMORY_TEMP{")
    ]
    assert mt.endswith("} 0")
    assert s["power_w"] == 16.365 and s["temp_c"] == 31 and s["mem_temp_c"] is None
    assert s["energy_j"] == pytest.approx(4742.776) and s["util_pct"] == 0
    assert s["sm_clock_mhz"] == 210 and s["mem_clock_mhz"] == 405
    assert s["pcie_tx_bytes_per_s"] == 112603 and s["pcie_rx_bytes_per_s"] == 17544
    assert s["mem_used_bytes"] == 0 and s["mem_total_bytes"] == (22563 + 470) * MIB
    assert rows(r, "hosts")[0]["driver_version"] == "580.105.08"
    assert rows(r, "slice_samples") == [] and rows(r, "assignments") == []
    assert set(r.dropped) == {
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER: PCIe replays: no store column",
        "DCGM_FI_DEV_ENC_UTIL: encoder utilisation: no store column",
        "DCGM_FI_DEV_DEC_UTIL: decoder utilisation: no store column",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS: row remapping: no store column",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS: row remapping: no store column",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE: row remapping: no store column",
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS: vGPU licence: no store column",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE: tensor-pipe activity: no store column",
        "DCGM_FI_PROF_DRAM_ACTIVE: DRAM activity: no store column",
        "DCGM_FI_DEV_MEMORY_TEMP: 0 on a board without HBM (no sensor), stored as NULL",
    }


H100_UUIDS = [
    "GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005",
    "GPU-bc5610b9-79c8-fedd-8899-07539c7f868a",
    "GPU-fbc2c554-4d37-8938-0032-f923bad0f716",
    "GPU-a65a773d-52bb-bcc1-a8ee-f78c3faa2e2d",
    "GPU-82e45d1b-1618-559f-144c-eab51545030b",
    "GPU-39e28159-8c62-ee71-64db-b748edd61e15",
    "GPU-e64d69ca-b4b3-59b2-e78c-94f26c4db365",
    "GPU-04d228d3-3b5a-3534-f5cf-969706647d56",
]


def test_h100_node_with_a_dynamo_pod_on_gpu0():
    path = upstream("dcgm-exporter", "nvidia-aicr-8xH100", "dcgm-exporter-sampled.prom")
    (snap,), (r,) = mapped(path)
    assert len(snap) == 30 and r.used == 30 and r.dropped == {}
    gpus = by(rows(r, "gpus"), "gpu_uuid")
    assert list(gpus) == H100_UUIDS
    assert {g["host"] for g in gpus.values()} == {"gpu-node-1"}
    assert [gpus[u]["gpu_index"] for u in H100_UUIDS] == list(range(8))
    samples = by(rows(r, "gpu_samples"), "gpu_uuid")
    assert [samples[u]["power_w"] for u in H100_UUIDS] == [
        113.611,
        68.347,
        65.709,
        67.316,
        68.717,
        65.742,
        67.328,
        66.997,
    ]
    assert [samples[u]["temp_c"] for u in H100_UUIDS] == [30, 29, 26, 29, 28, 26, 28, 26]
    # MEM_COPY_UTIL is sampled for GPUs 0-5 only (the upstream excerpt stops there)
    assert [samples[u]["mem_util_pct"] for u in H100_UUIDS] == [0.0] * 6 + [None, None]
    (a,) = rows(r, "assignments")
    assert (a["tenant"], a["gpu_uuid"], a["slice_id"], a["fraction"]) == (
        "dynamo-workload",
        H100_UUIDS[0],
        None,
        1.0,
    )


def test_prometheus_api_answers_keep_workload_namespace_not_exporter_namespace():
    folder = upstream("dcgm-exporter", "nvidia-aicr-8xH100")
    snaps = []
    for field in ("GPU_UTIL", "FB_USED", "GPU_TEMP", "POWER_USAGE"):
        doc = json.loads((folder / f"prom-api-query-DCGM_FI_DEV_{field}.json").read_text())
        assert doc["status"] == "success" and doc["data"]["resultType"] == "vector"
        snaps.append(from_prometheus_result(doc["data"]["result"], field))
    snap = merge(snaps)
    assert len(snap) == 64 and snap.skipped == []
    r = DcgmMapper("prom").map(snap, NOW)
    gpus = rows(r, "gpus")
    assert len(gpus) == 16
    assert {g["host"] for g in gpus} == {"gpu-node-1", "gpu-node-2"}
    assert sorted(g["gpu_uuid"] for g in gpus if g["host"] == "gpu-node-1") == sorted(H100_UUIDS)
    samples = by(rows(r, "gpu_samples"), "gpu_uuid")
    assert samples[H100_UUIDS[0]]["mem_used_bytes"] == 74166 * MIB
    assert samples[H100_UUIDS[0]]["power_w"] == 113.611 and samples[H100_UUIDS[0]]["temp_c"] == 30
    # the 15 other series carry namespace="gpu-operator": the exporter's pod, not a tenant
    assert [(a["tenant"], a["gpu_uuid"]) for a in rows(r, "assignments")] == [
        ("dynamo-workload", H100_UUIDS[0])
    ]


A100_DOC = "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"


def test_nvidia_doc_whole_gpu_and_one_instance_side_by_side():
    path = upstream("dcgm-exporter", "nvidia-docs-a100-mig", "a100-mig-1g.5gb-gpu-and-instance.txt")
    (snap,), (r,) = mapped(path)
    assert len(snap) == 21
    (g,) = rows(r, "gpus")
    assert (g["gpu_uuid"], g["host"], g["mig_mode"], g["name"]) == (
        A100_DOC,
        "ub20-a100-k8s",
        True,
        None,
    )
    (sl,) = rows(r, "slices")
    assert sl == {
        "slice_id": f"{A100_DOC}/gi13",
        "gpu_uuid": A100_DOC,
        "kind": "mig",
        "profile": "1g.5gb",
        "fraction": pytest.approx(1 / 7),
        "mem_total_bytes": None,
    }
    (s,) = rows(r, "gpu_samples")
    # GPU-level values from the whole-GPU series, once
    assert (s["power_w"], s["temp_c"], s["mem_temp_c"], s["sm_clock_mhz"]) == (
        409.692,
        61,
        69,
        1215,
    )
    # this 2.x capture has whole-GPU framebuffer series too: the GPU's memory, not an instance's
    assert s["mem_used_bytes"] == 4845 * MIB and s["mem_total_bytes"] == (4845 + 35690) * MIB
    assert g["mem_total_bytes"] == (4845 + 35690) * MIB
    (ss,) = rows(r, "slice_samples")
    assert ss["slice_id"] == f"{A100_DOC}/gi13" and ss["util_pct"] == pytest.approx(99.5687)
    assert rows(r, "assignments") == []


A100_RUNAI = "GPU-7099682b-a20d-2bcc-74ab-b9060454d81e"


def test_mig_three_instances_gpu_values_stored_once():
    path = upstream("dcgm-exporter", "runai-a100-mig", "a100-mig-active-2x1g.5gb-1x2g.10gb.txt")
    (snap,), (r,) = mapped(path)
    assert len(snap) == 42
    assert snap.skipped == [
        "a100-mig-active-2x1g.5gb-1x2g.10gb.txt: line 1 is not a sample, "
        "skipped: 'Active 2*1g.5gb + 2g.10gb'"
    ]
    (s,) = rows(r, "gpu_samples")  # one GPU row, not one per instance
    # power differs per instance in this capture (116.043, 116.043, 116.163): the lowest
    # GI id's (5) is kept, never the sum (348.249)
    assert (
        s["power_w"] == 116.163 and s["temp_c"] == 37 and s["energy_j"] == pytest.approx(57585.599)
    )
    assert s["util_pct"] is None and s["mem_used_bytes"] is None
    slices = by(rows(r, "slices"), "slice_id")
    assert {k: (v["profile"], v["fraction"]) for k, v in slices.items()} == {
        f"{A100_RUNAI}/gi7": ("1g.5gb", pytest.approx(1 / 7)),
        f"{A100_RUNAI}/gi9": ("1g.5gb", pytest.approx(1 / 7)),
        f"{A100_RUNAI}/gi5": ("2g.10gb", pytest.approx(2 / 7)),
    }
    ss = by(rows(r, "slice_samples"), "slice_id")
    assert ss[f"{A100_RUNAI}/gi9"]["util_pct"] == pytest.approx(99.9917)
    assert ss[f"{A100_RUNAI}/gi9"]["mem_used_bytes"] == 4384 * MIB
    assert ss[f"{A100_RUNAI}/gi9"]["mem_total_bytes"] == (4384 + 480) * MIB
    assert ss[f"{A100_RUNAI}/gi5"]["mem_total_bytes"] == (153 + 9702) * MIB
    assert rows(r, "assignments") == []  # namespace="" everywhere


def test_mig_four_instances():
    path = upstream("dcgm-exporter", "runai-a100-mig", "a100-mig-4-active-workloads.txt")
    (snap,), (r,) = mapped(path)
    uuid = "GPU-473571f2-fb37-ef7e-50fe-9885b74a23cd"
    assert sorted(rows(r, "slices"), key=lambda s: s["slice_id"]) == sorted(
        (
            {
                "slice_id": f"{uuid}/gi{i}",
                "gpu_uuid": uuid,
                "kind": "mig",
                "profile": p,
                "fraction": pytest.approx(f),
                "mem_total_bytes": t * MIB,
            }
            for i, p, f, t in (
                (5, "2g.10gb", 2 / 7, 9843 + 13),
                (7, "1g.5gb", 1 / 7, 4857 + 6),
                (8, "1g.5gb", 1 / 7, 480 + 4384),
                (9, "1g.5gb", 1 / 7, 4857 + 6),
            )
        ),
        key=lambda s: s["slice_id"],
    )
    (s,) = rows(r, "gpu_samples")
    assert s["power_w"] == 112.252 and s["gpu_uuid"] == uuid
    assert by(rows(r, "slice_samples"), "slice_id")[f"{uuid}/gi8"]["util_pct"] == pytest.approx(
        40.8493
    )
    assert rows(r, "hosts")[0]["host"] == "nvidia-dcgm-exporter-tl46n"


def test_mig_enabled_without_instances_leaves_mig_mode_unknown():
    path = upstream("dcgm-exporter", "runai-a100-mig", "a100-mig-enabled-no-instances.txt")
    (snap,), (r,) = mapped(path)
    (g,) = rows(r, "gpus")
    assert g["gpu_uuid"] == A100_RUNAI and g["mig_mode"] is None  # no GPU_UTIL, no instances
    (s,) = rows(r, "gpu_samples")
    assert s["power_w"] == 75.96 and s["util_pct"] is None and s["mem_used_bytes"] is None
    assert rows(r, "slices") == []


def test_mig_disabled_two_scrapes_agree():
    path = upstream("dcgm-exporter", "runai-a100-mig", "a100-mig-disabled.txt")
    snaps, results = mapped(path)
    assert [len(s) for s in snaps] == [23, 23]
    a, b = (rows(r, "gpu_samples")[0] for r in results)
    assert a == b
    assert a["power_w"] == 45.999 and a["sm_clock_mhz"] == 210 and a["mem_used_bytes"] == 0
    assert a["mem_total_bytes"] == 40384 * MIB
    assert rows(results[0], "gpus")[0]["mig_mode"] is False


def test_t4_pod_labels_give_gpu0_its_tenant():
    path = upstream("dcgm-exporter", "runai-a100-mig", "t4-2gpu-k8s-pod-labels.txt")
    (snap,), (r,) = mapped(path)
    assert len(snap) == 38
    assert [g["gpu_uuid"] for g in rows(r, "gpus")] == [
        "GPU-7a2e92f2-be71-d37e-a744-541600ffc722",
        "GPU-5f587dd4-6505-0873-c6db-8324dbfe5ba9",
    ]
    (a,) = rows(r, "assignments")
    assert (a["tenant"], a["gpu_uuid"]) == (
        "runai-reservation",
        "GPU-7a2e92f2-be71-d37e-a744-541600ffc722",
    )
    s = rows(r, "gpu_samples")
    assert [x["power_w"] for x in s] == [28.722, 17.035]
    assert [x["mem_used_bytes"] for x in s] == [128 * MIB, 5 * MIB]


def test_configured_tenant_mapping_overrides_namespace():
    from collectors.dcgm_map import TenantRules

    path = upstream("dcgm-exporter", "runai-a100-mig", "t4-2gpu-k8s-pod-labels.txt")
    rules = TenantRules(
        by_namespace={"runai-reservation": "acme"},
        by_target={"GPU-5f587dd4-6505-0873-c6db-8324dbfe5ba9": "orbital"},
    )
    _, (r,) = mapped(path, tenants=rules)
    assert sorted((a["tenant"], a["gpu_uuid"][:12]) for a in rows(r, "assignments")) == [
        ("acme", "GPU-7a2e92f2"),
        ("orbital", "GPU-5f587dd4"),
    ]


@pytest.mark.parametrize("name", ["default-counters.csv", "dcp-metrics-included.csv"])
def test_every_counter_the_exporter_ships_is_mapped_or_dropped_with_a_reason(name):
    """etc/*.csv are the exporter's counter lists, not scrapes: each enabled field must be
    read into a column, an event or a link row, or be named in NO_COLUMN with its reason."""
    path = upstream("dcgm-exporter", "etc", name)
    fields = []
    for row in csv.reader(path.read_text().splitlines()):
        if not row or row[0].strip().startswith("#") or len(row) < 2:
            continue
        fields.append((row[0].strip(), row[1].strip()))
    assert len(fields) >= 25
    known = set(_FIELD_INDEX) | set(XID_FIELDS) | set(NVLINK_NAMES) | set(NO_COLUMN)
    unaccounted = [f for f, kind in fields if kind != "label" and f not in known]
    assert unaccounted == []
    assert ("DCGM_FI_DRIVER_VERSION", "label") in fields  # read as the hosts.driver_version label


def test_mig_fraction_by_model():
    assert mig_fraction("1g.24gb", "NVIDIA RTX PRO 6000 Blackwell Server Edition") == 0.25
    assert mig_fraction("3g.40gb", "NVIDIA A100-SXM4-80GB") == pytest.approx(3 / 7)
    assert mig_fraction("1g.6gb", "NVIDIA A30") == 0.25
    assert mig_fraction("bogus", "NVIDIA A30") is None
