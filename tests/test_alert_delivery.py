"""Alert delivery: exact Alertmanager API v2 payloads, retries, MQTT through a real Mosquitto."""

import asyncio
import json
import socket
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiomqtt
import pytest

from collectors.options import OptionsError
from fleettui.alerts.config import AlertsOptions, alerts_options, build_engine
from fleettui.alerts.delivery import AlertmanagerDelivery, MqttDelivery
from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import load_rules_text
from storage.batch import make_batch
from storage.store import Store
from tests.services.mosquitto import Broker

T0 = datetime(2026, 11, 26, 12, 0, 0)

RULE = """
[[rules]]
name = "SlowTokens"
scope = "endpoint"
severity = "critical"
expr = { metric = "itl_p99_ms", agg = "last", over = "1m", op = ">", threshold = "itl_target_ms" }
labels = { team = "serving" }
annotations.summary = "{{ $scope_key }} ITL p99 {{ $value | printf \\"%.0f\\" }} ms"
"""


class Receiver:
    """An Alertmanager-compatible endpoint: POST /api/v2/alerts, answers from a script."""

    def __init__(self, statuses=()):
        self.bodies, self.attempts, self.statuses = [], 0, list(statuses)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                status = outer.statuses.pop(0) if outer.statuses else 200
                if self.path == "/api/v2/alerts" and status == 200:
                    assert self.headers["Content-Type"] == "application/json"
                    outer.bodies.append(json.loads(body))
                self.send_response(status if self.path == "/api/v2/alerts" else 404)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def store_with_endpoint() -> Store:
    store = Store.open(":memory:")
    store.write(
        [
            make_batch(
                "endpoints",
                {
                    "endpoint": ["ep-a"],
                    "tenant": ["t1"],
                    "model": ["m-a"],
                    "itl_target_ms": [50.0],
                },
            )
        ]
    )
    return store


def itl(store, t, value):
    store.write(
        [
            make_batch(
                "latency_samples",
                {
                    "ts": [t],
                    "endpoint": ["ep-a"],
                    "tenant": ["t1"],
                    "model": ["m-a"],
                    "itl_p99_ms": [value],
                },
            )
        ]
    )


async def test_alertmanager_gets_the_exact_v2_payload_for_firing_and_resolved():
    store = store_with_endpoint()
    with Receiver() as am:
        delivery = AlertmanagerDelivery(am.url, valid_s=240)
        engine = AlertEngine(
            store, load_rules_text(RULE, "t.toml"), interval_s=15, delivery=delivery
        )
        itl(store, T0, 80.0)
        await engine.tick(T0)
        assert await delivery.drain(5)
        t1 = T0 + timedelta(seconds=15)
        itl(store, t1, 10.0)
        await engine.tick(t1)
        assert await delivery.drain(5)
        await delivery.close()
    labels = {
        "alertname": "SlowTokens",
        "model": "m-a",
        "scope": "endpoint",
        "scope_key": "ep-a",
        "severity": "critical",
        "team": "serving",
        "tenant": "t1",
    }
    annotations = {"summary": "ep-a ITL p99 80 ms"}
    assert am.bodies == [
        [
            {
                "labels": labels,
                "annotations": annotations,
                "startsAt": "2026-11-26T12:00:00.000Z",
                "endsAt": "2026-11-26T12:04:00.000Z",
            }
        ],
        [
            {
                "labels": labels,
                "annotations": annotations,
                "startsAt": "2026-11-26T12:00:00.000Z",
                "endsAt": "2026-11-26T12:00:15.000Z",
            }
        ],
    ]


async def test_alertmanager_delivery_retries_server_errors_until_confirmed_but_not_client_errors():
    store = store_with_endpoint()
    itl(store, T0, 80.0)
    engine = AlertEngine(store, load_rules_text(RULE, "t.toml"))
    notes = engine.evaluate(T0).transitions
    from fleettui.alerts.engine import Notification

    notes = [Notification("fired", a) for a, _, to in notes if to == "firing"]
    with Receiver(statuses=[503, 500, 503, 500]) as am:
        d = AlertmanagerDelivery(am.url, backoff_s=0.01)
        await d.send(notes, T0)  # only queues
        assert await d.drain(5)
        await d.close()
    assert (am.attempts, len(am.bodies), d.sent_batches, d.stats.confirmed) == (5, 1, 1, 1)
    assert (d.stats.attempts_failed, d.stats.dropped, d.queued) == (4, 0, 0)
    with Receiver(statuses=[400]) as am:
        d = AlertmanagerDelivery(am.url, backoff_s=0.01)
        await d.send(notes, T0)
        assert await d.drain(5)
        await d.close()
    assert (am.attempts, am.bodies, d.stats.dropped, d.stats.confirmed) == (1, [], 1, 0)
    assert d.stats.last_error == f"HTTP 400 from {am.url}/api/v2/alerts"


