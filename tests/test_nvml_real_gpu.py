"""The real-GPU check: runs against NVIDIA's NVML where there is one, says why not elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_real_gpu.py"


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


HAVE_GPU = _nvml_works()


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="needs an NVIDIA GPU and driver (NVML)")
def test_collector_agrees_with_nvidia_smi():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--polls", "5"], capture_output=True, text=True, timeout=300
    )
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all compared values agree" in out.stdout


@pytest.mark.skipif(HAVE_GPU, reason="this machine has NVML")
def test_check_script_without_nvml_says_so_and_exits_2():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("check_real_gpu: cannot run here: NVML cannot start")
    assert "Traceback" not in out.stderr


FAKE_SMI = """#!{python}
import json, sys
table = json.load(open({table!r}))
query = [a for a in sys.argv[1:] if a.startswith("--query-gpu=")][0].split("=", 1)[1].split(",")
bad = [f for f in query if f not in table["fields"] and f != "uuid"]
if bad:
    print(f'Field "{{bad[0]}}" is not a valid field to query.')
    sys.exit(2)
for row in table["rows"]:
    print(", ".join(row[f] for f in query))
"""


def test_check_script_logic_on_the_fake(tmp_path, monkeypatch, capsys):
    """The script's comparison and table, run on the fake NVML and a stand-in nvidia-smi
    (this checks the script, not a GPU: the gpu-marked test above does that)."""
    import importlib.util
    import json

    from collectors.nvml.fake import SimStates
    from collectors.nvml.library import open_library
    from collectors.sim.model import SimModel

    t = 1_764_000_000.0
    states = SimStates(SimModel(start=t - 100))
    lib = open_library("fake", host="hgx-03-n1", states=states, clock=lambda: t)
    st = states.at(t)
    f = states.model.fleet
    gpus = sorted(
        (g for g in range(f.n_gpus) if f.host[f.gpu_host_idx[g]] == "hgx-03-n1"),
        key=lambda g: f.gpu_index[g],
    )
    rows = []
    for g in gpus:
        rows.append(
            {
                "uuid": f.gpu_uuid[g],
                "name": "NVIDIA H100 80GB HBM3",
                "pci.bus_id": f.gpu_pci[g],
                "mig.mode.current": "Disabled",
                "utilization.gpu": str(round(st.gpu_util_pct[g])),
                "utilization.memory": str(round(st.gpu_mem_util_pct[g])),
                "memory.used": str(int(st.gpu_mem_used_bytes[g]) // 2**20),
                "memory.total": str(int(st.gpu_mem_total_bytes[g]) // 2**20),
                "memory.reserved": "512",
                "power.draw": f"{st.gpu_power_w[g] + 3:.2f}",  # within tolerance
                "temperature.gpu": str(round(st.gpu_temp_c[g])),
                "temperature.memory": str(round(st.gpu_mem_temp_c[g])),
                "clocks.sm": str(round(st.gpu_sm_clock_mhz[g])),
                "clocks.mem": str(round(st.gpu_mem_clock_mhz[g])),
                "ecc.errors.corrected.volatile.total": str(int(st.gpu_ecc_sbe_total[g])),
                "ecc.errors.uncorrected.volatile.total": str(int(st.gpu_ecc_dbe_total[g])),
                "clocks_throttle_reasons.active": f"0x{int(st.gpu_throttle_reasons[g]):016x}",
            }
        )
    rows[0]["temperature.gpu"] = str(round(st.gpu_temp_c[gpus[0]]) + 9)  # one real mismatch
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"fields": [k for k in rows[0] if k != "uuid"], "rows": rows}))
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_SMI.format(python=sys.executable, table=str(table)))
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    spec = importlib.util.spec_from_file_location("check_real_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--polls", "2"], library=lib)
    out = capsys.readouterr().out
    assert rc == 1 and "1 value(s) differ" in out
    lines = [ln for ln in out.splitlines() if "temperature.gpu" in ln]
    assert len(lines) == 8 and "DIFF (9)" in lines[0] and all(ln.endswith("ok") for ln in lines[1:])
    assert "clocks_event_reasons.active" not in out  # this nvidia-smi does not know it
    assert "poll cost on this GPU host" in out
