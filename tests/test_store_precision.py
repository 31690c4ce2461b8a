"""Store size without losing a digit (issue 13): real captures round-trip through the
store unchanged at their source's precision; the sim reports values at the real
sources' precision; rows are grouped for compression without being changed; the
checkpoint threshold follows the memory limit.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pyarrow as pa
import pytest

from collectors.promtext.parse import parse_exposition
from collectors.promtext.pipeline import TelemetryPipeline
from collectors.sim.model import SimModel
from storage.batch import compression_ordered, concat_batches, make_batch
from storage.store import Store, checkpoint_threshold
from tests.upstream_samples import scrapes_in, upstream

T0 = 1_773_114_090.0

CAPTURES = [
    ("dcgm-exporter", "nvidia-aicr-8xH100", "dcgm-exporter-sampled.prom"),
    ("dcgm-exporter", "cncf-kops-1xL4", "dcgm-exporter-full-default-counters.prom"),
    ("dcgm-exporter", "runai-a100-mig", "a100-mig-4-active-workloads.txt"),
    ("dcgm-exporter", "runai-a100-mig", "t4-2gpu-k8s-pod-labels.txt"),
    ("dcgm-exporter", "nvidia-docs-a100-mig", "a100-mig-1g.5gb-gpu-and-instance.txt"),
    ("dcgm-exporter", "runai-a100-mig", "a100-mig-active-2x1g.5gb-1x2g.10gb.txt"),
    ("node_exporter", "e2e-output-infiniband.txt"),
]


IB_TX = 'node_infiniband_port_data_transmitted_bytes_total{device="mlx4_0",port="1"} '


def _mapped(parts: tuple[str, ...]):
    pipe = TelemetryPipeline("cap")
    texts = scrapes_in(upstream(*parts))
    labels = None
    if parts[0] == "node_exporter":  # a second scrape 15 s later: counters become rates
        labels = {"instance": "ib-host-1:9100"}
        texts = [texts[0], texts[0].replace(IB_TX + "1.493376e+07", IB_TX + "1.643376e+07")]
        assert texts[1] != texts[0]
    out = []
    for i, text in enumerate(texts):
        now = T0 + 15 * i
        snap = parse_exposition(text, "cap", now=now, complete=True, extra_labels=labels)
        out += pipe.map(snap, now).batches
    return out


def _key(row: dict) -> str:
    return repr(sorted(row.items(), key=lambda kv: kv[0]))


@pytest.mark.parametrize("parts", CAPTURES, ids=lambda p: p[-1])
def test_a_real_capture_round_trips_through_the_store_unchanged(parts, tmp_path):
    batches = [b for b in _mapped(parts) if b.table.endswith("_samples")]
    assert batches, f"{parts}: the capture gave no samples"
    path = tmp_path / "s.duckdb"
    store = Store.open(path)
    store.write(batches)
    store.close()  # values come back from the checkpointed, compressed file
    store = Store.open(path, read_only=True)
    compared = 0
    try:
        for b in concat_batches(batches):
            cols = b.data.column_names
            got = store.con.execute(f"SELECT {', '.join(cols)} FROM {b.table}").arrow()
            got = got.read_all() if hasattr(got, "read_all") else got
            want_rows = sorted(b.data.to_pylist(), key=_key)
            got_rows = sorted(got.to_pylist(), key=_key)
            # bit-for-bit: the stored double is the one the source's text parsed to
            assert got_rows == want_rows, b.table
            compared += sum(
                v is not None and not isinstance(v, str) for r in want_rows for v in r.values()
            )
    finally:
        store.close()
    assert compared > 0


def test_dcgm_milliwatts_and_integer_degrees_read_back_as_the_text_says(tmp_path):
    parts = ("dcgm-exporter", "nvidia-aicr-8xH100", "dcgm-exporter-sampled.prom")
    text = upstream(*parts).read_text()
    texts = {
        name: sorted(float(v) for v in re.findall(rf"(?m)^{name}{{[^}}]*}} (\S+)$", text))
        for name in ("DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_TEMP")
    }
    assert any(not float(v).is_integer() for v in texts["DCGM_FI_DEV_POWER_USAGE"])
    store = Store.open(tmp_path / "s.duckdb")
    store.write(_mapped(parts))
    store.checkpoint()
    power, temp = zip(
        *store.con.execute("SELECT power_w, temp_c FROM gpu_samples").fetchall(), strict=True
    )
    store.close()
    assert sorted(power) == texts["DCGM_FI_DEV_POWER_USAGE"]  # 113.611 stays 113.611
    assert sorted(temp) == texts["DCGM_FI_DEV_GPU_TEMP"]


def _digits_beyond(values: np.ndarray, digits: int) -> int:
    v = values[~np.isnan(values)]
    return int((np.abs(v - np.round(v, digits)) > 1e-9 * np.maximum(1, np.abs(v))).sum())


def test_the_sim_reports_values_at_the_real_sources_precision():
    m = SimModel(scale=1, start=T0)
    s = m.state(T0 + 3601.0)
    for name, digits in (
        ("gpu_util_pct", 0),
        ("gpu_mem_util_pct", 0),
        ("gpu_temp_c", 0),
        ("gpu_mem_temp_c", 0),
        ("gpu_sm_clock_mhz", 0),
        ("gpu_mem_clock_mhz", 0),
        ("gpu_power_w", 3),
        ("gpu_energy_j", 3),
        ("gpu_pcie_tx_bytes_per_s", 0),
        ("link_tx_bytes_per_s", 0),
        ("link_rx_bytes_per_s", 0),
        # GR_ENGINE_ACTIVE as dcgm-exporter prints it ("%f": 6 decimals of the ratio)
        ("slice_util_pct", 4),
    ):
        assert _digits_beyond(getattr(s, name), digits) == 0, name
    # DCGM's framebuffer fields are whole MiB
    for name in (
        "gpu_mem_used_bytes",
        "slice_mem_used_bytes",
        "slice_mem_total_bytes",
    ):
        assert (getattr(s, name) % (1 << 20) == 0).all(), name
    assert s.slice_util_pct.size > 0 and s.slice_mem_used_bytes.size > 0
    # and the noise is there without it, so the check above can fail
    m.source_precision = False
    full = m.state(T0 + 3601.0)
    assert _digits_beyond(full.gpu_power_w, 3) > 0 and _digits_beyond(full.link_tx_bytes_per_s, 0)
    assert _digits_beyond(full.slice_util_pct, 4) > 0
    assert (full.gpu_mem_used_bytes % (1 << 20) != 0).any()
    assert (full.slice_mem_used_bytes % (1 << 20) != 0).any()
    assert np.abs(full.slice_util_pct - s.slice_util_pct).max() <= 0.00005 + 1e-9
    assert np.abs(full.gpu_mem_used_bytes - s.gpu_mem_used_bytes).max() <= 1 << 19
    # rounding moves no value by more than half its last digit
    assert np.nanmax(np.abs(full.gpu_temp_c - s.gpu_temp_c)) <= 0.5
    assert np.nanmax(np.abs(full.gpu_power_w - s.gpu_power_w)) <= 0.0005 + 1e-9


def _links(kinds: list[str], ts: list[int]) -> pa.Table:
    n = len(kinds)
    return make_batch(
        "link_samples",
        {
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us")),
            "host": [f"h{i}" for i in range(n)],
            "kind": kinds,
            "port": [f"p{i}" for i in range(n)],
            "tx_bytes_per_s": [float(i) for i in range(n)],
            "link_up": [i % 3 != 0 for i in range(n)],
        },
    ).data


def test_link_rows_are_grouped_by_time_and_kind_keeping_their_order_within():
    kinds = ["nvlink", "ib", "nvlink", "roce", "ib", "nvlink"] * 10
    ts = [2_000_000 if i >= 30 else 1_000_000 for i in range(60)]
    data = _links(kinds, ts)
    out = compression_ordered("link_samples", data)
    rows = out.to_pylist()
    keys = [(r["ts"], r["kind"]) for r in rows]
    assert len({k for k in keys}) == 6 and all(  # one run per (ts, kind)
        keys.index(k) + keys.count(k) - 1 == len(keys) - 1 - keys[::-1].index(k) for k in keys
    )
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)
    for k in set(keys):  # stable: each group keeps the sources' order
        group = [r["tx_bytes_per_s"] for r in rows if (r["ts"], r["kind"]) == k]
        assert group == sorted(group)
    assert sorted(rows, key=_key) == sorted(data.to_pylist(), key=_key)  # same rows
    # the store groups them on write
    merged = concat_batches([make_batch("link_samples", data.to_pydict())])
    assert merged[0].data.column("kind").to_pylist() == out.column("kind").to_pylist()


def test_rows_already_in_long_runs_are_left_as_they_came():
    kinds = ["nvlink"] * 40 + ["ib"] * 20 + ["nvlink"] * 40
    data = _links(kinds, [1_000_000] * 100)
    assert compression_ordered("link_samples", data) is data
    # other tables are never reordered
    gpu = make_batch("gpu_samples", {"ts": [1, 0], "host": ["b", "a"], "gpu_uuid": ["y", "x"]})
    assert compression_ordered("gpu_samples", gpu.data) is gpu.data


@pytest.mark.parametrize(
    ("limit", "threshold"),
    [("4096MiB", "256MiB"), ("2GiB", "256MiB"), ("512MB", "122MiB"), ("64MiB", "16MiB")],
)
def test_checkpoint_threshold_is_a_quarter_of_the_memory_limit_at_most(limit, threshold):
    assert checkpoint_threshold(limit) == threshold


def test_the_store_sets_its_checkpoint_threshold(tmp_path):
    store = Store.open(tmp_path / "s.duckdb", memory_limit="512MiB")
    try:
        got = store.con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()[0]
    finally:
        store.close()
    assert math.isclose(_bytes(got), 128 << 20, rel_tol=0.01), got


def _bytes(text: str) -> float:
    m = re.match(r"([\d.]+)\s*([KMGT]?)(i?)B", text.strip())
    assert m, text
    base = 1024 if m.group(3) else 1000
    return float(m.group(1)) * base ** "_KMGT".index(m.group(2) or "_")


def test_dcgm_scaled_fields_keep_the_decimal_the_text_meant():
    """The DCGM mapper's unit scaling (`collectors.dcgm_map._scaled`): a 6-decimal ratio
    (dcgm-exporter's "%f") becomes the 4-decimal percentage, nearest the decimal
    product, and gives the ratio back; whole mJ become J that the store keeps as whole
    mJ; a full-precision ratio keeps the plain product. Mutant: `v * scale` (a quarter
    of the percentages and 14 % of the energies an ulp off)."""
    from decimal import Decimal

    from collectors.dcgm_map import _scaled

    rng = np.random.default_rng(3)
    ratio = np.array([float(f"{x:f}") for x in rng.random(20000)])
    pct = _scaled(ratio, np.full(ratio.size, 100.0))
    assert (pct == np.round(pct, 4)).all()
    assert (np.round(pct / 100, 6) == ratio).all()
    assert all(
        float(Decimal(repr(float(a))) * 100) == float(b)
        for a, b in zip(ratio[:2000], pct[:2000], strict=True)
    )
    full = rng.random(20000)  # a ratio printed with every digit: the product as before
    assert (_scaled(full, np.full(full.size, 100.0)) == full * 100).all()
    mj = rng.integers(0, 10**12, 20000).astype(np.float64)
    joules = _scaled(mj, np.full(mj.size, 1e-3))
    assert (np.round(joules * 1000) / 1000 == joules).all()  # storage.keyed._EXACT_MJ
    assert (np.round(joules * 1000) == mj).all()
    # other scales as they were
    assert _scaled(np.array([5.0, 3.0]), np.array([1.0, 0.3])).tolist() == [5.0, 3.0 * 0.3]
