"""The MQTT client tuning (collectors/mqtt_client.py) on a real socket pair: buffered
reads hand over every message whole and in order however the bytes arrive, and the
acknowledgements of a flush leave as PUBACK packets in one write. The broker-backed
behaviour (ack after commit, redelivery, poison) is in test_mqtt_ack / test_mqtt_poison."""

from __future__ import annotations

import asyncio
import random
import select
import socket
import struct
import threading

import aiomqtt
import paho.mqtt.client as mqtt
import pytest

from collectors.mqtt_client import READ_BYTES, Received, ack_all, tune

# MQTT 5 properties: payload format indicator, message expiry interval
PROPS_V5 = b"\x07\x01\x01\x02\x00\x00\x00\x3c"


def _publish_packet(topic: str, payload: bytes, mid: int, props: bytes = b"") -> bytes:
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t + struct.pack("!H", mid) + props + payload
    n, length = len(body), bytearray()
    while True:
        b, n = n % 128, n // 128
        length.append(b | (0x80 if n else 0))
        if not n:
            break
    return b"\x32" + bytes(length) + body


@pytest.fixture(params=[aiomqtt.ProtocolVersion.V311, aiomqtt.ProtocolVersion.V5])
def wired(request):
    """A tuned aiomqtt client whose paho socket is one end of a socket pair (MQTT 3.1.1
    and MQTT 5: PUBLISH packets carry properties)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def make() -> aiomqtt.Client:  # aiomqtt wants a running loop
        return tune(
            aiomqtt.Client("127.0.0.1", 1, max_queued_incoming_messages=0, protocol=request.param)
        )

    client = loop.run_until_complete(make())
    client._client.manual_ack_set(True)  # as the source runs it: nothing acked on receipt
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._client._sock = ours
    yield client, broker
    ours.close()
    broker.close()
    loop.close()
    asyncio.set_event_loop(None)


def _read_all(client: aiomqtt.Client, sock: socket.socket, n: int) -> list[Received]:
    got: list[Received] = []
    queue = client._queue
    while len(got) < n:
        ready, _, _ = select.select([sock], [], [], 5.0)
        assert ready, f"stalled after {len(got)} of {n} messages"
        assert client._client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        while queue.qsize():
            got.append(queue.get_nowait())
    return got


def _props(client: aiomqtt.Client) -> bytes:
    return PROPS_V5 if client._client._protocol == mqtt.MQTTv5 else b""


def test_every_message_whole_and_in_order_however_the_bytes_arrive(wired):
    client, broker = wired
    rnd = random.Random(7)
    sizes = [0, 1, 2, 127, 128, 16_383, 16_384, READ_BYTES - 5, READ_BYTES + 9, 700_000]
    sizes += [rnd.randrange(0, 12_000) for _ in range(300)]
    msgs = [
        (f"fleettui/h{i}/report", rnd.randbytes(size), i % 65535 + 1)
        for i, size in enumerate(sizes)
    ]
    ping = b"\xd0\x00"  # PINGRESP between some of them: paho's to read
    wire = b"".join(
        _publish_packet(t, p, mid, _props(client)) + (ping if mid % 7 == 0 else b"")
        for t, p, mid in msgs
    )

    def send() -> None:  # odd chunks: packets split anywhere, many in one chunk
        pos = 0
        while pos < len(wire):
            step = rnd.choice((1, 3, 50, 4_000, 90_000, 600_000))
            broker.sendall(wire[pos : pos + step])
            pos += step

    sender = threading.Thread(target=send)
    sender.start()
    got = _read_all(client, client._client._sock, len(msgs))
    sender.join()
    assert [(g.topic, g.payload, g.mid, g.qos) for g in got] == [
        (t, p, mid, 1) for t, p, mid in msgs
    ]


def test_a_read_callback_handles_one_buffer_at_most(wired):
    """Bounded work per callback: with much more queued in the socket than one buffer,
    one loop_read hands over at most a buffer's worth, and the rest on later calls."""
    client, broker = wired
    payload = b"x" * 1000
    n = 3 * READ_BYTES // 1000
    wire = b"".join(_publish_packet("p/h/report", payload, i + 1, _props(client)) for i in range(n))
    sender = threading.Thread(target=broker.sendall, args=(wire,))
    sender.start()
    select.select([client._client._sock], [], [], 5.0)
    client._client.loop_read()
    first = [client._queue.get_nowait() for _ in range(client._queue.qsize())]
    assert 0 < len(first) <= READ_BYTES // 1000 + 1
    rest = _read_all(client, client._client._sock, n - len(first))
    sender.join()
    assert [m.mid for m in first + rest] == list(range(1, n + 1))


def test_a_topic_that_is_not_utf8_arrives_readable(wired):
    client, broker = wired
    body = struct.pack("!H", 4) + b"a\xffb/" + struct.pack("!H", 9) + _props(client) + b"{}"
    packet = b"\x32" + bytes([len(body)]) + body
    broker.sendall(packet * 3)  # the first read by paho, the others cut out of the buffer
    msgs = _read_all(client, client._client._sock, 3)
    assert [(m.topic, m.payload, m.mid) for m in msgs] == [("a\ufffdb/", b"{}", 9)] * 3


def test_acks_of_a_flush_leave_as_pubacks_in_order(wired):
    client, broker = wired
    mids = [5, 1, 65535, 300, 2]
    ack_all(client, [(m, 1) for m in mids])
    client._client.loop_write()
    broker.settimeout(5.0)
    data = b""
    while len(data) < 4 * len(mids):
        data += broker.recv(4096)
    assert data == b"".join(struct.pack("!BBH", 0x40, 2, m) for m in mids)


def test_no_acks_on_a_connection_that_has_gone(wired):
    client, broker = wired
    client._disconnected.set_result(None)
    ack_all(client, [(1, 1), (2, 1)])
    assert not client._client._out_packet
