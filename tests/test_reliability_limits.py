"""Limits that keep the daemon alive (issue 11): options refused with one line,
periodic tasks on schedule under overload, retention over every time-series table,
bounded per-host state and a cap on new hosts, bounded DuckDB memory."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta

import pytest

from collectors.mqtt_source import MqttOptions, MqttSource
from collectors.options import OptionsError, parse_options
from collectors.scrape_source import ScrapeOptions
from collectors.sim.source import SimOptions, SimSource
from fleettui.alerts.config import AlertsOptions
from fleettui.config import DaemonOptions
from fleettui.runtime import Runtime
from storage.batch import make_batch
from storage.retention import RetentionTask, time_series_tables
from storage.store import Store
from tests.test_mqtt_report import NOW, _report

T0 = datetime(2026, 1, 1)


# -- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "key", "value", "says"),
    [
        (SimOptions, "interval_s", float("nan"), "finite"),
        (SimOptions, "interval_s", float("inf"), "finite"),
        (MqttOptions, "reconnect_max_s", -1, ">= 0"),
        (MqttOptions, "max_future_s", -5.0, ">= 0"),
        (MqttOptions, "max_age_s", float("-inf"), "finite"),
        (MqttOptions, "flush_interval_s", float("nan"), "finite"),
        (ScrapeOptions, "max_body_bytes", -1, ">= 0"),
        (DaemonOptions, "retention_h", float("nan"), "finite"),
        (DaemonOptions, "store_failure_max_s", -1.0, ">= 0"),
        (AlertsOptions, "timeout_s", float("inf"), "finite"),
    ],
)
def test_non_finite_and_negative_numbers_are_refused_with_one_line(cls, key, value, says):
    raw = {key: value}
    if cls is ScrapeOptions:
        raw["targets"] = [{"url": "http://127.0.0.1:1/metrics"}]
    with pytest.raises(OptionsError) as err:
        parse_options(cls, raw, "fleet.toml [x]")
    msg = str(err.value)
    assert "\n" not in msg and f"'{key}'" in msg and says in msg and "fleet.toml" in msg


def test_a_signed_key_may_be_negative():
    from fleettui.alerts.rules import ExprSpec

    spec = parse_options(ExprSpec, {"metric": "temp_c", "op": "<", "threshold": -10}, "r")
    assert spec.threshold == -10


def test_path_errors_are_one_line_without_traceback(fleettui, tmp_path):
    bad_utf8 = tmp_path / "latin1.toml"
    bad_utf8.write_bytes(b"# caf\xe9\n[daemon]\n")
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    nan_cfg = tmp_path / "nan.toml"
    nan_cfg.write_text('[[sources]]\nkind = "sim"\ninterval_s = nan\n')
    cases = [
        (["daemon", "--sim", "--db", "/proc/nope/x.duckdb"], "/proc/nope"),
        (["daemon", "--sim", "--db", str(a_dir)], "is a directory"),
        (["daemon", "--config", str(bad_utf8)], "not UTF-8"),
        (["daemon", "--config", str(a_dir)], "is a directory"),
        (["daemon", "--config", str(nan_cfg)], "finite"),
    ]
    for args, says in cases:
        res = fleettui(*args, timeout=60)
        assert res.returncode != 0, args
        err = res.stderr.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1 and says in err, (args, err)


def test_duckdb_memory_limit_is_bounded_by_default_and_configurable():
    store = Store.open(":memory:")
    limit = store.con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    value, unit = float(limit.split()[0]), limit.split()[1]
    assert unit in ("MiB", "GiB") and value * (1024 if unit == "GiB" else 1) <= 4096
    small = Store.open(":memory:", memory_limit="300MiB")
    assert small.con.execute("SELECT current_setting('memory_limit')").fetchone()[0] in (
        "300.0 MiB",
        "300 MiB",
    )
    with pytest.raises(ValueError, match="memory_limit"):
        DaemonOptions(memory_limit="lots")


# -- overload ---------------------------------------------------------------------------------
class SlowStore(Store):
    """Every write takes 0.3 s: the write queue never drains while the flood lasts."""

    def write(self, batches):
        time.sleep(0.3)
        return super().write(batches)


class Flood:
    name = "flood"

    async def run(self, sink):
        i = 0
        while True:
            i += 1
            await sink([make_batch("events", {"ts": [T0], "kind": ["x"], "code": [i]})])


class Ticker:
    name = "ticker"
    interval_s = 0.2

    def __init__(self):
        self.ticks = 0

    async def tick(self, now):
        self.ticks += 1


async def test_periodic_tasks_keep_their_schedule_while_the_write_queue_is_full():
    con = Store.open(":memory:")
    store = SlowStore(con.con, ":memory:", False)
    ticker = Ticker()
    rt = Runtime(store, [Flood()], [ticker], queue_size=8)
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    await asyncio.sleep(1.0)
    depth = rt.stats_dict()
    await asyncio.sleep(1.0)
    stop.set()
    await task
    assert ticker.ticks >= 7  # 2 s / 0.2 s = 10, on the old code 0 (waited on queue.join)
    assert depth["queue_depth"] == 8 and depth["queue_max"] == 8  # back-pressure visible
    assert depth["queue_oldest_s"] > 0.2 and depth["last_write_lag_s"] > 0


# -- retention --------------------------------------------------------------------------------
def test_retention_tables_come_from_the_schema():
    store = Store.open(":memory:")
    tables = set(time_series_tables(store))
    assert {
        "gpu_values",  # `gpu_samples` is a view over it since 0019
        "gpu_mem_samples",
        "process_listings",  # `processes` is a view over it since 0018
        "collector_runs",
        "rejects",
        "events",
        "slice_values",  # `slice_samples` is a view over it since 0019
        "link_values",  # `link_samples` is a view over it since 0018
        "latency_samples",
    } <= tables
    assert not tables & {"hosts", "gpus", "host_status", "alerts", "silences", "assignments"}
    store.con.execute("CREATE TABLE future_samples (ts TIMESTAMP, v DOUBLE)")
    assert "future_samples" in time_series_tables(store)  # a later migration's table too


async def test_retention_deletes_old_rows_of_every_table_in_small_steps():
    store = Store.open(":memory:")
    src = SimSource()
    for i in range(6):
        store.write(src.sample(T0 + timedelta(minutes=i)).batches)
    inserts = [
        "INSERT INTO rejects (ts, source, reason) SELECT ? + INTERVAL (i) MINUTE, 'mqtt', 'bad'",
        "INSERT INTO collector_runs (ts, collector, duration_ms, ok, rows)"
        " SELECT ? + INTERVAL (i) MINUTE, 'sim', 1, true, 0",
        "INSERT INTO process_listings (ts, process_id) SELECT ? + INTERVAL (i) MINUTE, 1",
        "INSERT INTO gpu_mem_samples (ts, host, gpu_uuid) SELECT ? + INTERVAL (i) MINUTE,"
        " 'h', 'GPU-1'",
    ]
    for sql in inserts:
        store.con.execute(sql + " FROM range(6) t(i)", [T0])
    task = RetentionTask(store, keep_h=1.0, step_rows=500)
    cutoff = T0 + timedelta(minutes=3)
    old = {
        t: store.con.execute(f"SELECT count(*) FROM {t} WHERE ts < ?", [cutoff]).fetchone()[0]
        for t in time_series_tables(store)
    }
    await task.tick(cutoff + timedelta(hours=1))
    for t in time_series_tables(store):
        left = store.con.execute(f"SELECT count(*) FROM {t} WHERE ts < ?", [cutoff]).fetchone()[0]
        assert left == 0 and task.last_deleted[t] == old[t], t
    assert task.last_steps > len(old)  # gpu_samples alone took several 500-row steps
    assert store.con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] > 0


async def test_raw_rows_wait_for_their_rollups_before_retention_deletes_them():
    store = Store.open(":memory:")
    src = SimSource()
    for i in range(6):
        store.write(src.sample(T0 + timedelta(minutes=i)).batches)
    store.con.execute(
        "INSERT INTO rejects (ts, source, reason) SELECT ? + INTERVAL (i) MINUTE,"
        " 'mqtt', 'bad' FROM range(6) t(i)",
        [T0],
    )
    count = "SELECT count(*) FROM {} WHERE ts < ?"
    task = RetentionTask(store, keep_h=1.0, wait_for_rollups=True)
    now = T0 + timedelta(hours=2)  # every row is past the 1 h horizon
    await task.tick(now)
    # no rollup has run: raw samples stay, a table without rollups is pruned
    assert store.con.execute(count.format("gpu_samples"), [now]).fetchone()[0] > 0
    assert store.con.execute(count.format("rejects"), [now]).fetchone()[0] == 0
    # both tiers of gpu_samples rolled up to minute 3: rows before it go, later ones stay
    done = T0 + timedelta(minutes=3)
    for tier in ("1m", "1h"):
        store.con.execute(
            "INSERT INTO rollup_state VALUES (?, ?, ?)", [f"gpu_samples_{tier}", done, now]
        )
    await task.tick(now)
    assert store.con.execute(count.format("gpu_samples"), [done]).fetchone()[0] == 0
    assert store.con.execute(count.format("gpu_samples"), [now]).fetchone()[0] > 0
    assert store.con.execute(count.format("slice_samples"), [now]).fetchone()[0] > 0


# -- per-host state ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good() -> bytes:
    return _report()


def _as_host(payload: bytes, host: str) -> bytes:
    """The report as another host's, with GPUs of its own (a GPU has one owner)."""
    obj = json.loads(payload.replace(b'"GPU-', f'"GPU-{host}-'.encode()))
    obj["host"] = host
    return json.dumps(obj).encode()


