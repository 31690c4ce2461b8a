"""DCGM label mapping rules beyond the real samples: 4.6 names, hostname spellings,
exporter namespaces, assignment changes, Xid events from the simulated exporter."""

from __future__ import annotations

import pytest

from collectors.dcgm_map import DcgmMapper, TenantRules
from collectors.promtext.parse import parse_exposition
from collectors.sim.exporters import SimExporters
from collectors.sim.model import SimModel
from tests.simfleet_truth import fault_start

T0 = 1_790_000_000.0
MIB = 1 << 20
BLANK = "2147483632"  # DCGM int32 blank: the series stays, its value is no reading


def rows(result, table):
    return [r for b in result.batches if b.table == table for r in b.data.to_pylist()]


def test_dcgm_4_6_names_and_their_units():
    lab = 'gpu="1",UUID="GPU-n",hostname="node-a"'  # lowercase hostname (exporter main branch)
    text = "".join(
        f"{n}{{{lab}}} {v}\n"
        for n, v in (
            ("DCGM_FI_DEV_GPU_UTIL_RATIO", 0.42),
            ("DCGM_FI_DEV_MEMORY_UTIL_RATIO", 0.1),
            ("DCGM_FI_DEV_BOARD_POWER_WATTS", 512.5),
            ("DCGM_FI_DEV_GPU_TEMP_CELSIUS", 71),
            ("DCGM_FI_DEV_MEMORY_TEMP_CELSIUS", 80),
            ("DCGM_FI_DEV_SM_CLOCK_HERTZ", 1.98e9),
            ("DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL", 123456.0),
            ("DCGM_FI_DEV_FB_USED_BYTES", 3 * MIB),
            ("DCGM_FI_DEV_FB_FREE_BYTES", 5 * MIB),
            ("DCGM_FI_DEV_XID_ERROR", 13),
        )
    )
    r = DcgmMapper("x").map(parse_exposition(text, "x", now=T0), T0)
    (s,) = rows(r, "gpu_samples")
    assert s["host"] == "node-a" and s["gpu_uuid"] == "GPU-n"
    assert s["util_pct"] == pytest.approx(42.0) and s["mem_util_pct"] == pytest.approx(10.0)
    assert (s["power_w"], s["temp_c"], s["mem_temp_c"]) == (512.5, 71, 80)
    assert s["sm_clock_mhz"] == pytest.approx(1980.0) and s["energy_j"] == 123456.0
    assert (s["mem_used_bytes"], s["mem_total_bytes"]) == (3 * MIB, 8 * MIB)
    (e,) = rows(r, "events")
    assert (e["kind"], e["code"], e["gpu_uuid"]) == ("xid", 13, "GPU-n")


def test_classic_name_wins_over_the_4_6_name():
    lab = 'gpu="0",UUID="GPU-c",Hostname="h"'
    text = f"DCGM_FI_DEV_GPU_UTIL{{{lab}}} 30\nDCGM_FI_DEV_GPU_UTIL_RATIO{{{lab}}} 0.99\n"
    (s,) = rows(DcgmMapper("x").map(parse_exposition(text, "x", now=T0), T0), "gpu_samples")
    assert s["util_pct"] == 30


def test_host_falls_back_to_the_instance_without_port():
    text = 'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-i"} 50\n'
    snap = parse_exposition(text, "x", now=T0, extra_labels={"instance": "10.0.0.7:9400"})
    (s,) = rows(DcgmMapper("x").map(snap, T0), "gpu_samples")
    assert s["host"] == "10.0.0.7"


def test_no_host_or_gpu_is_skipped_with_a_reason():
    r = DcgmMapper("x").map(parse_exposition("DCGM_FI_DEV_GPU_TEMP 50\n", "x", now=T0), T0)
    assert r.batches == [] or rows(r, "gpu_samples") == []
    assert r.skipped == ["x: DCGM_FI_DEV_GPU_TEMP: no host or GPU label, sample skipped"]


@pytest.mark.parametrize(
    ("labels", "tenant"),
    [
        ('namespace="gpu-operator",pod="nvidia-dcgm-exporter-abc"', None),
        ('namespace="monitoring",pod="x"', None),
        ('namespace="ml-prod",pod="dcgm-exporter-x"', None),
        ('namespace="gpu-operator",exported_namespace="ml-prod",pod="p"', "ml-prod"),
        ('namespace="ml-prod",pod="trainer-0"', "ml-prod"),
        ('namespace="",pod=""', None),
    ],
)
def test_tenant_comes_from_the_workload_namespace_only(labels, tenant):
    text = f'DCGM_FI_DEV_GPU_TEMP{{gpu="0",UUID="GPU-t",Hostname="h",{labels}}} 50\n'
    r = DcgmMapper("x").map(parse_exposition(text, "x", now=T0), T0)
    assert [a["tenant"] for a in rows(r, "assignments")] == ([tenant] if tenant else [])


