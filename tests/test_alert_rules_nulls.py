"""NULL means unknown in every default rule: DCGM-shaped and agent-shaped rows.

DCGM's NVLink counters carry no port state (`link_up` NULL), MIG GPUs have no
whole-GPU utilisation, some sources cannot read throttle reasons or total
memory. A rule that turns NULL into a value (`CASE WHEN x THEN .. ELSE ..`,
`coalesce(x, 0)`, `NOT IN` over a set holding NULL) raises false alerts or
hides real ones.
"""

from datetime import datetime, timedelta

from collectors.promtext.parse import parse_exposition
from collectors.promtext.pipeline import TelemetryPipeline
from collectors.promtext.series import merge
from collectors.sim.exporters import SimExporters
from collectors.sim.model import SimModel
from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import default_rules
from storage.batch import make_batch
from storage.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0)
STEP = timedelta(seconds=15)


def engine(store: Store) -> AlertEngine:
    return AlertEngine(store, default_rules(), interval_s=15.0)


def opened(store: Store, rule: str | None = None) -> list[tuple]:
    q = "SELECT rule, scope_key, state FROM alerts"
    rows = store.cursor().execute(q).fetchall()
    return sorted(r for r in rows if rule is None or r[0] == rule)


def links(store: Store, t: datetime, rows: list[tuple[str, str, bool | None]]) -> None:
    store.write(
        [
            make_batch(
                "link_samples",
                {
                    "ts": [t] * len(rows),
                    "host": [r[0] for r in rows],
                    "kind": ["nvlink"] * len(rows),
                    "port": [r[1] for r in rows],
                    "link_up": [r[2] for r in rows],
                    "errors": [0] * len(rows),
                    "source": ["test"] * len(rows),
                },
            )
        ]
    )


def gpus(store: Store, t: datetime, **cols: list) -> None:
    n = len(cols["gpu_uuid"])
    store.write(
        [
            make_batch(
                "gpu_samples",
                {
                    "ts": [t] * n,
                    "host": ["h1"] * n,
                    "source": ["test"] * n,
                    **cols,
                },
            )
        ]
    )


def test_dcgm_nvlink_rows_with_unknown_link_state_raise_no_link_down():
    """The issue's 2,711 false critical alerts: the simulated fleet's DCGM and
    node_exporter exposition, parsed and mapped as the scrape source does, with the
    default rules evaluated over 3 minutes. DCGM NVLink rows have link_up NULL."""
    start = 1_790_000_000
    model = SimModel(start=float(start), faults=())
    exp = SimExporters(model, ["hgx-03-n4", "hgx-04-n1"])
    pipe = TelemetryPipeline("sim-scrape")
    store = Store.open(":memory:")
    eng = engine(store)
    nvlink_unknown = 0
    for k in range(13):
        t = start + 15 * k
        exp.advance(t)
        snaps = [
            parse_exposition(exp.render(tg.path), tg.path, now=float(t), extra_labels=tg.labels)
            for tg in exp.targets()
        ]
        g = pipe.map(merge(snaps), float(t))
        store.write(g.batches)
        now = datetime.utcfromtimestamp(t)
        nvlink_unknown = (
            store.cursor()
            .execute("SELECT count(*) FROM link_samples WHERE kind = 'nvlink' AND link_up IS NULL")
            .fetchone()[0]
        )
        eng.evaluate(now)
    assert nvlink_unknown > 0, "the DCGM path must give NVLink rows without a port state"
    assert opened(store, "LinkDown") == []
    # IB ports of node_exporter do carry a state: all up in the healthy fleet, and known.
    assert (
        store.cursor()
        .execute("SELECT count(*) FROM link_samples WHERE kind <> 'nvlink' AND link_up IS NULL")
        .fetchone()[0]
        == 0
    )


def test_link_down_fires_on_a_known_down_port_and_unknown_never_resolves_it_as_down():
    store = Store.open(":memory:")
    eng = engine(store)
    t = T0
    for k in range(4):
        links(
            store,
            t,
            [
                ("h1", "nvlink0", None),  # DCGM-shaped: unknown
                ("h1", "nvlink1", True),  # agent-shaped: up
                ("h1", "nvlink2", False),  # agent-shaped: down
                ("h1", "nvlink3", None if k >= 2 else False),  # down, then the state is unknown
            ],
        )
        eng.evaluate(t)
        t += STEP
    assert opened(store, "LinkDown") == [
        ("LinkDown", "h1:nvlink2", "firing"),
        ("LinkDown", "h1:nvlink3", "firing"),  # the last known state in the window is down
    ]
    # Once the window holds only unknown states, the alert is not kept on a guess.
    for _ in range(6):
        links(store, t, [("h1", "nvlink2", False), ("h1", "nvlink3", None)])
        eng.evaluate(t)
        t += STEP
    states = dict((k, s) for _, k, s in opened(store, "LinkDown"))
    assert states == {"h1:nvlink2": "firing", "h1:nvlink3": "resolved"}


def test_unknown_throttle_reasons_neither_raise_nor_hide_a_throttle():
    store = Store.open(":memory:")
    eng = engine(store)
    t = T0
    for k in range(30):  # 7.5 minutes, past the 5-minute `for`
        gpus(
            store,
            t,
            gpu_uuid=["GPU-unknown", "GPU-throttled", "GPU-mixed", "GPU-fine"],
            throttle_reasons=[None, 0x40, None if k % 2 else 0x40, 0],
        )
        eng.evaluate(t)
        t += STEP
    firing = {k for r, k, s in opened(store, "GpuThermalThrottle") if s == "firing"}
    # GPU-mixed: every *known* sample says throttled; the unknown ones must not hide it.
    assert firing == {"GPU-throttled", "GPU-mixed"}


def test_memory_high_with_unknown_or_zero_total_memory_stays_quiet():
    store = Store.open(":memory:")
    eng = engine(store)
    t = T0
    for _ in range(30):
        gpus(
            store,
            t,
            gpu_uuid=["GPU-nototal", "GPU-zero", "GPU-full", "GPU-ok"],
            mem_used_bytes=[80 << 30, 80 << 30, 79 << 30, 10 << 30],
            mem_total_bytes=[None, 0, 80 << 30, 80 << 30],
        )
        eng.evaluate(t)
        t += STEP
    firing = {k for r, k, s in opened(store, "GpuMemoryHigh") if s == "firing"}
    assert firing == {"GPU-full"}


def test_tenant_idle_needs_every_allocated_target_known():
    """A tenant whose allocated GPU reports no utilisation (a MIG parent over DCGM)
    is not "all idle" on the word of its other, idle GPU."""
    store = Store.open(":memory:")
    store.write(
        [
            make_batch(
                "assignments",
                {
                    "tenant": ["t-unknown", "t-unknown", "t-idle"],
                    "gpu_uuid": ["GPU-a", "GPU-b", "GPU-c"],
                    "slice_id": [None, None, None],
                    "fraction": [1.0, 1.0, 1.0],
                    "valid_from": [T0 - STEP] * 3,
                    "valid_to": [None] * 3,
                },
            )
        ]
    )
    eng = engine(store)
    t = T0
    for _ in range(70):  # 17.5 minutes, past the 13-minute `for`
        gpus(store, t, gpu_uuid=["GPU-a", "GPU-b", "GPU-c"], util_pct=[1.0, None, 1.0])
        eng.evaluate(t)
        t += STEP
    firing = {k for r, k, s in opened(store, "TenantAllocationIdle") if s == "firing"}
    assert firing == {"t-idle"}
