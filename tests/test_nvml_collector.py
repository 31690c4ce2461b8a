"""The NVML collector against the fake NVML: values, MIG, NotSupported, Xid 79, old drivers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from collectors.nvml.collector import GPU_FIELDS, NvmlCollector
from collectors.nvml.fake import FakeNvml, SimStates
from collectors.nvml.library import (
    NvmlUnavailable,
    container_of,
    open_library,
    tenant_of,
)
from collectors.sim.faults import Fault
from collectors.sim.model import SimModel

START = 1_764_000_000.0


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def states() -> SimStates:
    return SimStates(SimModel(start=START, faults=(Fault("xid79", "hgx-03-n1:2", 30, 600),)))


def collector(states: SimStates, host: str, clock: Clock, **kw) -> NvmlCollector:
    lib = open_library(
        "fake",
        host=host,
        states=states,
        clock=clock,
        old_driver=kw.pop("old_driver", False),
        gpm=kw.pop("gpm", True),
    )
    return NvmlCollector(lib, clock=clock, events=kw.pop("events", False), **kw)


def host_gpus(model: SimModel, host: str) -> list[int]:
    f = model.fleet
    h = f.host.index(host)
    return sorted(np.flatnonzero(f.gpu_host_idx == h), key=lambda g: f.gpu_index[g])


def test_whole_gpu_values_follow_the_simulated_fleet(states):
    clock = Clock(START + 10)
    c = collector(states, "hgx-03-n1", clock)
    p = c.poll()
    st = states.model.state(START + 10)
    gpus = host_gpus(states.model, "hgx-03-n1")
    assert p.gpu["uuid"] == [states.model.fleet.gpu_uuid[g] for g in gpus]
    assert set(p.gpu) == set(GPU_FIELDS)
    for i, g in enumerate(gpus):
        assert p.gpu["power_w"][i] == pytest.approx(st.gpu_power_w[g], abs=0.001)
        assert p.gpu["temp_c"][i] == round(st.gpu_temp_c[g])
        assert p.gpu["mem_used_bytes"][i] == int(st.gpu_mem_used_bytes[g])
        assert p.gpu["util_pct"][i] == round(st.gpu_util_pct[g])
        assert p.gpu["pcie_rx_bytes_per_s"][i] == pytest.approx(
            st.gpu_pcie_rx_bytes_per_s[g], rel=1e-3
        )
        assert p.gpu["energy_j"][i] == pytest.approx(st.gpu_energy_j[g], abs=0.001)
        assert p.gpu["mem_reserved_bytes"][i] > 0  # memory v2 on a current driver
    c.close()


def test_nvlink_per_link_rates_from_counters(states):
    clock = Clock(START + 10)
    c = collector(states, "hgx-03-n1", clock)
    first = c.poll()
    assert first.gpu["nvlink_tx_bytes_per_s"][0] == [None] * 18  # no previous counter yet
    clock.t += 1.0
    second = c.poll()
    st = states.model.state(START + 11)
    f = states.model.fleet
    g0 = host_gpus(states.model, "hgx-03-n1")[0]
    row = next(i for i in range(len(f.link_port)) if f.link_gpu_idx[i] == g0)
    per_link = second.gpu["nvlink_tx_bytes_per_s"][0]
    assert len(per_link) == 18
    assert sum(per_link) == pytest.approx(st.link_tx_bytes_per_s[row], rel=1e-3)
    assert second.gpu["nvlink_up"][0] == [True] * 18
    assert second.gpu["nvlink_errors"][0] == [0] * 18
    c.close()


def test_mig_gpu_reports_per_instance_memory_and_gpm_activity(states):
    clock = Clock(START + 10)
    c = collector(states, "rtx-07-n1", clock)
    f = states.model.fleet
    first = c.poll()
    assert all(u is None for u in first.gpu["util_pct"])  # NotSupported on a MIG GPU
    assert first.slice["util_pct"] == [None] * len(first.slice["id"])  # GPM needs two samples
    expected_ids = [
        s for s in f.slice_id if s.rsplit("/", 1)[0] in first.gpu["uuid"] and "/gi" in s
    ]
    assert sorted(first.slice["id"]) == sorted(expected_ids)
    clock.t += 1.0
    second = c.poll()
    st = states.model.state(clock.t)
    for sid, util, used, total in zip(
        second.slice["id"],
        second.slice["util_pct"],
        second.slice["mem_used_bytes"],
        second.slice["mem_total_bytes"],
        strict=True,
    ):
        s = f.slice_id.index(sid)
        assert util == pytest.approx(st.slice_util_pct[s])
        assert used == int(st.slice_mem_used_bytes[s])
        assert total == int(st.slice_mem_total_bytes[s])
    inv = c.inventory()
    assert inv["gpus"]["mig_mode"] == [True] * 8
    assert {p for p in inv["slices"]["profile"]} <= {"1g.24gb", "2g.48gb"}
    c.close()


def test_gpm_unsupported_leaves_slice_activity_null(states):
    clock = Clock(START + 10)
    c = collector(states, "rtx-07-n1", clock, gpm=False)
    c.poll()
    clock.t += 1
    p = c.poll()
    assert p.slice["id"] and all(u is None for u in p.slice["util_pct"])
    assert all(m is not None for m in p.slice["mem_used_bytes"])
    c.close()


def test_not_supported_fields_are_null_and_not_asked_again(states):
    clock = Clock(START + 10)
    c = collector(states, "rtx-07-n3", clock)  # RTX PRO 6000: GDDR, no NVLink
    p = c.poll()
    for name in (
        "mem_temp_c",
        "ecc_sbe_total",
        "ecc_dbe_total",
        "remapped_rows_correctable",
        "nvlink_tx_bytes_per_s",
    ):
        assert p.gpu[name] == [None] * 8, name
    assert all(v is not None for v in p.gpu["power_w"])
    fake: FakeNvml = c.nvml
    before = fake.calls
    c.poll()
    second = fake.calls - before
    c2 = collector(states, "rtx-07-n3", clock)
    b2 = c2.nvml.calls
    c2.poll()
    assert second < c2.nvml.calls - b2  # the first poll also probed what is unsupported
    c.close()
    c2.close()


def test_processes_carry_cgroup_container_and_tenant(states):
    clock = Clock(START + 10)
    c = collector(states, "rtx-07-n1", clock, processes_every=1)
    p = c.poll()
    assert p.proc is not None and len(p.proc["pid"]) == len(p.slice["id"])
    assert set(p.proc["slice_id"]) == set(p.slice["id"])  # listed through MIG device handles
    assert set(p.proc["tenant_guess"]) == {"lumen-video"}
    assert all(len(cid) == 12 for cid in p.proc["container"])
    c.close()
    c = collector(states, "hgx-03-n1", clock, processes_every=3)
    polls = [c.poll() for _ in range(4)]
    assert [p.proc is not None for p in polls] == [True, False, False, True]
    assert set(polls[0].proc["tenant_guess"]) == {"nimbus-search"}
    c.close()


def test_xid79_gpu_off_the_bus_is_skipped_and_its_event_reported(states):
    clock = Clock(START + 25)
    c = collector(states, "hgx-03-n1", clock, events=True)
    assert len(c.poll().gpu["uuid"]) == 8
    lost_uuid = states.model.fleet.gpu_uuid[host_gpus(states.model, "hgx-03-n1")[2]]
    clock.t = START + 31
    deadline = time.monotonic() + 5
    xids = {"ts": [], "gpu_uuid": [], "code": []}
    while time.monotonic() < deadline and not xids["code"]:
        time.sleep(0.1)
        p = c.poll()
        for k in xids:
            xids[k] += p.xid[k]
    assert p.lost == [lost_uuid]
    assert lost_uuid not in p.gpu["uuid"] and len(p.gpu["uuid"]) == 7
    assert xids["code"] == [79] and xids["gpu_uuid"] == [lost_uuid]
    assert xids["ts"] == [START + 30]
    c.close()


def test_old_driver_falls_back_and_says_what_it_lacks(states):
    clock = Clock(START + 10)
    c = collector(states, "hgx-03-n1", clock, old_driver=True, processes_every=1)
    p = c.poll()
    assert p.gpu["mem_reserved_bytes"] == [None] * 8  # memory v1 has no "reserved"
    assert all(m is not None for m in p.gpu["mem_used_bytes"])
    assert all(r is not None for r in p.gpu["throttle_reasons"])  # ClocksThrottleReasons
    assert p.proc == {k: [] for k in p.proc}  # neither v3 nor v2 process call exists
    assert any("ComputeRunningProcesses_v2" in n for n in c.notes)
    before = c.nvml.calls
    c.poll()
    assert c.nvml.calls - before < 8 * 60  # missing functions are not retried per GPU
    c.close()


def test_handles_are_looked_up_once(states):
    clock = Clock(START + 10)
    lib = open_library("fake", host="hgx-03-n1", states=states, clock=clock)
    counted = {"n": 0}
    real = lib.nvml.nvmlDeviceGetHandleByIndex

    def counting(i):
        counted["n"] += 1
        return real(i)

    lib.nvml.nvmlDeviceGetHandleByIndex = counting
    c = NvmlCollector(lib, clock=clock, events=False)
    for _ in range(3):
        c.poll()
    assert counted["n"] == 8
    c.close()


def test_real_library_absent_is_one_clear_error():
    try:
        lib = open_library("real")
    except NvmlUnavailable as exc:
        assert "NVML" in str(exc)
        return
    lib.nvml.nvmlShutdown()
    pytest.skip("this machine has a working NVML")


def test_library_factory_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="unknown NVML library"):
        open_library("cuda")
    with pytest.raises(ValueError, match="host"):
        open_library("fake")


@pytest.mark.parametrize(
    ("cgroup", "container", "tenant"),
    [
        (
            "0::/tenants.slice/tenant-acme-llm.slice/cri-containerd-" + "ab" * 32 + ".scope",
            "ab" * 6,
            "acme-llm",
        ),
        ("0::/system.slice/docker-0123456789abcdef0123.scope", "0123456789ab", None),
        (
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/"
            "crio-" + "f" * 64 + ".scope",
            "f" * 12,
            None,
        ),
        ("0::/user.slice/user-1000.slice/session-2.scope", None, None),
        (None, None, None),
    ],
)
def test_cgroup_parsing(cgroup, container, tenant):
    assert container_of(cgroup) == container
    assert tenant_of(cgroup) == tenant
