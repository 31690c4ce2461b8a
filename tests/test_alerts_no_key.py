"""0027: `alerts` without its PRIMARY KEY, and still one row per alert id.

A batch of new alert ids (`Batch.new_keys`, the engine's new alerts) is inserted
only when none of its ids is in it twice or in the table already; the store looks
them up among the rows started in or after the batch's earliest second (an id names
the second its alert started: `rule|scope_key|started`). Otherwise the batch is
merged, as the key's refusal made it before (storage/store.py `_insert_new_alerts`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pytest

from fleettui.alerts.engine import alert_id
from storage.batch import Batch, make_batch
from storage.store import Store
from tests.test_keyed_tables import old_store

T0 = datetime(2026, 11, 26, 12, 0, 0)


def rows(alerts: list[tuple[str, datetime, str, float]]) -> dict:
    """`alerts` columns for (scope key, started_at, state, value), ids as the engine's."""
    return {
        "alert_id": [alert_id("R", k, at) for k, at, _, _ in alerts],
        "rule": ["R"] * len(alerts),
        "scope": ["gpu"] * len(alerts),
        "scope_key": [k for k, _, _, _ in alerts],
        "severity": ["warning"] * len(alerts),
        "state": [s for _, _, s, _ in alerts],
        "started_at": [at for _, at, _, _ in alerts],
        "last_active_at": [at for _, at, _, _ in alerts],
        "evaluated_at": [at for _, at, _, _ in alerts],
        "last_value": [v for _, _, _, v in alerts],
    }


def new_keys(alerts: list[tuple[str, datetime, str, float]]) -> Batch:
    return Batch("alerts", make_batch("alerts", rows(alerts)).data, new_keys=True)


def stored(store: Store) -> list[tuple]:
    return (
        store.cursor()
        .execute("SELECT alert_id, state, started_at, last_value FROM alerts ORDER BY ALL")
        .fetchall()
    )


@pytest.mark.parametrize(("held_us", "again_us"), [(0, 500_000), (200_000, 700_000), (900, 0)])
def test_a_new_id_held_by_a_row_started_in_its_second_is_merged(held_us, again_us):
    """An engine restarted with its clock behind raises an id the table holds: that
    row started in the id's second, maybe earlier in it than the new one (the look-up
    reads rows from the batch's earliest whole second on, not from its earliest time)."""
    store = Store.open(":memory:")
    try:
        held = T0 + timedelta(microseconds=held_us)
        store.write([new_keys([("GPU-a", held, "firing", 90.0)])])
        again = T0 + timedelta(microseconds=again_us)
        store.write(
            [new_keys([("GPU-a", again, "pending", 85.0), ("GPU-b", again, "pending", 1.0)])]
        )
        assert stored(store) == [
            (alert_id("R", "GPU-a", T0), "pending", again, 85.0),
            (alert_id("R", "GPU-b", T0), "pending", again, 1.0),
        ]
    finally:
        store.close()


def test_an_id_twice_in_one_batch_of_new_ids_is_stored_once():
    store = Store.open(":memory:")
    try:
        store.write([new_keys([("GPU-a", T0, "pending", 1.0), ("GPU-a", T0, "pending", 1.0)])])
        assert stored(store) == [(alert_id("R", "GPU-a", T0), "pending", T0, 1.0)]
    finally:
        store.close()


def test_new_ids_beside_older_alerts_are_inserted_and_a_null_id_refused():
    store = Store.open(":memory:")
    try:
        old = [(f"GPU-{i}", T0 + timedelta(seconds=i), "resolved", 1.0) for i in range(3)]
        store.write([new_keys(old)])
        later = T0 + timedelta(seconds=30)
        store.write([new_keys([("GPU-0", later, "pending", 2.0)])])  # a new instance
        assert len(stored(store)) == 4
        bad = make_batch("alerts", rows([("GPU-9", later, "pending", 3.0)]))
        data = bad.data.set_column(0, "alert_id", pa.array([None], pa.string()))
        with pytest.raises(duckdb.ConstraintException):
            store.write([Batch("alerts", data, new_keys=True)])
        assert len(stored(store)) == 4
    finally:
        store.close()


def test_a_version_26_store_keeps_its_alerts_in_start_order_without_the_key(tmp_path):
    path = tmp_path / "v26.duckdb"
    con = old_store(path, 26)
    for k, at in (("GPU-b", T0 + timedelta(seconds=30)), ("GPU-a", T0), ("GPU-c", T0)):
        con.execute(
            "INSERT INTO alerts (alert_id, rule, scope, scope_key, severity, state, started_at,"
            " last_active_at, evaluated_at, labels) VALUES (?, 'R', 'gpu', ?, 'warning',"
            " 'firing', ?, ?, ?, '{}')",
            [alert_id("R", k, at), k, at, at, at],
        )
    before = con.execute("SELECT * FROM alerts ORDER BY started_at, alert_id").fetchall()
    con.close()
    store = Store.open(path)
    try:
        cur = store.cursor()
        assert cur.execute("SELECT * FROM alerts").fetchall() == before  # in start order
        keys = cur.execute(
            "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = 'alerts'"
        ).fetchall()
        assert sorted(k for (k,) in keys) == ["CHECK", "NOT NULL"] + ["NOT NULL"] * 8
        with pytest.raises(duckdb.ConstraintException):  # the id stays NOT NULL
            cur.execute(
                "INSERT INTO alerts (alert_id, rule, scope, scope_key, severity, state,"
                " started_at, last_active_at, evaluated_at) VALUES (NULL, 'R', 'gpu', 'k',"
                " 'warning', 'firing', ?, ?, ?)",
                [T0, T0, T0],
            )
    finally:
        store.close()