async def test_a_queue_beyond_its_bound_drops_the_oldest_and_counts_it():
    store = store_with_endpoint()
    itl(store, T0, 80.0)
    (a,) = [
        a
        for a, _, to in AlertEngine(store, load_rules_text(RULE, "t.toml")).evaluate(T0).transitions
        if to == "firing"
    ]
    from dataclasses import replace

    from fleettui.alerts.engine import Notification

    notes = [Notification("fired", replace(a, alert_id=f"id-{i}")) for i in range(5)]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = AlertmanagerDelivery(f"http://127.0.0.1:{port}", backoff_s=10, max_queued=3)
    await d.send(notes, T0)
    assert (d.queued, d.stats.dropped) == (3, 2)
    assert list(d._queue) == ["id-2", "id-3", "id-4"]  # the newest kept
    assert not await d.drain(0.3)
    await d.close(0.1)
    assert d.stats.attempts_failed >= 1 and "Connection refused" in d.stats.last_error


class Trickler:
    """A peer that accepts, then sends one byte every `every_s`: never a full answer."""

    def __init__(self, every_s: float = 0.5):
        self.every_s = every_s
        self.connections = 0

    async def __aenter__(self):
        async def handle(reader, writer):
            self.connections += 1
            try:
                for b in b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n":
                    writer.write(bytes([b]))
                    await writer.drain()
                    await asyncio.sleep(self.every_s)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()


async def test_a_trickling_alertmanager_is_cut_at_the_deadline_and_never_counted_sent():
    store = store_with_endpoint()
    itl(store, T0, 80.0)
    engine = AlertEngine(store, load_rules_text(RULE, "t.toml"))
    from fleettui.alerts.engine import Notification

    notes = [
        Notification("fired", a) for a, _, to in engine.evaluate(T0).transitions if to == "firing"
    ]
    async with Trickler(every_s=0.3) as peer:
        d = AlertmanagerDelivery(peer.url, backoff_s=0.05, timeout_s=1.0)
        t0 = asyncio.get_running_loop().time()
        await d.send(notes, T0)
        assert asyncio.get_running_loop().time() - t0 < 0.1  # the engine is never held up
        assert not await d.drain(3.5)
        await d.close(0.1)
    # each attempt cut at 1 s although a byte came every 0.3 s
    assert 2 <= d.stats.attempts_failed <= 4
    assert peer.connections - d.stats.attempts_failed in (0, 1)  # + one cut by close()
    assert "no answer within the 1 s deadline" in d.stats.last_error
    assert (d.stats.confirmed, d.queued) == (0, 1)


@pytest.fixture
def mosquitto(tmp_path):
    broker = Broker(tmp_path / "mqtt")
    broker.start()
    try:
        yield broker.port
    finally:
        broker.stop()


@pytest.mark.integration
async def test_mqtt_gets_one_message_per_transition(mosquitto):
    store = store_with_endpoint()
    delivery = MqttDelivery("127.0.0.1", mosquitto, topic="fleet/alerts/{severity}/{rule}")
    engine = AlertEngine(store, load_rules_text(RULE, "t.toml"), delivery=delivery, resend_s=1)
    got = []
    async with aiomqtt.Client("127.0.0.1", mosquitto) as sub:
        await sub.subscribe("fleet/alerts/#", qos=1)
        for i, value in enumerate([80.0, 80.0, 10.0]):  # fires, is still firing, resolves
            t = T0 + timedelta(seconds=15 * i)
            itl(store, t, value)
            await engine.tick(t)

        async def two():
            async for msg in sub.messages:
                got.append((str(msg.topic), json.loads(msg.payload)))
                if len(got) == 2:
                    return

        await asyncio.wait_for(two(), timeout=10)
        with pytest.raises(TimeoutError):  # and nothing more (no message for the resend)
            await asyncio.wait_for(two(), timeout=0.5)
    assert [(topic, m["event"], m["state"]) for topic, m in got] == [
        ("fleet/alerts/critical/SlowTokens", "fired", "firing"),
        ("fleet/alerts/critical/SlowTokens", "resolved", "resolved"),
    ]
    fired = got[0][1]
    assert fired["scope_key"] == "ep-a" and fired["value"] == 80.0 and fired["threshold"] == 50.0
    assert fired["fired_at"] == "2026-11-26T12:00:00.000Z" and fired["resolved_at"] is None
    assert fired["annotations"] == {"summary": "ep-a ITL p99 80 ms"}
    assert got[1][1]["resolved_at"] == "2026-11-26T12:00:30.000Z"
    assert delivery.published == 2 and delivery.stats.confirmed == 2
    await delivery.close()


