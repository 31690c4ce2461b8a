#!/usr/bin/env python3
"""Check the NVML collector against `nvidia-smi` on a machine with NVIDIA GPUs.

Polls the collector on the real `pynvml` and runs `nvidia-smi --query-gpu=...
--format=csv` at the same moment, then prints one row per GPU and field:
field, collector value, nvidia-smi value, verdict (ok / DIFF / n/a). Values that
move between two reads (utilisation, power, clocks) get a tolerance; counters,
sizes and names must match. Also prints the collector's cost per GPU per poll.

Exit status: 0 all compared values agree, 1 some differ, 2 cannot run here
(no NVIDIA driver / NVML, or no nvidia-smi).

    python scripts/check_real_gpu.py [--polls 20]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.nvml.collector import NvmlCollector  # noqa: E402
from collectors.nvml.library import NvmlLibrary, NvmlUnavailable, open_library  # noqa: E402

MIB = 1024 * 1024

# nvidia-smi field -> (collector gpu column, convert collector value, tolerance kind)
FIELDS: dict[str, tuple[str, object, str]] = {
    "utilization.gpu": ("util_pct", None, "pct10"),
    "utilization.memory": ("mem_util_pct", None, "pct10"),
    "memory.used": ("mem_used_bytes", lambda b: b / MIB, "mem"),
    "memory.total": ("mem_total_bytes", lambda b: b / MIB, "mib1"),
    "memory.reserved": ("mem_reserved_bytes", lambda b: b / MIB, "mib1"),
    "power.draw": ("power_w", None, "power"),
    "temperature.gpu": ("temp_c", None, "deg2"),
    "temperature.memory": ("mem_temp_c", None, "deg2"),
    "clocks.sm": ("sm_clock_mhz", None, "clock"),
    "clocks.mem": ("mem_clock_mhz", None, "clock"),
    "ecc.errors.corrected.volatile.total": ("ecc_sbe_total", None, "exact"),
    "ecc.errors.uncorrected.volatile.total": ("ecc_dbe_total", None, "exact"),
    "clocks_event_reasons.active": ("throttle_reasons", None, "hex"),
    "clocks_throttle_reasons.active": ("throttle_reasons", None, "hex"),
}
INVENTORY = {"name": "name", "pci.bus_id": "pci_bus_id", "mig.mode.current": "mig_mode"}


def _num(text: str) -> float | None:
    text = text.strip()
    if not text or text.startswith("[") or text in ("N/A", "Not Supported"):
        return None
    try:
        return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
    except ValueError:
        return None


def query_smi(smi: str, fields: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """nvidia-smi rows keyed by field; fields this nvidia-smi does not know are dropped."""
    fields = list(fields)
    while True:
        out = subprocess.run(
            [smi, f"--query-gpu=uuid,{','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode == 0:
            break
        bad = [f for f in fields if f'"{f}"' in out.stdout + out.stderr]
        if not bad:
            raise RuntimeError(f"nvidia-smi failed: {(out.stdout + out.stderr).strip()[:300]}")
        fields = [f for f in fields if f not in bad]
    rows = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        rows.append(dict(zip(["uuid", *fields], parts, strict=False)))
    return fields, rows


def verdict(kind: str, mine: float | None, smi: float | None) -> str:
    if mine is None and smi is None:
        return "n/a"
    if mine is None or smi is None:
        return "DIFF (one side has no value)"
    d = abs(mine - smi)
    ok = {
        "pct10": d <= 10,
        "mem": d <= max(64, 0.02 * smi),
        "mib1": d <= 1.5,
        "power": d <= max(15, 0.1 * smi),
        "deg2": d <= 2,
        "clock": d <= max(30, 0.05 * smi),
        "exact": d == 0,
        "hex": d == 0,
    }[kind]
    return "ok" if ok else f"DIFF ({d:.3g})"


def main(argv: list[str] | None = None, library: NvmlLibrary | None = None) -> int:
    """`library` is for testing this script's own logic (tests pass the fake)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--polls", type=int, default=20, help="polls to time (default 20)")
    args = ap.parse_args(argv)
    try:
        lib = library or open_library("real")
    except NvmlUnavailable as exc:
        print(
            f"check_real_gpu: cannot run here: {exc} (needs an NVIDIA GPU and driver)",
            file=sys.stderr,
        )
        return 2
    smi = shutil.which("nvidia-smi")
    if smi is None:
        print("check_real_gpu: cannot run here: nvidia-smi is not on PATH", file=sys.stderr)
        return 2
    col = NvmlCollector(lib, processes_every=1, events=False)
    try:
        wanted = list(FIELDS) + list(INVENTORY)
        smi_out: dict[str, object] = {}

        def run_smi() -> None:
            try:
                smi_out["v"] = query_smi(smi, wanted)
            except Exception as exc:  # reported below
                smi_out["e"] = exc

        t = threading.Thread(target=run_smi)
        t.start()  # both read the GPUs at the same moment
        poll = col.poll()
        t.join()
        if "e" in smi_out:
            print(f"check_real_gpu: {smi_out['e']}", file=sys.stderr)
            return 2
        fields, rows = smi_out["v"]  # type: ignore[misc]
        inv = col.inventory()["gpus"]
        print(f"driver {col.driver_version}; {len(poll.gpu['uuid'])} GPU(s); lost: {poll.lost}")
        print(f"{'GPU':>3}  {'field':<40} {'collector':>16} {'nvidia-smi':>16}  verdict")
        bad = 0
        by_uuid = {r["uuid"]: r for r in rows}
        for i, uuid in enumerate(poll.gpu["uuid"]):
            row = by_uuid.get(uuid)
            if row is None:
                print(f"{i:>3}  {uuid}: not in nvidia-smi's list  DIFF")
                bad += 1
                continue
            for f in fields:
                if f in INVENTORY:
                    k = INVENTORY[f]
                    j = inv["uuid"].index(uuid)
                    mine_s = str(inv[k][j])
                    theirs = row.get(f, "")
                    if k == "mig_mode":
                        mine_s = "Enabled" if inv[k][j] else "Disabled"
                        ok = theirs in (mine_s, "[N/A]", "N/A") or (
                            not inv[k][j] and "Not Supported" in theirs
                        )
                    else:
                        ok = mine_s.lower() == theirs.lower()
                    bad += not ok
                    print(
                        f"{i:>3}  {f:<40} {mine_s[:16]:>16} {theirs[:16]:>16}  "
                        f"{'ok' if ok else 'DIFF'}"
                    )
                    continue
                column, conv, kind = FIELDS[f]
                raw = poll.gpu[column][i]
                mine = None if raw is None else float(conv(raw) if conv else raw)
                theirs = _num(row.get(f, ""))
                v = verdict(kind, mine, theirs)
                bad += v.startswith("DIFF")
                ms = "NULL" if mine is None else f"{mine:.6g}"
                ts = "n/a" if theirs is None else f"{theirs:.6g}"
                print(f"{i:>3}  {f:<40} {ms:>16} {ts:>16}  {v}")
        n = max(len(col.gpus), 1)
        t0 = time.perf_counter()
        for _ in range(args.polls):
            col.poll()
        per_poll = (time.perf_counter() - t0) / args.polls
        t0 = time.perf_counter()
        col.processes_every = 10**9
        col._polls = 1
        for _ in range(args.polls):
            col.poll()
        no_procs = (time.perf_counter() - t0) / args.polls
        print(
            f"poll cost on this GPU host: {per_poll / n * 1e3:.3f} ms per GPU with processes, "
            f"{no_procs / n * 1e3:.3f} ms per GPU without ({n} GPU(s), {args.polls} polls)"
        )
        if col.notes:
            print("notes: " + "; ".join(sorted(set(col.notes))))
        print(f"{'all compared values agree' if not bad else f'{bad} value(s) differ'}")
        return 1 if bad else 0
    finally:
        col.close()


if __name__ == "__main__":
    sys.exit(main())
