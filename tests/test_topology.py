"""Placement and contracted tenancy from the operator's files, applied to every write:
topology file (TOML, CSV) > what the batch says (agent report, labels) > host-name
pattern; assignments by GPU uuid, host + index, or slice; latency targets per endpoint,
per tenant and by default; the agent's placement options and process tenants."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import pytest

from collectors.contracts import (
    ContractsError,
    LatencyTargets,
    Targets,
    Tenancy,
    load_assignments,
    parse_latency_targets,
)
from collectors.nvml.batches import ReportBatcher
from collectors.nvml.report import ReportError, decode
from collectors.topology import Topology, TopologyError, build_topology, load_topology_file
from fleettui.agent import AgentOptions
from fleettui.config import ConfigError, load_config
from fleettui.daemon import build_enrichment_from
from fleettui.runtime import Runtime
from storage.batch import make_batch
from storage.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def hosts_batch(**cols):
    return make_batch("hosts", cols)


def placed(batch) -> dict[str, dict]:
    return {r["host"]: r for r in batch.data.to_pylist()}


def test_example_topology_file_loads_and_file_beats_batch_beats_pattern():
    by_host = load_topology_file(FIXTURES / "topology.example.toml")
    assert by_host["hgx-01-n1"] == {
        "cluster": "east",
        "rack": "hgx-01",
        "rack_slot": 1,
        "nvlink_domain": "hgx-01-n1",
        "model": "HGX H100 8-GPU",
    }
    topo = Topology(
        by_host,
        build_topology("", r"(?P<cluster>[a-z]+)-r(?P<rack>\d+)-n(?P<slot>\d+)", "test").pattern,
    )
    out = placed(
        topo.place(
            hosts_batch(
                host=["hgx-01-n1", "west-r07-n3", "west-r07-n4", "lonely"],
                rack=["agent-says", "agent-says", None, None],
                cluster=[None, None, None, None],
            )
        )
    )
    assert out["hgx-01-n1"]["rack"] == "hgx-01"  # the file wins over the agent
    assert out["west-r07-n3"]["rack"] == "agent-says"  # the agent wins over the pattern
    assert (out["west-r07-n3"]["cluster"], out["west-r07-n3"]["rack_slot"]) == ("west", 3)
    assert (out["west-r07-n4"]["rack"], out["west-r07-n4"]["rack_slot"]) == ("07", 4)
    assert out["lonely"]["rack"] is None and out["lonely"]["cluster"] is None
    other = make_batch("gpus", {"gpu_uuid": ["GPU-1"], "host": ["hgx-01-n1"]})
    assert topo.place(other) is other


def test_csv_topology_and_errors_name_file_and_line(tmp_path):
    f = tmp_path / "topo.csv"
    f.write_text("# placement\nhost,rack,rack_slot\nn1,r1,1\nn2,r1,\n")
    assert load_topology_file(f) == {
        "n1": {"rack": "r1", "rack_slot": 1},
        "n2": {"rack": "r1", "rack_slot": None},
    }
    cases = {
        "host,rack,rack_slot\nn1,r1,x\n": f"{f}:2: rack_slot must be a whole number",
        "host,shelf\nn1,r1\n": f"{f}:1: header must name 'host'",
        "host,rack\nn1,r1,extra\n": f"{f}:2: 3 fields, the header has 2",
        "host,rack\nn1,r1\n\nn1,r2\n": f"{f}:4: host 'n1' listed twice",
    }
    for text, msg in cases.items():
        f.write_text(text)
        with pytest.raises(TopologyError) as e:
            load_topology_file(f)
        assert str(e.value).startswith(msg), str(e.value)
    t = tmp_path / "topo.toml"
    t.write_text('[hosts."n1"]\nrack = "r1"\nshelf = 2\n')
    with pytest.raises(TopologyError, match=r"hosts\.'n1': unknown key 'shelf'"):
        load_topology_file(t)
    with pytest.raises(TopologyError, match="named groups"):
        build_topology("", r"(\w+)-(\d+)", "fleet.toml [topology]")
    with pytest.raises(TopologyError, match="no such topology file"):
        load_topology_file(tmp_path / "absent.toml")


def test_config_sections_build_an_enrichment_and_bad_ones_fail_in_one_line(tmp_path):
    (tmp_path / "topo.csv").write_text("host,rack\nn1,r1\n")
    (tmp_path / "asg.csv").write_text("tenant,host,gpu_index,since\nacme,n1,0,2026-01-01\n")
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        '[[sources]]\nkind = "sim"\n[topology]\nfile = "topo.csv"\n'
        '[tenancy]\nassignments = "asg.csv"\n[latency_targets]\nitl_p99_ms = 50\n'
    )
    e = build_enrichment_from(load_config(cfg))
    assert e.topology.by_host == {"n1": {"rack": "r1"}}
    assert e.tenancy.contracts[0].host == "n1" and e.tenancy.targets.default.itl_p99_ms == 50
    cfg.write_text('[[sources]]\nkind = "sim"\n[topology]\nfile = "topo.csv"\nfiel = 1\n')
    with pytest.raises(ConfigError, match=r"\[topology\]: unknown key 'fiel'"):
        build_enrichment_from(load_config(cfg))
    (tmp_path / "asg.csv").write_text("tenant,gpu_uuid,since\nacme,GPU-1,yesterday\n")
    cfg.write_text('[[sources]]\nkind = "sim"\n[tenancy]\nassignments = "asg.csv"\n')
    with pytest.raises(ConfigError, match=r"asg.csv:2: since: not an ISO 8601 time"):
        build_enrichment_from(load_config(cfg))


def test_assignments_file_rules(tmp_path):
    f = tmp_path / "a.toml"
    f.write_text(
        '[tenants.acme]\ndisplay_name = "Acme"\ntier = "reserved"\n'
        '[[assignments]]\ntenant = "acme"\ngpu_uuid = "GPU-1"\n'
        "since = 2026-01-01T00:00:00Z\n"
        '[[assignments]]\ntenant = "beta"\nslice_id = "GPU-2/gi1"\nfraction = 0.25\n'
        'since = "2026-01-02T00:00:00+01:00"\nuntil = 2026-02-01T00:00:00Z\n'
    )
    contracts, tenants = load_assignments(f)
    assert tenants == {"acme": {"display_name": "Acme", "tier": "reserved"}}
    assert [(c.tenant, c.gpu_uuid, c.slice_id, c.fraction) for c in contracts] == [
        ("acme", "GPU-1", None, 1.0),
        ("beta", "GPU-2", "GPU-2/gi1", 0.25),
    ]
    assert contracts[1].since == datetime(2026, 1, 1, 23, 0)  # stored as naive UTC
    bad = {
        "tenant,gpu_uuid,host,gpu_index,since\nacme,GPU-1,n1,0,2026-01-01\n": "one way",
        "tenant,slice_id,since\nacme,GPU-1/gi1,2026-01-01\n": "needs its fraction",
        "tenant,gpu_uuid,fraction,since\nacme,GPU-1,1.5,2026-01-01\n": "fraction must be in",
        "tenant,gpu_uuid,since,until\nacme,GPU-1,2026-01-02,2026-01-01\n": "until must be after",
        "tenant,gpu_uuid\nacme,GPU-1\n": "since is required",
    }
    c = tmp_path / "a.csv"
    for text, msg in bad.items():
        c.write_text(text)
        with pytest.raises(ContractsError, match=msg) as e:
            load_assignments(c)
        assert str(e.value).startswith(f"{c}:2: ")


def test_tenancy_resolves_host_index_and_fills_endpoint_targets():
    t = Tenancy(
        targets=parse_latency_targets(
            {
                "itl_p99_ms": 50,
                "ttft_p99_ms": 2000,
                "tenants": {"acme": {"itl_p99_ms": 30}},
                "endpoints": {"acme-chat": {"itl_p99_ms": 20, "tenant": "acme", "model": "m"}},
            },
            "fleet.toml [latency_targets]",
        )
    )
    out = t.enrich(
        [
            make_batch(
                "endpoints",
                {
                    "endpoint": ["acme-chat", "acme-batch", "other", "given"],
                    "tenant": [None, "acme", None, None],
                    "itl_target_ms": [None, None, None, 70.0],
                },
            )
        ]
    )
    rows = {r["endpoint"]: r for r in out[0].data.to_pylist()}
    assert (rows["acme-chat"]["tenant"], rows["acme-chat"]["model"]) == ("acme", "m")
    assert [rows[e]["itl_target_ms"] for e in ("acme-chat", "acme-batch", "other", "given")] == [
        20.0,
        30.0,
        50.0,
        70.0,
    ]
    assert {r["ttft_target_ms"] for r in rows.values()} == {2000.0}
    with pytest.raises(ContractsError, match=r"tenants.acme: itl_p99_ms must be a number"):
        parse_latency_targets({"tenants": {"acme": {"itl_p99_ms": "fast"}}}, "x")

    f_contracts, _ = load_assignments_text("tenant,host,gpu_index,since\nacme,n1,1,2026-01-01\n")
    t2 = Tenancy(f_contracts, {}, LatencyTargets(Targets()))
    assert t2.first_batches({}, None)[0].table == "tenants"
    assert [b.table for b in t2.first_batches({}, None)] == ["tenants"]  # GPU not known yet
    gpus = make_batch(
        "gpus", {"gpu_uuid": ["GPU-a", "GPU-b"], "host": ["n1", "n1"], "gpu_index": [0, 1]}
    )
    out = t2.enrich([gpus])
    asg = [b for b in out if b.table == "assignments"]
    assert [(r["tenant"], r["gpu_uuid"], r["fraction"]) for r in asg[0].data.to_pylist()] == [
        ("acme", "GPU-b", 1.0)
    ]
    assert [b.table for b in t2.enrich([gpus])] == ["gpus"]  # resolved once


def load_assignments_text(text: str):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write(text)
    try:
        return load_assignments(f.name)
    finally:
        Path(f.name).unlink()


async def test_runtime_applies_enrichment_to_stored_and_new_rows(tmp_path):
    (tmp_path / "topo.toml").write_text('[hosts."n1"]\nrack = "r1"\nrack_slot = 2\n')
    (tmp_path / "asg.csv").write_text("tenant,host,gpu_index,since\nacme,n1,0,2026-01-01\n")
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        '[[sources]]\nkind = "sim"\n[topology]\nfile = "topo.toml"\n'
        'host_pattern = "(?P<rack>[a-z]+)-(?P<slot>[0-9]+)"\n'
        '[tenancy]\nassignments = "asg.csv"\n'
        "[latency_targets]\nitl_p99_ms = 40\n"
    )
    store = Store.open(":memory:")
    # already stored before the daemon starts: a host, its GPU, an endpoint
    store.write(
        [
            hosts_batch(host=["n1"]),
            make_batch("gpus", {"gpu_uuid": ["GPU-a"], "host": ["n1"], "gpu_index": [0]}),
            make_batch("endpoints", {"endpoint": ["ep"], "tenant": ["acme"]}),
        ]
    )
    runtime = Runtime(store, [], enrich=build_enrichment_from(load_config(cfg)))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.sleep(0.3)
    await runtime.sink([hosts_batch(host=["web-7"], rack=[None])])
    await asyncio.sleep(0.3)
    stop.set()
    await task
    con = store.cursor()
    assert con.execute("SELECT host, rack, rack_slot FROM hosts ORDER BY host").fetchall() == [
        ("n1", "r1", 2),
        ("web-7", "web", 7),
    ]
    assert con.execute(
        "SELECT tenant, gpu_uuid, fraction, valid_to FROM assignments"
    ).fetchall() == [("acme", "GPU-a", 1.0, None)]
    assert con.execute("SELECT endpoint, itl_target_ms FROM endpoints").fetchall() == [("ep", 40.0)]
    store.close()


def _report(place=None, proc=None, ts=1_764_000_000.0, seq=0) -> bytes:
    obj = {
        "v": 1,
        "host": "n1",
        "boot": "b",
        "seq": seq,
        "ts": ts,
        "gpu": {"uuid": ["GPU-a", "GPU-b"], "mem_total_bytes": [80, 80]},
        "slice": {"id": ["GPU-b/gi1"], "gpu": [1], "mem_total_bytes": [20]},
    }
    if place is not None:
        obj["place"] = place
    if proc is not None:
        obj["proc"] = proc
    return json.dumps(obj).encode()


def test_report_carries_placement_and_process_tenants_become_assignments():
    r = decode(_report(place={"cluster": "east", "rack": "r9", "rack_slot": 4, "extra": 1}))
    assert r.place == {"cluster": "east", "rack": "r9", "rack_slot": 4}
    assert decode(_report()).place is None  # v1 reports without it still decode
    with pytest.raises(ReportError, match="place.rack_slot"):
        decode(_report(place={"rack_slot": -1}))
    with pytest.raises(ReportError, match="place.rack: expected a string"):
        decode(_report(place={"rack": 7}))
    b = ReportBatcher()
    b.add(r, False)
    b.add(
        decode(
            _report(
                seq=1,
                proc={
                    "gpu": [0, 0, 1],
                    "slice_id": [None, None, "GPU-b/gi1"],
                    "pid": [1, 2, 3],
                    "used_mem_bytes": [10, 50, 5],
                    "tenant_guess": ["acme", "beta", "gamma"],
                },
            )
        ),
        False,
    )
    out = {x.table: x for x in b.take()}
    assert out["hosts"].data.to_pylist()[0]["rack"] == "r9"
    assert sorted(
        (a["tenant"], a["gpu_uuid"], a["slice_id"], a["fraction"], a["valid_to"])
        for a in out["assignments"].data.to_pylist()
    ) == [("beta", "GPU-a", None, 1.0, None), ("gamma", "GPU-b", "GPU-b/gi1", 0.25, None)]
    assert out["tenants"].data.column("tenant").to_pylist() == ["beta", "gamma"]
    # a report without a process list changes nothing; one without gamma closes its slice
    b.add(decode(_report(seq=2, ts=1_764_000_005.0)), False)
    assert "assignments" not in {x.table for x in b.take()}
    b.add(
        decode(
            _report(
                seq=3,
                ts=1_764_000_010.0,
                proc={"gpu": [0], "pid": [2], "used_mem_bytes": [50], "tenant_guess": ["beta"]},
            )
        ),
        False,
    )
    closed = {x.table: x for x in b.take()}["assignments"].data.to_pylist()
    assert [(a["tenant"], a["valid_to"]) for a in closed] == [
        ("gamma", datetime(2025, 11, 24, 16, 0, 10))
    ]


def test_agent_placement_options():
    o = AgentOptions(rack="r9", rack_slot=3)
    assert o.place == {"rack": "r9", "rack_slot": 3}
    assert AgentOptions().place is None
    with pytest.raises(ValueError, match="rack_slot"):
        AgentOptions(rack_slot=-2)


class QuietAgentSource:
    """A pull source that gathers nothing, named and labelled like the mqtt source."""

    name, row_source, interval_s = "mqtt", "nvml", 3600.0

    async def gather(self, now):
        from collectors.base import Gathered

        return Gathered()

    async def close(self) -> None:
        pass


async def test_a_restart_closes_what_collectors_guessed_but_not_contracts():
    from fleettui.enrich import Enrichment

    t0, t1 = datetime(2026, 1, 1), datetime(2026, 1, 2)
    store = Store.open(":memory:")
    store.write(
        [
            make_batch(
                "assignments",
                {
                    "tenant": ["guessed", "contracted", "other"],
                    "gpu_uuid": ["GPU-a", "GPU-b", "GPU-c"],
                    "fraction": [1.0, 1.0, 1.0],
                    "valid_from": [t0, t0, t0],
                    "source": ["nvml", "contract", "some-removed-source"],
                },
            )
        ]
    )
    runtime = Runtime(store, [QuietAgentSource()], enrich=Enrichment(), clock=lambda: t1)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await task
    rows = (
        store.cursor()
        .execute("SELECT tenant, valid_to FROM assignments ORDER BY tenant")
        .fetchall()
    )
    # the agent re-opens "guessed" from its next process list; a contract stays open;
    # rows of a source this daemon does not run are left as they are
    assert rows == [("contracted", None), ("guessed", t1), ("other", None)]
    store.close()
