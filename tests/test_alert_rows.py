"""What the `alerts` table holds when many alerts are open (fleettui/alerts/engine.py).

A cycle writes at once every alert whose state or threshold changed; the
current value, peak, `last_active_at`, `evaluated_at` and annotations of the others
are refreshed in rotation, each at least every `refresh_s`; `flush()` (at shutdown)
writes every row that is behind. Here the every-cycle allowance is 0, so 20 open
GPU alerts are refreshed 5 a cycle (15 s interval, 60 s refresh), and after every
cycle the table is checked against the engine's memory and the values it saw.
"""

import json
from datetime import datetime, timedelta

import pytest

from fleettui.alerts import engine as engine_mod
from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import load_rules_text
from storage.batch import make_batch
from storage.store import Store

T0 = datetime(2026, 11, 26, 3, 0, 0)
STEP_S = 15.0
N = 20

HOT = """
[[rules]]
name = "GpuHotNow"
scope = "gpu"
for = "45s"
annotations.summary = "{{ $labels.host }}: {{ $value | printf \\"%.1f\\" }} C"
expr = { metric = "temp_c", agg = "last", over = "1m", op = ">", threshold = 80 }
"""

COLS = (
    "scope_key, state, started_at, fired_at, resolved_at, peak_value, threshold, last_value,"
    " last_active_at, evaluated_at, json_extract_string(annotations, '$.summary')"
)


def temp(i: int, k: int) -> float:
    """GPU i at cycle k: 90-92 C (no new peak after cycle 2); GPU 0 peaks at 99 in
    cycle 6; GPU 1 cools down in cycle 7 (its alert resolves)."""
    if i == 0 and k == 6:
        return 99.0
    if i == 1 and k >= 7:
        return 50.0
    return 90.0 + (i + k) % 3


def table(store: Store) -> dict[str, tuple]:
    rows = store.cursor().execute(f"SELECT {COLS} FROM alerts").fetchall()
    return {r[0]: r[1:] for r in rows}


@pytest.fixture
def small_allowance(monkeypatch):
    monkeypatch.setattr(engine_mod, "REFRESH_ROWS_EVERY_CYCLE", 0)


def test_changes_are_written_at_once_values_in_rotation_and_flush_catches_up(small_allowance):
    store = Store.open(":memory:")
    engine = AlertEngine(store, load_rules_text(HOT, "hot.toml"), interval_s=STEP_S, refresh_s=60)
    seen: dict[tuple[str, datetime], float] = {}  # (gpu, evaluated at) -> value
    peaks: dict[tuple[str, datetime], float] = {}  # (gpu, evaluated at) -> peak then
    for k in range(12):
        now = T0 + timedelta(seconds=k * STEP_S)
        gpus = [f"GPU-{i:02d}" for i in range(N)]
        store.write(
            [
                make_batch(
                    "gpu_samples",
                    {
                        "ts": [now] * N,
                        "gpu_uuid": gpus,
                        "host": [f"h{i}" for i in range(N)],
                        "temp_c": [temp(i, k) for i in range(N)],
                    },
                )
            ]
        )
        for i, g in enumerate(gpus):
            seen[(g, now)] = temp(i, k)
        cycle = engine.evaluate(now)
        assert cycle.errors == []
        if k >= 4:  # past the firing: 5 rows refreshed a cycle, plus the end (a new peak
            # waits for its turn)
            assert cycle.rows_written == 5 + (k == 7), (k, cycle.rows_written)
        rows = table(store)
        mem = {a.scope_key: a for a in engine.open_alerts()}
        for key, a in mem.items():
            peaks[(key, now)] = a.peak_value
            state, started, fired, resolved, peak, thr, last, active, evaluated, summary = rows[key]
            # state and times: exact after every cycle
            assert (state, started, fired, resolved, thr) == (
                a.state,
                a.started_at,
                a.fired_at,
                a.resolved_at,
                a.threshold,
            ), (k, key)
            # value and peak: as at the row's evaluation, at most 60 s ago
            assert now - evaluated <= timedelta(seconds=60), (k, key, evaluated)
            assert last == seen[(key, evaluated)] and active == evaluated, (k, key)
            assert peak == peaks[(key, evaluated)], (k, key)
            assert summary == f"h{int(key[4:])}: {last:.1f} C", (k, key)
        if k == 10:
            assert rows["GPU-00"][4] == 99.0  # the peak of cycle 6, within 60 s
        if k >= 7:  # resolved at once, with its last value
            assert rows["GPU-01"][:1] == ("resolved",) and rows["GPU-01"][3] == now - timedelta(
                seconds=(k - 7) * STEP_S
            )
            assert "GPU-01" not in mem
    assert {r[0] for r in rows.values()} == {"firing", "resolved"}
    assert any(r[8] < now for r in rows.values())  # some rows are behind before the flush
    assert engine.flush()
    rows = table(store)
    for key, a in mem.items():
        assert (
            rows[key][6:9]
            == (a.last_value, a.last_active_at, a.evaluated_at)
            == (
                seen[(key, now)],
                now,
                now,
            )
        )
        assert rows[key][9] == f"h{int(key[4:])}: {a.last_value:.1f} C"
    # A restarted engine reads back what the flush wrote.
    again = AlertEngine(store, load_rules_text(HOT, "hot.toml"), interval_s=STEP_S)
    back = {a.scope_key: a for a in again.open_alerts()}
    assert back.keys() == mem.keys()
    for key, a in mem.items():
        b = back[key]
        assert (b.state, b.started_at, b.fired_at, b.peak_value, b.last_value) == (
            a.state,
            a.started_at,
            a.fired_at,
            a.peak_value,
            a.last_value,
        )
        assert b.annotations == a.annotations and b.labels == a.labels
    store.close()


