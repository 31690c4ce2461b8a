"""The simulated fleet over HTTP, in the formats real exporters speak.

Per simulated host, on one 127.0.0.1 HTTP server (a path per host and exporter):

- `/<host>/dcgm/metrics`: dcgm-exporter, labels as in the real samples
  (`gpu`, `UUID`, `pci_bus_id`, `device`, `modelName`, `Hostname`,
  `DCGM_FI_DRIVER_VERSION`, and `container/namespace/pod/pod_uid` where a
  tenant's workload holds the GPU). A MIG GPU has no whole-GPU series: one
  series per GPU instance (`GPU_I_PROFILE`, `GPU_I_ID`), GPU-level fields
  repeated on each, per-instance framebuffer and `PROF_GR_ENGINE_ACTIVE`.
- `/<host>/node/metrics`: node_exporter `node_infiniband_*` for the host's
  IB/RoCE ports (byte and error counters, state, rate).
- `/<host>/vllm/<endpoint>/metrics`: one vLLM V1 server per endpoint on the
  host (`vllm:*` histograms, labels `engine`, `model_name`).

Every value comes from `SimModel.state(t)`, ticked once per second: gauges
are the state at t; counters (energy, IB bytes and errors, NVLink CRC errors,
histogram buckets) are the state integrated over the ticks so far. Each sample
carries its tick time as the exposition timestamp, so Prometheus stores it at
the second whose truth it holds and tests compare exactly.

Latency histograms: each tick adds, per endpoint on a host, the expected
bucket counts of a log-normal with the sim's p50 and p99 at t
(sigma = ln(p99/p50) / z_0.99), times the observations in that second (the
host's share of requests/s; x255 inter-token gaps per request). Counts are
expected values (floats, as vLLM prints them), not random draws, so the p99
interpolated from bucket deltas reproduces the sim's p99. vLLM's own buckets
are far too coarse for that (0.025 -> 0.05 s around a 20 ms ITL), so the sim
uses fine geometric grids (ITL 1 ms .. 2 s, x1.04 per bucket; TTFT and e2e
x1.08): linear interpolation inside a 4% bucket stays within ~1% of the true
quantile (measured: tests/test_latency*.py, docs/dcgm-prometheus.md).
"""

from __future__ import annotations

import hashlib
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from collectors.sim.model import FleetState, SimModel
from collectors.sim.topology import ENDPOINTS, GPU_MODELS, KIND_CODE, TENANTS

MIB = 1 << 20
Z99 = 2.3263478740408408
TOKENS_PER_REQUEST = 256


def geometric_buckets(lo_s: float, hi_s: float, ratio: float) -> np.ndarray:
    n = int(math.ceil(math.log(hi_s / lo_s) / math.log(ratio)))
    return np.round(lo_s * ratio ** np.arange(n + 1), 7)