def test_new_hosts_beyond_the_cap_are_rejected_with_a_reason_and_never_stored(good):
    clock = [NOW]
    src = MqttSource(MqttOptions(max_new_hosts_per_min=5), clock=lambda: clock[0])
    src.seed_hosts([("known-1", NOW - 10)])
    store = Store.open(":memory:")
    for h in ["known-1"] + [f"oneoff-{i}" for i in range(20)]:
        src.handle(f"fleettui/{h}/report", _as_host(good, h))
    store.write(src.take_batches()[0])
    hosts = {h for (h,) in store.con.execute("SELECT DISTINCT host FROM gpu_samples").fetchall()}
    assert hosts == {"known-1", *(f"oneoff-{i}" for i in range(5))}
    assert store.con.execute("SELECT count(*) FROM hosts").fetchone()[0] == 6
    reasons = store.con.execute("SELECT DISTINCT reason FROM rejects").fetchall()
    assert len(reasons) == 1 and "max_new_hosts_per_min" in reasons[0][0]
    assert src.stats.hosts_capped == 15
    clock[0] += 60  # next minute: room again
    src.handle("fleettui/oneoff-19/report", _as_host(good, "oneoff-19"))
    assert src._batcher.reports == 1


def test_state_of_hosts_gone_longer_than_host_evict_s_is_dropped(good):
    clock = [NOW]
    src = MqttSource(MqttOptions(host_evict_s=600), clock=lambda: clock[0])
    for i in range(50):
        src.handle(f"fleettui/h{i}/report", _as_host(good, f"h{i}"))
    src.take_batches()
    assert src.hosts_tracked == 50 and len(src._windows) == 50 and len(src._inv_seen) == 50
    clock[0] += 300
    src.handle("fleettui/h0/report", _as_host(good, "h0").replace(b'"seq":7', b'"seq":8'))
    clock[0] += 400  # h1..h49 silent for 700 s, h0 for 400 s
    assert src.evict_idle_hosts(clock[0]) == 49
    assert src.hosts_tracked == 1 and set(src._windows) == {"h0"} and set(src._inv_seen) == {"h0"}


# -- `fleettui sql` while the daemon's store fails -----------------------------------------
def test_sql_says_the_store_failed_not_wrong_token(tmp_path):
    import os as _os

    from fleettui.paths import DaemonInfo, write_daemon_info
    from fleettui.sql_cli import open_reader
    from storage.quack import QuackError, free_port

    db = tmp_path / "fleet.duckdb"
    failure = (
        f"{db}: store failed: invalidated after: Could not write file: No space left on device"
    )
    # a daemon (this process stands in: the info file names a live pid) whose store failed;
    # nothing answers on its endpoint, as when Quack's authorization cannot run any more
    write_daemon_info(
        db,
        DaemonInfo(
            _os.getpid(),
            f"quack:127.0.0.1:{free_port()}",
            "t",
            str(db),
            "2026-01-01T00:00:00",
            None,
            failure,
        ),
    )
    with pytest.raises(QuackError) as err:
        open_reader(str(db), None, None)
    msg = str(err.value)
    assert "cannot use its store" in msg and "No space left" in msg and "token" not in msg