def test_alerts_config_section_is_validated_and_builds_the_engine(tmp_path):
    o = alerts_options(
        {"interval_s": 10, "alertmanager_url": "http://am:9093", "mqtt_host": "broker"},
        "fleet.toml [alerts]",
    )
    assert o == AlertsOptions(
        interval_s=10.0, alertmanager_url="http://am:9093", mqtt_host="broker"
    )
    with pytest.raises(OptionsError, match=r"fleet.toml \[alerts\]: unknown key 'intervl_s'"):
        alerts_options({"intervl_s": 10}, "fleet.toml [alerts]")
    with pytest.raises(OptionsError, match="alertmanager_url must start with http"):
        alerts_options({"alertmanager_url": "am:9093"}, "fleet.toml [alerts]")
    with pytest.raises(OptionsError, match="mqtt_topic"):
        alerts_options({"mqtt_topic": "a/{tenant}"}, "fleet.toml [alerts]")
    (tmp_path / "site.toml").write_text(RULE)
    engine = build_engine(
        Store.open(":memory:"),
        alerts_options(
            {
                "rules": ["site.toml"],
                "default_rules": False,
                "mqtt_host": "broker",
                "alertmanager_url": "http://am:9093",
            },
            "x",
        ),
        base_dir=tmp_path,
    )
    assert [r.name for r in engine.rules] == ["SlowTokens"]
    assert [type(t).__name__ for t in engine.delivery.targets] == [
        "MqttDelivery",
        "AlertmanagerDelivery",
    ]
    assert build_engine(Store.open(":memory:"), AlertsOptions(enabled=False)) is None


async def test_the_daemon_runs_the_engine_as_a_runtime_task(tmp_path):
    from collectors.sim.source import SimSource
    from fleettui.alerts.wiring import tasks_from_config
    from fleettui.runtime import Runtime

    store = Store.open(":memory:")
    (tmp_path / "site.toml").write_text(
        '[[rules]]\nname = "AnyGpuHot"\nscope = "fleet"\n'
        'expr = { metric = "temp_c", agg = "max", over = "1m", op = ">", threshold = 0 }\n'
    )
    (engine,) = tasks_from_config(
        {"interval_s": 0.1, "rules": ["site.toml"]},
        store,
        where="fleet.toml [alerts]",
        base_dir=tmp_path,
    )
    assert len(engine.rules) > 1  # the default pack plus the site rule
    stop = asyncio.Event()
    run = asyncio.create_task(Runtime(store, [SimSource(interval_s=0.05)], [engine]).run(stop))
    for _ in range(600):  # up to 30 s: the default pack on a busy 2-core machine
        await asyncio.sleep(0.05)
        if any(a.rule == "AnyGpuHot" and a.state == "firing" for a in engine.open_alerts()):
            break
    stop.set()
    await run
    row = (
        store.cursor()
        .execute("SELECT scope_key, state FROM alerts WHERE rule = 'AnyGpuHot'")
        .fetchall()
    )
    assert row == [("fleet", "firing")]
    with pytest.raises(OptionsError, match="site2.toml rule 'X': scope must be one of"):
        (tmp_path / "site2.toml").write_text('[[rules]]\nname = "X"\nscope = "rack"\nsql = "1"\n')
        tasks_from_config({"rules": ["site2.toml"]}, store, base_dir=tmp_path)
    assert tasks_from_config({"enabled": False}, store) == []


async def test_the_runtime_gives_delivery_its_last_chance_at_shutdown():
    from fleettui.runtime import Runtime

    class Recorder:
        def __init__(self):
            self.sent, self.closed = [], None

        async def send(self, notifications, now):
            self.sent += notifications

        async def close(self, timeout_s=2.0):
            self.closed = timeout_s

    store = store_with_endpoint()
    itl(store, T0, 80.0)
    rec = Recorder()
    engine = AlertEngine(store, load_rules_text(RULE, "t.toml"), interval_s=0.05, delivery=rec)
    stop = asyncio.Event()
    run = asyncio.create_task(Runtime(store, [], [engine], clock=lambda: T0).run(stop))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if rec.sent:
            break
    stop.set()
    await run
    assert [n.reason for n in rec.sent][:1] == ["fired"]
    assert rec.closed == 2.0