def test_assignments_are_written_on_change_only():
    m = DcgmMapper("x", TenantRules())

    def text(ns):
        return f'DCGM_FI_DEV_GPU_TEMP{{gpu="0",UUID="GPU-a",Hostname="h",namespace="{ns}"}} 50\n'

    first = rows(m.map(parse_exposition(text("team-a"), "x", now=T0), T0), "assignments")
    assert [(a["tenant"], a["valid_to"]) for a in first] == [("team-a", None)]
    assert (
        rows(m.map(parse_exposition(text("team-a"), "x", now=T0 + 1), T0 + 1), "assignments") == []
    )
    moved = rows(m.map(parse_exposition(text("team-b"), "x", now=T0 + 2), T0 + 2), "assignments")
    assert sorted(
        (a["tenant"], a["valid_from"] == first[0]["valid_from"], a["valid_to"] is None)
        for a in moved
    ) == [("team-a", True, False), ("team-b", False, True)]


def test_inventory_is_rewritten_only_on_change():
    m = DcgmMapper("x", describe_every_s=300)
    text = 'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-d",Hostname="h",modelName="A"} 50\n'
    assert len(rows(m.map(parse_exposition(text, "x", now=T0), T0), "gpus")) == 1
    assert rows(m.map(parse_exposition(text, "x", now=T0 + 1), T0 + 1), "gpus") == []
    changed = text.replace('modelName="A"', 'modelName="B"')
    assert [
        g["name"] for g in rows(m.map(parse_exposition(changed, "x", now=T0 + 2), T0 + 2), "gpus")
    ] == ["B"]
    assert len(rows(m.map(parse_exposition(changed, "x", now=T0 + 400), T0 + 400), "gpus")) == 1


def test_xid_from_the_simulated_exporter_is_one_event():
    model = SimModel(start=T0)  # ecc_dbe on hgx-03-n4 GPU 6: Xid 48
    exp = SimExporters(model, ["hgx-03-n4"])
    (dcgm,) = [t for t in exp.targets() if t.kind == "dcgm"]
    m = DcgmMapper("sim")
    events = []
    at = int(T0) + fault_start("ecc_dbe")
    for t in range(at - 5, at + 6):
        exp.advance(t)
        r = m.map(parse_exposition(exp.render(dcgm.path), "sim", extra_labels=dcgm.labels), t)
        events += rows(r, "events")
    f = model.fleet
    g = next(
        i
        for i in range(f.n_gpus)
        if f.host[f.gpu_host_idx[i]] == "hgx-03-n4" and f.gpu_index[i] == 6
    )
    assert [(e["code"], e["gpu_uuid"], e["host"]) for e in events] == [
        (48, f.gpu_uuid[g], "hgx-03-n4")
    ]


def test_inventory_and_hosts_follow_values_while_the_plan_is_reused():
    """With one layout (the plan reused), only rows whose values changed are looked at:
    a GPU whose framebuffer total or GPU_UTIL presence changes still gets its row."""

    def snap(free1: float, util1: str, at: float):
        text = "".join(
            f'{n}{{gpu="{g}",UUID="GPU-{g}",Hostname="h{g // 2}",modelName="NVIDIA H100"}} {v}\n'
            for g in range(4)
            for n, v in (
                ("DCGM_FI_DEV_GPU_UTIL", util1 if g == 1 else "50"),
                ("DCGM_FI_DEV_FB_USED", 1000),
                ("DCGM_FI_DEV_FB_FREE", free1 if g == 1 else 2000),
            )
        )
        s = parse_exposition(text, "x", now=at)
        s.layout = layout  # the same series: the mapper's plan is kept
        return s

    layout = object()
    m = DcgmMapper("x", describe_every_s=300)
    first = m.map(snap(2000, "50", T0), T0)
    assert [g["gpu_uuid"] for g in rows(first, "gpus")] == [f"GPU-{g}" for g in range(4)]
    assert m.map(snap(2000, "50", T0 + 5), T0 + 5).batches[-1].table == "hosts"
    assert rows(m.map(snap(2000, "50", T0 + 5), T0 + 5), "gpus") == []
    (g1,) = rows(m.map(snap(3000, "50", T0 + 10), T0 + 10), "gpus")
    assert (g1["gpu_uuid"], g1["mem_total_bytes"]) == ("GPU-1", 4000 * MIB)
    (g1,) = rows(m.map(snap(3000, BLANK, T0 + 15), T0 + 15), "gpus")  # GPU_UTIL blank now
    assert (g1["gpu_uuid"], g1["mig_mode"]) == ("GPU-1", None)
    hosts = rows(m.map(snap(3000, BLANK, T0 + 20), T0 + 20), "hosts")
    assert [(h["host"], h["last_seen"].timestamp()) for h in hosts] == [
        ("h0", T0 + 20),
        ("h1", T0 + 20),
    ]
    assert len(rows(m.map(snap(3000, BLANK, T0 + 400), T0 + 400), "gpus")) == 4  # refresh
