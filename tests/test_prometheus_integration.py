"""End to end: simulated exporters -> real Prometheus (1 s scrapes) -> "prometheus"
source (HTTP API client with deadlines) -> store, checked against the simulator's truth."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from collectors.prometheus_source import PrometheusOptions, PrometheusSource
from collectors.sim.exporters import SimExporters
from collectors.sim.model import SimModel
from collectors.sim.topology import ENDPOINTS
from storage.store import Store
from tests.services.prometheus import ScrapeTarget, prometheus_server  # noqa: F401
from tests.simfleet_truth import HOSTS, fault_start, interval_quantile_truth, truth_inventory

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]


def _epoch(ts: datetime) -> float:
    return ts.replace(tzinfo=UTC).timestamp()


async def test_sim_exporters_through_prometheus_match_the_simulator(prometheus_server):  # noqa: F811
    now = time.time()
    # 30 s into quanta-risk's traffic surge and an NVLink CRC burst on nvl72-01-t05
    offset = max(fault_start("traffic_surge"), fault_start("nvlink_crc")) + 30
    model = SimModel(start=float(int(now) - offset))
    with SimExporters(model, HOSTS) as exp:
        targets = exp.targets()
        prom = prometheus_server(
            [ScrapeTarget(f"127.0.0.1:{exp.port}", t.path, t.labels) for t in targets]
        )
        truth = truth_inventory(model, HOSTS)
        n_series = sum(1 for g in truth["gpus"].values() if not g[2]) + len(truth["slices"])
        assert prom.wait_for_series("DCGM_FI_DEV_GPU_TEMP", n_series) == n_series
        await asyncio.sleep(3)  # a few seconds of history for the backfill below

        src = PrometheusSource(
            PrometheusOptions(
                url=prom.url, interval_s=2.0, backfill_s=0, link_kind_by_host={"rtx-*": "roce"}
            )
        )
        store = Store.open(":memory:")
        try:
            for i in range(4):
                g = await src.gather(datetime.now(UTC))
                store.write(g.batches)
                assert not [s for s in g.skipped if "backwards" in s or "failed" in s], g.skipped
                if i < 3:
                    await asyncio.sleep(2.0)
        finally:
            await src.close()
        # A start (or a gap of > 3 intervals) is filled from the range API. Checked apart:
        # a step's value is the newest sample at or before the step, so it is the
        # simulator's at that second only when Prometheus scraped within it.
        src2 = PrometheusSource(
            PrometheusOptions(
                url=prom.url,
                name="gap",
                interval_s=1.0,
                backfill_s=5.0,
                selectors=['{__name__=~"DCGM_FI_DEV_GPU_TEMP"}', "{bad selector"],
            )
        )
        g = await src2.gather(datetime.now(UTC))
        assert 3 <= src2.backfilled_steps <= 5
        assert any(s.startswith(f"{prom.url}: query {{bad selector failed") for s in g.skipped)
        temps = [b for b in g.batches if b.table == "gpu_samples"]
        # one row per GPU for each backfill step and for the live gather
        assert sum(b.rows for b in temps) == len(truth["gpus"]) * (src2.backfilled_steps + 1)
        await src2.close()
        con = store.cursor()

        # inventory: GPUs, MIG slices and tenant assignments are the simulator's
        gpus = {
            r[0]: (r[1], r[2], r[3])
            for r in con.execute("SELECT gpu_uuid, host, gpu_index, mig_mode FROM gpus").fetchall()
        }
        assert gpus == truth["gpus"]
        slices = {
            r[0]: (r[1], r[2])
            for r in con.execute("SELECT slice_id, profile, fraction FROM slices").fetchall()
        }
        assert slices == truth["slices"]
        assign = {
            (r[0], r[1]): r[2]
            for r in con.execute(
                "SELECT gpu_uuid, slice_id, tenant FROM assignments WHERE valid_to IS NULL"
            ).fetchall()
        }
        assert assign == truth["assignments"]

        # every IB/RoCE port and every GPU's NVLink is a link row, named as the simulator names it
        links = set(con.execute("SELECT DISTINCT host, kind, port FROM link_samples").fetchall())
        assert links == truth["links"]

        # every stored GPU sample holds the simulator's values at its timestamp
        f = model.fleet
        gi = {u: i for i, u in enumerate(f.gpu_uuid)}
        rows = con.execute(
            "SELECT ts, gpu_uuid, power_w, temp_c, util_pct, mem_used_bytes FROM gpu_samples"
        ).fetchall()
        assert len(rows) >= 4 * len(truth["gpus"])
        for ts, uuid, power, temp, util, mem in rows:
            st = model.state(_epoch(ts))
            g = gi[uuid]
            assert power == pytest.approx(st.gpu_power_w[g], rel=1e-9)
            assert temp == pytest.approx(st.gpu_temp_c[g], rel=1e-9)
            if f.gpu_mig[g]:
                assert util is None and mem is None  # no whole-GPU series on a MIG GPU
            else:
                assert util == pytest.approx(st.gpu_util_pct[g], rel=1e-9)
                assert abs(mem - st.gpu_mem_used_bytes[g]) <= (1 << 20)
        si = {s: i for i, s in enumerate(f.slice_id)}
        for ts, sid, util, mem in con.execute(
            "SELECT ts, slice_id, util_pct, mem_used_bytes FROM slice_samples"
        ).fetchall():
            st = model.state(_epoch(ts))
            assert util == pytest.approx(st.slice_util_pct[si[sid]], rel=1e-9)
            assert abs(mem - st.slice_mem_used_bytes[si[sid]]) <= (1 << 20)  # FB is in MiB

        # IB/RoCE rates from byte counters = the simulator's mean rate over the interval;
        # NVLink rates are DCGM gauges (the second's value), its CRC errors a counter
        li = {(f.host[f.link_host_idx[i]], f.link_port[i]): i for i in range(len(f.link_port))}
        link_rows = con.execute(
            "SELECT host, kind, port, ts, tx_bytes_per_s, errors FROM link_samples "
            "ORDER BY host, port, ts"
        ).fetchall()
        checked = {"ib": 0, "roce": 0, "nvlink": 0}
        crc_errors = 0
        last: dict[tuple, float] = {}
        for h, kind, p, ts, tx, errors in link_rows:
            t1 = _epoch(ts)
            t0, last[(h, p)] = last.get((h, p)), t1
            i = li[(h, p)]
            if kind == "nvlink":
                assert tx == pytest.approx(model.state(t1).link_tx_bytes_per_s[i], rel=1e-9)
            if t0 is None:
                continue
            secs = range(int(t0) + 1, int(t1) + 1)
            if kind == "nvlink":
                want_errors = sum(int(model.state(s).link_errors[i]) for s in secs)
                assert errors == want_errors
                crc_errors += errors
            else:
                want = np.mean([model.state(s).link_tx_bytes_per_s[i] for s in secs])
                assert tx == pytest.approx(want, rel=1e-6)
            checked[kind] += 1
        assert min(checked.values()) >= 4, checked
        assert crc_errors > 0  # nvl72-01-t05 nvlink-gpu2 is in its CRC burst

        # p99 inter-token latency per tenant within 5% of the simulator's
        lat = con.execute(
            "SELECT tenant, endpoint, ts, itl_p99_ms FROM latency_samples "
            "WHERE source = 'prometheus' ORDER BY endpoint, ts"
        ).fetchall()
        ep_index = {e[0]: i for i, e in enumerate(ENDPOINTS)}
        tenants_seen = set()
        prev: dict[str, float] = {}
        for tenant, endpoint, ts, p99 in lat:
            t1 = _epoch(ts)
            t0, prev[endpoint] = prev.get(endpoint), t1
            if t0 is None or p99 is None:
                continue
            e = ep_index[endpoint]
            assert tenant == ENDPOINTS[e][1]
            want = interval_quantile_truth(model, e, int(t0), int(t1))
            assert abs(p99 / want - 1) < 0.05, (endpoint, p99, want)
            tenants_seen.add(tenant)
        assert tenants_seen == {e[1] for e in ENDPOINTS}
