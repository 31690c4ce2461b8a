"""The real-GPU check: runs against NVIDIA's NVML where there is one, says why not elsewhere."""

from __future__ import annotations

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
    out = subprocess.run([sys.executable, str(SCRIPT), "--polls", "5"], capture_output=True,
                         text=True, timeout=300)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all compared values agree" in out.stdout


@pytest.mark.skipif(HAVE_GPU, reason="this machine has NVML")
def test_check_script_without_nvml_says_so_and_exits_2():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("check_real_gpu: cannot run here: NVML cannot start")
    assert "Traceback" not in out.stderr
