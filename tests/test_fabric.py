"""Fabric: node_exporter InfiniBand counters -> rates/errors across resets; DCGM NVLink."""

from __future__ import annotations

import pytest

from collectors.fabric import FabricMapper, FabricRules
from collectors.promtext.parse import parse_exposition
from collectors.sim.exporters import SimExporters
from collectors.sim.model import SimModel
from tests.simfleet_truth import fault_start

T0 = 1_790_000_000.0


def ib_text(tx: float, rx: float, errs: float, state: int = 4, downs: float = 0) -> str:
    lab = 'device="mlx5_0",port="1"'
    return (
        f"node_infiniband_port_data_transmitted_bytes_total{{{lab}}} {tx}\n"
        f"node_infiniband_port_data_received_bytes_total{{{lab}}} {rx}\n"
        f"node_infiniband_port_errors_received_total{{{lab}}} {errs}\n"
        f"node_infiniband_link_downed_total{{{lab}}} {downs}\n"
        f"node_infiniband_state_id{{{lab}}} {state}\n"
        f"node_infiniband_rate_bytes_per_second{{{lab}}} 5e10\n"
    )


def snap(text: str, t: float, instance: str = "hgx-03-n1:9100"):
    return parse_exposition(text, "node", now=t, extra_labels={"instance": instance})


def links(r):
    return [row for b in r.batches if b.table == "link_samples" for row in b.data.to_pylist()]


def events(r):
    return [row for b in r.batches if b.table == "events" for row in b.data.to_pylist()]


def test_ib_counters_become_rates_and_interval_errors():
    m = FabricMapper("node")
    (first,) = links(m.map(snap(ib_text(1e9, 2e9, 3), T0)))
    assert (first["host"], first["kind"], first["port"]) == ("hgx-03-n1", "ib", "mlx5_0/1")
    assert first["tx_bytes_per_s"] is None and first["errors"] is None  # no interval yet
    assert first["link_up"] is True and first["line_rate_bytes_per_s"] == 5e10
    r = m.map(snap(ib_text(1e9 + 4e10, 2e9 + 2e10, 5), T0 + 2))
    (row,) = links(r)
    assert r.skipped == []
    assert row["tx_bytes_per_s"] == 2e10 and row["rx_bytes_per_s"] == 1e10 and row["errors"] == 2


def test_counter_reset_gives_null_and_a_reason_then_recovers():
    m = FabricMapper("node")
    m.map(snap(ib_text(5e12, 5e12, 10), T0))
    r = m.map(snap(ib_text(1e9, 2e9, 0, state=1, downs=1), T0 + 1))  # exporter/HCA restarted
    (row,) = links(r)
    assert row["tx_bytes_per_s"] is None and row["rx_bytes_per_s"] is None and row["errors"] is None
    assert row["link_up"] is False
    assert [(e["kind"], e["host"], e["detail"]) for e in events(r)] == [
        ("link", "hgx-03-n1", "mlx5_0/1: link down")
    ]
    assert len(r.skipped) == 3 and all("counter went backwards" in s for s in r.skipped)
    assert r.skipped[0].startswith("node: hgx-03-n1 mlx5_0/1 node_infiniband_port_data_transmitted")
    (row,) = links(m.map(snap(ib_text(3e9, 2e9, 0, downs=1), T0 + 2)))
    assert row["tx_bytes_per_s"] == 2e9 and row["errors"] == 0


def test_roce_hosts_by_pattern():
    m = FabricMapper("node", FabricRules(kind_by_host={"rtx-*": "roce"}))
    (row,) = links(m.map(snap(ib_text(1, 1, 0), T0, instance="rtx-07-n3:9100")))
    assert row["kind"] == "roce" and row["host"] == "rtx-07-n3"


def test_nvlink_from_dcgm_once_per_gpu_on_mig():
    base = 'gpu="2",UUID="GPU-x",Hostname="h1",GPU_I_PROFILE="1g.10gb"'
    text = "".join(
        f'DCGM_FI_PROF_NVLINK_TX_BYTES{{{base},GPU_I_ID="{gi}"}} {tx}\n'
        f'DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL{{{base},GPU_I_ID="{gi}"}} {err}\n'
        for gi, tx, err in ((3, 7e9, 40), (1, 5e9, 40))
    )
    m = FabricMapper("dcgm")
    (row,) = links(m.map(parse_exposition(text, "dcgm", now=T0)))
    assert (row["kind"], row["port"], row["gpu_uuid"], row["tx_bytes_per_s"]) == (
        "nvlink",
        "nvlink-gpu2",
        "GPU-x",
        5e9,
    )  # the lowest instance's copy, not a sum
    (row,) = links(m.map(parse_exposition(text.replace(" 40\n", " 55\n"), "dcgm", now=T0 + 1)))
    assert row["errors"] == 15


def test_sim_node_exporter_rates_equal_the_simulator():
    model = SimModel(start=T0)
    exp = SimExporters(model, ["hgx-04-n1"])  # its mlx5_3/1 goes down (ib_link_down)
    down = int(T0) + fault_start("ib_link_down")
    m = FabricMapper("sim")
    node = next(t for t in exp.targets() if t.kind == "node")
    f = model.fleet
    li = {
        f.link_port[i]: i
        for i in range(len(f.link_port))
        if f.host[f.link_host_idx[i]] == "hgx-04-n1"
    }
    seen_events: list[dict] = []
    for t in (down - 5, down - 2, down + 3):
        exp.advance(t)
        r = m.map(parse_exposition(exp.render(node.path), "sim", extra_labels=node.labels))
        rows = {row["port"]: row for row in links(r)}
        seen_events += events(r)
        assert len(rows) == 8
        if t == down - 5:
            prev = t
            continue
        for port, row in rows.items():
            secs = range(prev + 1, t + 1)
            want = sum(model.state(s).link_rx_bytes_per_s[li[port]] for s in secs) / len(secs)
            assert row["rx_bytes_per_s"] == pytest.approx(want, rel=1e-9)
        assert rows["mlx5_3/1"]["link_up"] is (t < down)
        prev = t
    assert rows["mlx5_3/1"]["errors"] == 1  # link_downed_total went up once
    assert [e["detail"] for e in seen_events] == ["mlx5_3/1: link down"]


def test_baselines_of_vanished_ports_are_forgotten():
    m = FabricMapper("node")
    m.map(snap(ib_text(1, 1, 0), T0))
    assert len(m._counters) == 4  # tx, rx, errors received, link downed
    other = ib_text(1, 1, 0).replace("mlx5_0", "mlx5_9")
    m.map(snap(other, T0 + 3599))
    assert len(m._counters) == 8
    m.map(snap(other, T0 + 3601))  # mlx5_0 unseen for over an hour
    assert len(m._counters) == 4


def test_sim_exporters_take_a_scraper_resetting_its_connection_quietly(capfd):
    """A scraper stopped mid-connection (SIGTERM, a killed Prometheus) resets it; the
    simulated exporters printed a traceback per connection in bench_vs_prometheus."""
    import socket
    import struct
    import time

    exp = SimExporters(SimModel(start=T0), ["hgx-04-n1"])
    with exp:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", exp.port))
            s.sendall(b"GET /hgx-04-n1/dcgm/metrics HTTP/1.1\r\n")  # no end of headers
            time.sleep(0.2)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST
        time.sleep(0.5)
        node = next(t for t in exp.targets() if t.kind == "node")
        with socket.create_connection(("127.0.0.1", exp.port)) as s:  # still serving
            s.sendall(f"GET {node.path} HTTP/1.0\r\n\r\n".encode())
            assert b" 200 OK" in s.recv(64)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