def test_a_few_open_alerts_are_all_rewritten_every_cycle():
    """Below the every-cycle allowance the table follows every cycle, as before."""
    store = Store.open(":memory:")
    engine = AlertEngine(store, load_rules_text(HOT, "hot.toml"), interval_s=STEP_S, refresh_s=60)
    for k in range(4):
        now = T0 + timedelta(seconds=k * STEP_S)
        store.write(
            [
                make_batch(
                    "gpu_samples",
                    {
                        "ts": [now] * 3,
                        "gpu_uuid": ["a", "b", "c"],
                        "host": ["h"] * 3,
                        "temp_c": [90.0 + k, 91.0 - k, 90.0],
                    },
                )
            ]
        )
        engine.evaluate(now)
        got = (
            store.cursor()
            .execute(
                "SELECT scope_key, last_value, evaluated_at, annotations FROM alerts ORDER BY 1"
            )
            .fetchall()
        )
        assert [(r[0], r[1], r[2]) for r in got] == [
            ("a", 90.0 + k, now),
            ("b", 91.0 - k, now),
            ("c", 90.0, now),
        ]
        assert json.loads(got[0][3]) == {"summary": f"h: {90.0 + k:.1f} C"}
    store.close()


def test_close_flushes_the_rows_behind(small_allowance):
    import asyncio

    store = Store.open(":memory:")
    engine = AlertEngine(store, load_rules_text(HOT, "hot.toml"), interval_s=STEP_S, refresh_s=60)
    for k in range(3):
        now = T0 + timedelta(seconds=k * STEP_S)
        store.write(
            [
                make_batch(
                    "gpu_samples",
                    {
                        "ts": [now] * N,
                        "gpu_uuid": [f"g{i}" for i in range(N)],
                        "host": ["h"] * N,
                        "temp_c": [85.0 - 0.1 * k] * N,  # falling: no new peak
                    },
                )
            ]
        )
        engine.evaluate(now)
    behind = "SELECT count(*) FROM alerts WHERE evaluated_at < $now"
    assert store.cursor().execute(behind, {"now": now}).fetchone()[0] > 0
    asyncio.run(engine.close())
    assert store.cursor().execute(behind, {"now": now}).fetchone()[0] == 0
    store.close()


def test_refresh_s_comes_from_the_alerts_section_and_is_checked():
    from collectors.options import OptionsError
    from fleettui.alerts.config import alerts_options, build_engine

    store = Store.open(":memory:")
    engine = build_engine(store, alerts_options({"refresh_s": 120}, "fleet.toml [alerts]"))
    assert engine.refresh_s == 120.0
    assert build_engine(store, alerts_options({}, "x")).refresh_s == 60.0
    for bad in (0, -1, float("nan")):
        with pytest.raises(OptionsError, match=r"fleet.toml \[alerts\]: .*refresh_s.* must be"):
            alerts_options({"refresh_s": bad}, "fleet.toml [alerts]")
    store.close()
