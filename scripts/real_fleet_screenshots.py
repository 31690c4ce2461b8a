"""SVG screenshots of the rack, tenants and fabric views on two fleets with no simulator
in the store (tests/real_fleets.py), and a summary of what each store holds:

- agent-only: fake-NVML agents -> a real Mosquitto -> an mqtt-only runtime, placed by
  a topology file, the agent's --rack and a host-name pattern (one host unplaced);
- exporter-only: real dcgm-exporter and vLLM captures -> a real Prometheus -> a
  prometheus-only runtime, racks from a topology file and a `rack` target label.

Needs `mosquitto` and `prometheus` (Debian packages) and the real captures.

    .venv/bin/python scripts/real_fleet_screenshots.py docs/screenshots [--width 160 --height 48]

writes agent-only-{rack,tenants,fabric}.svg and exporter-only-{rack,tenants,fabric}.svg.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleettui.tui.app import FleetApp  # noqa: E402
from fleettui.tui.screenshots import settle  # noqa: E402
from tests.real_fleets import (  # noqa: E402
    CAPTURES,
    CaptureServer,
    Fleet,
    agent_only_fleet,
    exporter_only_fleet,
    wait_for_captures,
)
from tests.services import prometheus as prom_service  # noqa: E402
from tests.services.mosquitto import Broker  # noqa: E402

SHOTS = (("rack", ()), ("tenants", ("3",)), ("fabric", ("2",)))
SUMMARY_SQL = """
SELECT (SELECT count(*) FROM hosts) AS hosts,
       (SELECT count(*) FROM hosts WHERE rack IS NULL) AS unplaced_hosts,
       (SELECT count(DISTINCT rack) FROM hosts) AS racks,
       (SELECT count(*) FROM gpus) AS gpus,
       (SELECT count(*) FROM tenants) AS tenants,
       (SELECT count(*) FROM assignments WHERE valid_to IS NULL) AS open_assignments,
       (SELECT count(*) FROM endpoints) AS endpoints,
       (SELECT count(*) FROM latency_samples) AS latency_rows,
       (SELECT count(*) FROM link_samples) AS link_rows,
       (SELECT string_agg(DISTINCT source, ',') FROM gpu_samples) AS sources
"""


async def shoot(fleet: Fleet, prefix: str, out: Path, size: tuple[int, int]) -> list[Path]:
    written = []
    for name, keys in SHOTS:
        app = FleetApp(
            fleet.store.con, clock=lambda: fleet.at, refresh_s=3600.0, show_timings=False
        )
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            for key in keys:
                await pilot.press(key)
                await settle(pilot)
            path = out / f"{prefix}-{name}.svg"
            app.save_screenshot(filename=path.name, path=str(out))
            written.append(path)
    return written


def summary(name: str, fleet: Fleet) -> None:
    cur = fleet.store.cursor()
    row = cur.execute(SUMMARY_SQL).fetchone()
    cols = [d[0] for d in cur.description]
    print(f"{name}: " + ", ".join(f"{c}={v}" for c, v in zip(cols, row, strict=True)))
    for host, cluster, rack, slot in cur.execute(
        "SELECT host, cluster, rack, rack_slot FROM hosts ORDER BY rack NULLS LAST, host"
    ).fetchall():
        print(f"  {host:<28} cluster={cluster} rack={rack} slot={slot}")
    print(
        "  tenants: "
        + ", ".join(
            t for (t,) in cur.execute("SELECT tenant FROM tenants ORDER BY tenant").fetchall()
        )
    )
    cur.close()


async def main_async(out: Path, size: tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory(prefix="fleettui-real-") as tmp:
        tmp_path = Path(tmp)
        broker = Broker(tmp_path / "mosquitto")
        broker.start()
        try:
            (tmp_path / "agent").mkdir()
            fleet = await agent_only_fleet(tmp_path / "agent", broker.address)
        finally:
            broker.stop()
        summary("agent-only", fleet)
        for p in await shoot(fleet, "agent-only", out, size):
            print(p)
        fleet.store.close()

        server = CaptureServer()
        (tmp_path / "prom").mkdir()
        prom = prom_service.start(
            [
                prom_service.ScrapeTarget(f"127.0.0.1:{server.port}", path, labels)
                for path, _parts, labels in CAPTURES
            ],
            tmp_path / "prom",
        )
        try:
            wait_for_captures(prom.url)
            (tmp_path / "exporter").mkdir()
            fleet = await exporter_only_fleet(tmp_path / "exporter", prom.url)
        finally:
            prom_service.stop(prom)
            server.close()
        summary("exporter-only", fleet)
        for p in await shoot(fleet, "exporter-only", out, size):
            print(p)
        fleet.store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=48)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args.out, (args.width, args.height)))


if __name__ == "__main__":
    main()