# Upper bounds (s) per histogram, +Inf added when rendered: ITL fine (x1.04, it is the
# figure checked to 5%), TTFT and e2e coarser (x1.08) to keep the scrape small.
BUCKETS_S = (
    geometric_buckets(0.001, 2.0, 1.04),
    geometric_buckets(0.005, 60.0, 1.08),
    geometric_buckets(0.05, 600.0, 1.08),
)
_KIND_NAMES = sorted(KIND_CODE, key=KIND_CODE.__getitem__)


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, vectorised (Abramowitz & Stegun 7.1.26 erf, |error| < 1.5e-7)."""
    z = np.asarray(x, dtype=np.float64) / math.sqrt(2.0)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erf = 1.0 - poly * np.exp(-a * a)
    return 0.5 * (1.0 + np.sign(z) * erf)


def lognormal_cum(le_s: np.ndarray, p50_ms: float, p99_ms: float) -> np.ndarray:
    """Fraction of observations <= each bound for a log-normal with these p50/p99."""
    sigma = max(math.log(max(p99_ms, p50_ms * 1.0001) / p50_ms) / Z99, 1e-6)
    return _norm_cdf((np.log(le_s * 1000.0) - math.log(p50_ms)) / sigma)


def _fmt(v: float) -> str:
    return repr(float(v)) if v == v else "NaN"


@dataclass
class Target:
    host: str
    kind: str  # dcgm | node | vllm
    path: str
    labels: dict[str, str] = field(default_factory=dict)


class SimExporters:
    """Serve a SimModel as dcgm-exporter, node_exporter and vLLM endpoints on 127.0.0.1."""

    def __init__(
        self,
        model: SimModel,
        hosts: list[str] | None = None,
        *,
        port: int = 0,
        clock: Callable[[], float] = time.time,
        timestamps: bool = True,
    ):
        self.model = model
        f = model.fleet
        self.hosts = list(hosts) if hosts else list(f.host)
        unknown = set(self.hosts) - set(f.host)
        if unknown:
            raise ValueError(f"hosts not in the simulated fleet: {', '.join(sorted(unknown))}")
        self.clock = clock
        self.timestamps = timestamps
        self._port = port
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._t: int | None = None
        self._state: FleetState | None = None
        self._cache: dict[str, str] = {}
        h_index = {h: i for i, h in enumerate(f.host)}
        self._hidx = {h: h_index[h] for h in self.hosts}
        nl = len(f.link_port)
        self._ib_tx = np.zeros(nl)
        self._ib_rx = np.zeros(nl)
        self._link_err = np.zeros(nl)
        self._link_downs = np.zeros(nl)
        self._was_up = np.ones(nl, dtype=bool)
        self._last_xid = np.zeros(f.n_gpus)
        self._ep_share = self._endpoint_shares()
        self._hist = {
            (h, e): [np.zeros(len(b) + 1) for b in BUCKETS_S] for (h, e) in self._ep_share
        }
        self._hist_sum = {(h, e): np.zeros(3) for (h, e) in self._ep_share}
        self._gpu_labels = self._dcgm_labels()
        # Per-host indexes, built once: scanning every link per host and render is
        # quadratic in the fleet (3.7 of 6.2 s per render of scale 10).
        self._host_gpus: dict[int, list[int]] = {}
        for g in self._gpu_labels:
            self._host_gpus.setdefault(int(f.gpu_host_idx[g]), []).append(g)
        self._nvl_of_gpu = {int(f.link_gpu_idx[i]): i for i in range(nl) if f.link_gpu_idx[i] >= 0}
        self._ib_rows: dict[int, list[int]] = {}
        for i in range(nl):
            if f.link_kind[i] != "nvlink":
                self._ib_rows.setdefault(int(f.link_host_idx[i]), []).append(i)

    # -- topology ---------------------------------------------------------------
    def _endpoint_shares(self) -> dict[tuple[int, int], float]:
        """(host index, endpoint) -> share of the endpoint's traffic that host serves."""
        f = self.model.fleet
        cap: dict[tuple[int, int], float] = {}
        for g in range(f.n_gpus):
            e = int(f.gpu_endpoint[g])
            if e >= 0:
                k = (int(f.gpu_host_idx[g]), e)
                cap[k] = cap.get(k, 0.0) + 1.0
        for s in range(len(f.slice_id)):
            k = (int(f.gpu_host_idx[f.slice_gpu_idx[s]]), int(f.slice_endpoint[s]))
            cap[k] = cap.get(k, 0.0) + float(f.slice_fraction[s])
        total: dict[int, float] = {}
        for (_, e), c in cap.items():
            total[e] = total.get(e, 0.0) + c
        mine = set(self._hidx.values())
        return {(h, e): c / total[e] for (h, e), c in cap.items() if h in mine}

    def _pod(self, what: str, key: str) -> dict[str, str]:
        tag = hashlib.sha1(key.encode()).hexdigest()[:5]
        return {
            "container": "main",
            "namespace": what.split("|")[0],
            "pod": f"{what.split('|')[1]}-{tag}",
            "pod_uid": "",
        }

    def _dcgm_labels(self) -> dict[int, list[tuple[int | None, str]]]:
        """GPU index -> [(slice index or None, label text)], one per series the GPU has."""
        f = self.model.fleet
        tenants = [t[0] for t in TENANTS]
        out: dict[int, list[tuple[int | None, str]]] = {}
        slices_of: dict[int, list[int]] = {}
        for s in range(len(f.slice_id)):
            slices_of.setdefault(int(f.slice_gpu_idx[s]), []).append(s)
        for g in range(f.n_gpus):
            h = int(f.gpu_host_idx[g])
            if h not in self._hidx.values():
                continue
            kind = _KIND_NAMES[f.gpu_kind[g]]
            base = {
                "gpu": str(f.gpu_index[g]),
                "UUID": f.gpu_uuid[g],
                "pci_bus_id": f.gpu_pci[g],
                "device": f"nvidia{f.gpu_index[g]}",
                "modelName": GPU_MODELS[kind][0],
                "Hostname": f.host[h],
                "DCGM_FI_DRIVER_VERSION": f.host_driver[h],
            }
            series: list[tuple[int | None, str]] = []
            if f.gpu_mig[g]:
                for s in slices_of.get(g, []):
                    gi = f.slice_id[s].rsplit("/gi", 1)[1]
                    lab = {**base, "GPU_I_PROFILE": f.slice_profile[s], "GPU_I_ID": gi}
                    t = int(f.slice_tenant[s])
                    if t >= 0:
                        ep = ENDPOINTS[int(f.slice_endpoint[s])][0]
                        lab |= self._pod(f"{tenants[t]}|{ep}", f.slice_id[s])
                    series.append((s, _labels(lab)))
            else:
                lab = dict(base)
                t = int(f.gpu_tenant[g])
                if t >= 0:
                    e = int(f.gpu_endpoint[g])
                    what = ENDPOINTS[e][0] if e >= 0 else f"{tenants[t]}-train"
                    lab |= self._pod(f"{tenants[t]}|{what}", f.gpu_uuid[g])
                series.append((None, _labels(lab)))
            out[g] = series
        return out

    def targets(self) -> list[Target]:
        out = []
        for h in self.hosts:
            hi = self._hidx[h]
            out.append(Target(h, "dcgm", f"/{h}/dcgm/metrics", {"instance": h}))
            if self._ib_rows.get(hi):
                out.append(Target(h, "node", f"/{h}/node/metrics", {"instance": h}))
            for (hh, e), _ in sorted(self._ep_share.items()):
                if hh == hi:
                    ep, tenant = ENDPOINTS[e][0], ENDPOINTS[e][1]
                    out.append(
                        Target(
                            h,
                            "vllm",
                            f"/{h}/vllm/{ep}/metrics",
                            {"instance": h, "service": ep, "namespace": tenant},
                        )
                    )
        return out

    # -- time -------------------------------------------------------------------
    def advance(self, t: int) -> None:
        """Tick every second up to `t` (at most the last 120 when behind)."""
        with self._lock:
            if self._t is not None and t <= self._t:
                return
            first = self._t is None
            start = t if self._t is None else max(self._t + 1, t - 120)
            for s in range(start, t + 1):
                self._tick(s, integrate=not first)
            self._t = t
            self._cache.clear()

    def _tick(self, t: int, integrate: bool) -> None:
        m = self.model
        st = m.state(float(t))
        dt = 1.0
        f = m.fleet
        if integrate:
            up = st.link_reporting
            self._ib_tx[up] += st.link_tx_bytes_per_s[up] * dt
            self._ib_rx[up] += st.link_rx_bytes_per_s[up] * dt
            self._link_err[up] += st.link_errors[up]
            went_down = self._was_up & ~st.link_up
            self._link_downs[went_down] += 1
            for ev in m.events_between(t - 1.0, float(t)):
                if ev.kind == "xid" and ev.gpu_idx >= 0:
                    self._last_xid[ev.gpu_idx] = ev.code or 0
            for (h, e), share in self._ep_share.items():
                if not st.host_reporting[h]:
                    continue
                reqs = st.ep_requests_per_s[e] * share * dt
                obs = np.array([reqs * (TOKENS_PER_REQUEST - 1), reqs, reqs])
                quantiles = (
                    (st.ep_itl_p50_ms[e], st.ep_itl_p99_ms[e]),
                    (st.ep_ttft_p50_ms[e], st.ep_ttft_p99_ms[e]),
                    (st.ep_e2e_p50_ms[e], st.ep_e2e_p99_ms[e]),
                )
                for k, (p50, p99) in enumerate(quantiles):
                    cum = lognormal_cum(BUCKETS_S[k], p50, p99)
                    self._hist[(h, e)][k][:-1] += obs[k] * cum
                    self._hist[(h, e)][k][-1] += obs[k]
                    sigma = math.log(p99 / p50) / Z99
                    self._hist_sum[(h, e)][k] += obs[k] * p50 / 1000.0 * math.exp(sigma**2 / 2)
        self._was_up = st.link_up.copy()
        del f
        self._state = st

    @property
    def tick(self) -> int | None:
        return self._t

    def _ticked(self) -> FleetState:
        """The state of the last tick (pages render only after `advance`)."""
        if self._state is None:
            raise RuntimeError("simulated exporter: render before the first advance()")
        return self._state

    # -- rendering --------------------------------------------------------------
    def render(self, path: str) -> str | None:
        """The body for `path` at the current tick; None when no such endpoint."""
        with self._lock:
            if path in self._cache:
                return self._cache[path]
            parts = path.strip("/").split("/")
            if len(parts) < 3 or parts[0] not in self._hidx or self._state is None:
                return None
            h = self._hidx[parts[0]]
            if not self._state.host_reporting[h]:
                return ""  # host silent: the server answers 503
            if parts[1:] == ["dcgm", "metrics"]:
                text = self._render_dcgm(h)
            elif parts[1:] == ["node", "metrics"]:
                text = self._render_node(h)
            elif len(parts) == 4 and parts[1] == "vllm" and parts[3] == "metrics":
                e = next((i for i, ep in enumerate(ENDPOINTS) if ep[0] == parts[2]), None)
                if e is None or (h, e) not in self._ep_share:
                    return None
                text = self._render_vllm(h, e)
            else:
                return None
            self._cache[path] = text
            return text

    def _suffix(self) -> str:
        return f" {(self._t or 0) * 1000}\n" if self.timestamps else "\n"

    def _render_dcgm(self, h: int) -> str:
        st = self._ticked()
        end = self._suffix()
        lines: dict[str, list[str]] = {}

        def add(name: str, lab: str, v: float) -> None:
            if v == v:  # dcgm-exporter drops blank values
                lines.setdefault(name, []).append(f"{name}{{{lab}}} {_fmt(v)}{end}")

        nvl = self._nvl_of_gpu
        for g in self._host_gpus.get(h, []):
            series = self._gpu_labels[g]
            if not st.gpu_reporting[g]:
                continue
            for s, lab in series:
                add("DCGM_FI_DEV_SM_CLOCK", lab, st.gpu_sm_clock_mhz[g])
                add("DCGM_FI_DEV_MEM_CLOCK", lab, st.gpu_mem_clock_mhz[g])
                add("DCGM_FI_DEV_MEMORY_TEMP", lab, st.gpu_mem_temp_c[g])
                add("DCGM_FI_DEV_GPU_TEMP", lab, st.gpu_temp_c[g])
                add("DCGM_FI_DEV_POWER_USAGE", lab, st.gpu_power_w[g])
                add("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", lab, st.gpu_energy_j[g] * 1000.0)
                add("DCGM_FI_PROF_PCIE_TX_BYTES", lab, st.gpu_pcie_tx_bytes_per_s[g])
                add("DCGM_FI_PROF_PCIE_RX_BYTES", lab, st.gpu_pcie_rx_bytes_per_s[g])
                add("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", lab, st.gpu_ecc_sbe_total[g])
                add("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", lab, st.gpu_ecc_dbe_total[g])
                add("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", lab, st.gpu_throttle_reasons[g])
                add("DCGM_FI_DEV_XID_ERRORS", lab, self._last_xid[g])
                if s is None:
                    total_mib = st.gpu_mem_total_bytes[g] // MIB
                    used_mib = round(st.gpu_mem_used_bytes[g] / MIB)
                    add("DCGM_FI_DEV_GPU_UTIL", lab, st.gpu_util_pct[g])
                    add("DCGM_FI_DEV_MEM_COPY_UTIL", lab, st.gpu_mem_util_pct[g])
                    add("DCGM_FI_PROF_GR_ENGINE_ACTIVE", lab, st.gpu_util_pct[g] / 100.0)
                else:
                    total_mib = round(st.slice_mem_total_bytes[s] / MIB)
                    used_mib = round(st.slice_mem_used_bytes[s] / MIB)
                    add("DCGM_FI_PROF_GR_ENGINE_ACTIVE", lab, st.slice_util_pct[s] / 100.0)
                add("DCGM_FI_DEV_FB_USED", lab, used_mib)
                add("DCGM_FI_DEV_FB_FREE", lab, total_mib - used_mib)
                add("DCGM_FI_DEV_FB_RESERVED", lab, 0)
                li = nvl.get(g)
                if li is not None:
                    add("DCGM_FI_PROF_NVLINK_TX_BYTES", lab, st.link_tx_bytes_per_s[li])
                    add("DCGM_FI_PROF_NVLINK_RX_BYTES", lab, st.link_rx_bytes_per_s[li])
                    add("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", lab, self._link_err[li])
        out = []
        for name, ls in lines.items():
            typ = "counter" if name.endswith(("_TOTAL", "CONSUMPTION")) else "gauge"
            out.append(f"# HELP {name} {name} (simulated).\n# TYPE {name} {typ}\n")
            out.extend(ls)
        return "".join(out)

    def _render_node(self, h: int) -> str:
        f, st = self.model.fleet, self._ticked()
        end = self._suffix()
        rows = self._ib_rows.get(h, [])
        metrics = (
            (
                "node_infiniband_port_data_transmitted_bytes_total",
                "counter",
                lambda i: self._ib_tx[i],
            ),
            ("node_infiniband_port_data_received_bytes_total", "counter", lambda i: self._ib_rx[i]),
            ("node_infiniband_port_errors_received_total", "counter", lambda i: 0.0),
            ("node_infiniband_link_downed_total", "counter", lambda i: self._link_downs[i]),
            ("node_infiniband_state_id", "gauge", lambda i: 4.0 if st.link_up[i] else 1.0),
            ("node_infiniband_physical_state_id", "gauge", lambda i: 5.0 if st.link_up[i] else 3.0),
            ("node_infiniband_rate_bytes_per_second", "gauge", lambda i: f.link_rate[i]),
        )
        out = []
        for name, typ, fn in metrics:
            out.append(f"# HELP {name} {name} (simulated).\n# TYPE {name} {typ}\n")
            for i in rows:
                dev, port = f.link_port[i].split("/")
                out.append(f'{name}{{device="{dev}",port="{port}"}} {_fmt(float(fn(i)))}{end}')
        return "".join(out)

    def _render_vllm(self, h: int, e: int) -> str:
        end = self._suffix()
        model = ENDPOINTS[e][2]
        hist, sums = self._hist[(h, e)], self._hist_sum[(h, e)]
        names = (
            "vllm:inter_token_latency_seconds",
            "vllm:time_to_first_token_seconds",
            "vllm:e2e_request_latency_seconds",
        )
        base = f'engine="0",model_name="{model}"'
        out = []
        for k, name in enumerate(names):
            les = [repr(float(b)) for b in BUCKETS_S[k]] + ["+Inf"]
            out.append(f"# HELP {name} Histogram (simulated).\n# TYPE {name} histogram\n")
            counts = hist[k]
            for le, c in zip(les, counts, strict=True):
                out.append(
                    f'{name}_bucket{{engine="0",le="{le}",model_name="{model}"}} {_fmt(c)}{end}'
                )
            out.append(f"{name}_count{{{base}}} {_fmt(counts[-1])}{end}")
            out.append(f"{name}_sum{{{base}}} {_fmt(sums[k])}{end}")
        out.append(
            "# HELP vllm:request_success_total Requests finished (simulated).\n"
            "# TYPE vllm:request_success_total counter\n"
        )
        out.append(
            f'vllm:request_success_total{{{base},finished_reason="stop"}} {_fmt(hist[2][-1])}{end}'
        )
        return "".join(out)

    # -- HTTP -------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SimExporters:
        self.advance(int(self.clock()))
        exporters = self

        class Handler(BaseHTTPRequestHandler):
            # keep-alive, as real exporters (Go's net/http) serve: scrapers reuse connections
            protocol_version = "HTTP/1.1"
            timeout = 120  # an idle kept-alive connection's thread ends after this

            def do_GET(self) -> None:  # noqa: N802
                exporters.advance(int(exporters.clock()))
                body = exporters.render(self.path)
                if body is None:
                    self.send_error(404)
                    return
                if body == "":
                    self.send_error(503, "host not reporting")
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass  # the scraper left (its deadline passed): nothing to report

            def log_message(self, *args) -> None:
                return None

        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sim-exporters", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SimExporters:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _labels(d: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in d.items())


class _Server(ThreadingHTTPServer):
    # Many targets share this one server: a scraper connects to all at once, and
    # the default listen backlog of 5 would drop the connections beyond it.
    request_queue_size = 1024

    def handle_error(self, request, client_address) -> None:
        # A scraper that stops (SIGTERM, a killed Prometheus) resets its keep-alive
        # connections; that is the client leaving, not an error worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)
