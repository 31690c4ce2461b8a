"""Which NVML the collector talks to: NVIDIA's `pynvml` or the simulated fake.

The choice is injected through `open_library`, never by patching modules, so the
collector code is the same in production, the demo and the tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class NvmlUnavailable(RuntimeError):
    """No usable NVML on this machine (no driver, no library, no GPU); one line for a person."""


@dataclass(slots=True)
class NvmlLibrary:
    nvml: Any  # the pynvml module or a FakeNvml: same function names and errors
    read_cgroup: Callable[[int], str | None]  # pid -> cgroup path (or None)
    kind: str  # "real" or "fake"


def read_proc_cgroup(pid: int) -> str | None:
    """The cgroup line of /proc/<pid>/cgroup (v2 "0::/..." preferred), or None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    lines = [ln for ln in text.splitlines() if ln]
    for ln in lines:
        if ln.startswith("0::"):
            return ln
    return lines[0] if lines else None


_CONTAINER = re.compile(r"(?:docker|cri-containerd|crio|containerd|libpod)[-:]([0-9a-f]{12,64})")
_TENANT = re.compile(r"tenant[-_=]([A-Za-z0-9][A-Za-z0-9_-]*?)(?:\.slice|\.scope|/|$)")


def container_of(cgroup: str | None) -> str | None:
    """Container id (first 12 hex digits) from a cgroup path, if it names one."""
    if not cgroup:
        return None
    m = _CONTAINER.search(cgroup)
    return m.group(1)[:12] if m else None


def tenant_of(cgroup: str | None) -> str | None:
    """Tenant from a `tenant-<name>` component of a cgroup path (our slice convention)."""
    if not cgroup:
        return None
    m = _TENANT.search(cgroup)
    return m.group(1) if m else None


def open_real() -> NvmlLibrary:
    """NVIDIA's binding, initialised; NvmlUnavailable with the reason when it cannot be."""
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise NvmlUnavailable(f"the nvidia-ml-py package is not installed: {exc}") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML cannot start on this machine: {exc}") from exc
    except OSError as exc:
        raise NvmlUnavailable(f"NVML library cannot be loaded: {exc}") from exc
    return NvmlLibrary(pynvml, read_proc_cgroup, "real")


def open_fake(host: str, *, seed: int = 7, scale: int = 1, **fake_options: Any) -> NvmlLibrary:
    """A fake NVML for `host` of the simulated fleet (see collectors/nvml/fake.py)."""
    from collectors.nvml.fake import FakeNvml
    from collectors.sim.model import SimModel

    states = fake_options.pop("states", None) or SimModel(seed=seed, scale=scale)
    fake = FakeNvml(states, host, **fake_options)
    fake.nvmlInit()
    return NvmlLibrary(fake, fake.cgroup_of, "fake")


def open_library(kind: str = "real", **options: Any) -> NvmlLibrary:
    """ "real" (pynvml) or "fake" (options: host, seed, scale, clock, old_driver, ...)."""
    if kind == "real":
        return open_real()
    if kind == "fake":
        host = options.pop("host", None)
        if not host:
            raise ValueError("the fake NVML needs the simulated host it plays (host=...)")
        return open_fake(host, **options)
    raise ValueError(f"unknown NVML library {kind!r} (known: real, fake)")
