"""Alert delivery against the real receivers: Prometheus Alertmanager and a Mosquitto
that requires TLS and a password. Both are taken down while an alert fires: it arrives
once they are back, and counts as sent only then."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import aiomqtt
import pytest

from fleettui.alerts.config import alerts_options, build_delivery
from fleettui.alerts.delivery import AlertmanagerDelivery, MqttDelivery
from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import load_rules_text
from tests.services import require_binary
from tests.services.alertmanager import AlertmanagerServer, alertmanager  # noqa: F401
from tests.services.mosquitto import Broker
from tests.test_alert_delivery import RULE, itl, store_with_endpoint

pytestmark = [pytest.mark.integration]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def poll(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(check)
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def slow_tokens(am: AlertmanagerServer) -> list[dict]:
    return [a for a in am.alerts() if a["labels"].get("alertname") == "SlowTokens"]


async def test_alertmanager_receives_fired_and_resolved(alertmanager):  # noqa: F811
    store = store_with_endpoint()
    d = AlertmanagerDelivery(alertmanager.url, valid_s=240, backoff_s=0.1)
    engine = AlertEngine(store, load_rules_text(RULE, "t.toml"), interval_s=15, delivery=d)
    t0 = utcnow()
    itl(store, t0, 80.0)
    await engine.tick(t0)
    assert await d.drain(10)
    (got,) = await poll(lambda: slow_tokens(alertmanager), 10, "the firing alert")
    assert got["labels"] == {
        "alertname": "SlowTokens",
        "model": "m-a",
        "scope": "endpoint",
        "scope_key": "ep-a",
        "severity": "critical",
        "team": "serving",
        "tenant": "t1",
    }
    assert got["annotations"] == {"summary": "ep-a ITL p99 80 ms"}
    assert got["status"]["state"] == "active"
    assert got["startsAt"].startswith(t0.isoformat(timespec="seconds"))
    t1 = utcnow()
    itl(store, t1, 10.0)
    await engine.tick(t1)
    assert await d.drain(10)
    # resolved (endsAt passed): Alertmanager no longer lists it as active
    await poll(lambda: slow_tokens(alertmanager) == [], 10, "the resolution")
    assert (d.stats.confirmed, d.stats.attempts_failed, d.sent_batches) == (2, 0, 2)
    await d.close()


async def test_an_alert_fired_while_alertmanager_is_down_arrives_when_it_is_back(tmp_path):
    am = AlertmanagerServer(tmp_path / "am")
    am.start()
    try:
        am.stop()  # the port is known, nobody listens
        store = store_with_endpoint()
        d = AlertmanagerDelivery(am.url, backoff_s=0.2, max_backoff_s=1.0, timeout_s=2)
        engine = AlertEngine(store, load_rules_text(RULE, "t.toml"), delivery=d)
        t0 = utcnow()
        itl(store, t0, 80.0)
        await engine.tick(t0)
        assert not await d.drain(2)
        assert d.stats.attempts_failed >= 2 and d.stats.confirmed == 0 and d.queued == 1
        assert d.stats.last_error == "Connection refused"
        back = time.monotonic()
        am.start()
        assert await d.drain(15)
        recovered_s = time.monotonic() - back
        (got,) = await poll(lambda: slow_tokens(am), 10, "the alert after the outage")
        assert got["status"]["state"] == "active"
        assert d.stats.confirmed == 1 and d.queued == 0
        print(f"alertmanager back -> alert confirmed in {recovered_s:.1f} s")
        await d.close()
    finally:
        am.stop()


@pytest.fixture
def secure_broker(tmp_path):
    require_binary("openssl", "openssl")
    require_binary("mosquitto_passwd", "mosquitto")
    broker = Broker(
        tmp_path / "tls",
        tls=True,
        persistence=True,
        users={"alerts": "s3cret-alerts", "ops": "s3cret-ops"},
    )
    broker.start()
    yield broker
    broker.stop()


def secure_delivery(broker: Broker, monkeypatch, password: str) -> MqttDelivery:
    monkeypatch.setenv("FT_TEST_ALERTS_PASSWORD", password)
    o = alerts_options(
        {
            "mqtt_host": broker.host,
            "mqtt_port": broker.port,
            "mqtt_tls": True,
            "mqtt_tls_ca": str(broker.ca_path),
            "mqtt_username": "alerts",
            "mqtt_password_env": "FT_TEST_ALERTS_PASSWORD",
            "mqtt_topic": "ops/alerts/{rule}",
            "retry_backoff_s": 0.2,
            "retry_max_backoff_s": 1.0,
            "timeout_s": 2.0,
        },
        "fleet.toml [alerts]",
    )
    (d,) = build_delivery(o).targets
    assert isinstance(d, MqttDelivery)
    return d


def subscriber(broker: Broker) -> aiomqtt.Client:
    # a persistent session: the broker keeps its subscription and messages across restarts
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier="ops-console",
        clean_session=False,
        username="ops",
        password="s3cret-ops",
        tls_params=aiomqtt.TLSParameters(ca_certs=str(broker.ca_path)),
    )


async def fire(delivery) -> AlertEngine:
    store = store_with_endpoint()
    engine = AlertEngine(store, load_rules_text(RULE, "t.toml"), delivery=delivery)
    itl(store, utcnow(), 80.0)
    await engine.tick(utcnow())
    return engine


async def test_mqtt_delivery_over_tls_with_a_password_survives_a_broker_outage(
    secure_broker: Broker, monkeypatch
):
    async with subscriber(secure_broker) as sub:
        await sub.subscribe("ops/alerts/#", qos=1)
    secure_broker.stop()
    d = secure_delivery(secure_broker, monkeypatch, "s3cret-alerts")
    await fire(d)
    assert not await d.drain(2)  # broker down: queued, retried, not sent
    assert d.stats.attempts_failed >= 2 and d.stats.confirmed == 0 and d.queued == 1
    back = time.monotonic()
    secure_broker.start()
    assert await d.drain(15)
    recovered_s = time.monotonic() - back
    assert (d.stats.confirmed, d.published, d.queued) == (1, 1, 0)
    got = []
    async with subscriber(secure_broker) as sub:

        async def collect():
            async for msg in sub.messages:
                got.append((str(msg.topic), json.loads(msg.payload)))

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(collect(), 3)
    assert [(t, m["event"], m["scope_key"]) for t, m in got] == [
        ("ops/alerts/SlowTokens", "fired", "ep-a")
    ]  # once: confirmed, never re-sent
    print(f"broker back -> alert confirmed in {recovered_s:.1f} s")
    await d.close()


async def test_mqtt_delivery_with_a_wrong_password_is_never_counted_sent(
    secure_broker: Broker, monkeypatch
):
    d = secure_delivery(secure_broker, monkeypatch, "guess")
    await fire(d)
    assert not await d.drain(2)
    assert d.stats.confirmed == 0 and d.queued == 1 and d.stats.attempts_failed >= 1
    assert "authori" in d.stats.last_error.lower() or "password" in d.stats.last_error.lower()
    await d.close(0.1)


def test_mqtt_delivery_tls_files_are_checked_with_the_config():
    from collectors.options import OptionsError

    with pytest.raises(OptionsError, match="mqtt_tls_ca: no such file '/nonexistent/ca.crt'"):
        alerts_options(
            {"mqtt_host": "b", "mqtt_tls": True, "mqtt_tls_ca": "/nonexistent/ca.crt"},
            "fleet.toml [alerts]",
        )
    with pytest.raises(OptionsError, match="mqtt_tls_cert and mqtt_tls_key go together"):
        alerts_options({"mqtt_host": "b", "mqtt_tls_cert": __file__}, "fleet.toml [alerts]")
    with pytest.raises(OptionsError, match="timeout_s' must be a finite number, got nan"):
        alerts_options({"timeout_s": float("nan")}, "fleet.toml [alerts]")


async def test_mqtt_delivery_with_a_client_certificate(tmp_path):
    require_binary("openssl", "openssl")
    broker = Broker(tmp_path / "mtls", tls=True, client_certs=True)
    broker.start()
    try:
        cert, key = broker.client_cert("fleettui-alerts")
        o = alerts_options(
            {
                "mqtt_host": broker.host,
                "mqtt_port": broker.port,
                "mqtt_tls": True,
                "mqtt_tls_ca": str(broker.ca_path),
                "mqtt_tls_cert": str(cert),
                "mqtt_tls_key": str(key),
                "retry_backoff_s": 0.2,
                "timeout_s": 2.0,
            },
            "fleet.toml [alerts]",
        )
        (d,) = build_delivery(o).targets
        await fire(d)
        assert await d.drain(10)
        assert d.stats.confirmed == 1
        await d.close()
        # without the certificate the broker refuses the connection: never sent
        o = alerts_options(
            {
                "mqtt_host": broker.host,
                "mqtt_port": broker.port,
                "mqtt_tls": True,
                "mqtt_tls_ca": str(broker.ca_path),
                "retry_backoff_s": 0.2,
                "timeout_s": 2.0,
            },
            "fleet.toml [alerts]",
        )
        (bare,) = build_delivery(o).targets
        await fire(bare)
        assert not await bare.drain(5)  # each attempt ends at the 2 s deadline
        assert bare.stats.confirmed == 0 and bare.stats.attempts_failed >= 1
        await bare.close(0.1)
    finally:
        broker.stop()
