"""A stop always stops: a client whose exit fails while its task is being cancelled.

aiomqtt's `async with client:` exit waits for the broker's side of the disconnect
and raises MqttError when that fails or times out (seen once in CI on a TLS
connection). The retry loops caught that error as a lost connection and
reconnected, so the cancellation was lost and whoever awaited the stop waited
for ever. Here the exit fails on every cancelled connection, on a real broker.
"""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from collectors.backoff import stop_requested
from collectors.mqtt_source import MqttOptions, MqttSource
from fleettui.alerts.delivery import _Sender
from tests.services.mosquitto import Broker, mosquitto  # noqa: F401  (fixture)
from tests.test_agent import agent
from tests.test_mqtt_e2e import wait_for

STOP_S = 20.0  # generous on a loaded machine; without the fix the stop never ends


async def ends_within(aw, seconds: float = STOP_S) -> asyncio.Task:
    """`aw` as a task that has ended within `seconds` (asyncio.wait_for would wait for
    ever on a task that swallows its cancellation: the very failure tested here)."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait([task], timeout=seconds)
    assert done, f"still running {seconds:.0f} s after being asked to stop"
    return task


class FailingExit:
    """The next cancelled exit of a client whose identifier starts with `prefix` raises
    MqttError. Once only: with the bug, the test fails instead of its teardown hanging."""

    def __init__(self) -> None:
        self.prefix = "fleettui"
        self.failed: list[str] = []

    def fails(self, client: aiomqtt.Client, exc_type) -> bool:
        cancelled = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        if cancelled and not self.failed and client.identifier.startswith(self.prefix):
            self.failed.append(client.identifier)
            return True
        return False


@pytest.fixture
def failing_exit(monkeypatch):
    plan = FailingExit()
    clean_exit = aiomqtt.Client.__aexit__

    async def exit_failing_on_cancel(self, exc_type, exc, tb):
        await clean_exit(self, exc_type, exc, tb)
        if plan.fails(self, exc_type):
            raise aiomqtt.MqttError("Unexpected disconnection (made to fail by the test)")

    monkeypatch.setattr(aiomqtt.Client, "__aexit__", exit_failing_on_cancel)
    return plan


@pytest.mark.integration
async def test_the_agent_stops_when_its_disconnect_fails(mosquitto: Broker, failing_exit):  # noqa: F811
    a = agent(mosquitto.address, interval_s=0.2, max_backoff_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop, drain_s=0.1))
    await asyncio.wait_for(a.connected.wait(), 10)
    await wait_for(lambda: a.sent >= 2, 15, "reports published")
    stop.set()
    (await ends_within(task)).result()
    assert failing_exit.failed == ["fleettui-agent-hgx-03-n1"], "the failing exit never ran"
    assert a.connects == 1  # stopped, not reconnected


@pytest.mark.integration
async def test_the_source_stops_when_its_disconnect_fails(mosquitto: Broker, failing_exit):  # noqa: F811
    src = MqttSource(
        MqttOptions(broker=mosquitto.address, flush_interval_s=0.1, client_id="source-under-test")
    )
    failing_exit.prefix = "source-under-test"
    stored = []

    async def sink(batches):
        stored.extend(batches)

    task = asyncio.create_task(src.run(sink))
    await asyncio.wait_for(src.connected.wait(), 10)
    a = agent(mosquitto.address, interval_s=0.2)
    stop = asyncio.Event()
    agent_task = asyncio.create_task(a.run(stop, drain_s=0.1))
    try:
        await wait_for(lambda: src.stats.stored >= 2, 15, "reports stored")
    finally:
        stop.set()
        await ends_within(agent_task)
    task.cancel()
    await ends_within(task)
    assert task.cancelled()
    assert failing_exit.failed == ["source-under-test"]


class _StuckSender(_Sender):
    """Delivers by hanging until cancelled, and its client's exit then fails."""

    target = "stuck"
    started: asyncio.Event
    deliveries: int

    def _key(self, n):
        return str(n)

    async def _deliver(self) -> None:
        self.started.set()
        self.deliveries += 1
        try:
            await asyncio.sleep(3600)
        finally:
            if self.deliveries == 1:  # once: with the bug the test fails, it does not hang
                raise ConnectionError("the connection's close failed")


async def test_alert_delivery_closes_when_its_connection_fails_while_stopping():
    sender = _StuckSender(max_queued=10, backoff_s=0.01, max_backoff_s=0.01, timeout_s=1.0)
    sender.started, sender.deliveries = asyncio.Event(), 0
    await sender.send(["alert-1"], None)  # type: ignore[arg-type]
    await asyncio.wait_for(sender.started.wait(), 5)
    (await ends_within(sender.close(timeout_s=0.1))).result()
    assert sender.deliveries == 1  # no retry after the stop
    assert sender.stats.attempts_failed == 0  # the failure on the way out was no attempt


async def test_stop_requested_is_true_only_inside_a_cancelled_task():
    seen = []

    async def body():
        seen.append(stop_requested())
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append(stop_requested())
            raise

    task = asyncio.create_task(body())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert seen == [False, True]
    assert stop_requested() is False
