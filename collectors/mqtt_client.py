"""Per-message costs of the MQTT client (aiomqtt over paho-mqtt), cut for the source.

At fleet rates the client's Python work per message was about half the daemon's
CPU. Three changes, all on one client instance, keep paho's protocol handling
(packet parsing, session, keep-alive) and every guarantee the source relies on:

- reads: paho reads a packet with several `recv` calls (command byte, each
  length byte, then the body). `buffer_reads` serves those from one large
  `recv`; each read callback then handles the whole buffer. Bounded: only the
  first packet of a callback may refill the buffer, so a callback handles at
  most one buffer's worth of packets before the event loop runs again.
- messages: instead of aiomqtt's `Message` (a validated `Topic` per message),
  the client's queue holds `Received` tuples, and paho's per-message topic
  matching (no filtered callbacks are used) is skipped. The queue and its
  bound (`max_queued_incoming_messages`) are aiomqtt's, so the source's drain at
  stop and on a lost connection is unchanged.
- acknowledgements: `ack_all` queues the PUBACKs of a whole flush as one write
  (paho queues, signals and sends each one alone).

paho-mqtt and aiomqtt are pinned (pyproject.toml); `tests/test_mqtt_client.py`
checks these internals are still where this module expects them.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, NamedTuple

import aiomqtt
import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

READ_BYTES = 256 * 1024  # one recv; a callback handles at most this much beyond one packet


class Received(NamedTuple):
    """One message as the source reads it."""

    topic: str
    payload: bytes
    qos: int
    mid: int


class _ReadBuffer:
    __slots__ = ("data", "pos", "sock", "refill")

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0
        self.sock: Any = None
        self.refill = True

    def buffered(self) -> int:
        return len(self.data) - self.pos


def buffer_reads(paho: mqtt.Client, read_bytes: int = READ_BYTES) -> None:
    """Serve paho's small `recv` calls from one large read (see module docstring)."""
    recv = paho._sock_recv  # noqa: SLF001 (bound: keeps paho's error mapping, TLS included)
    loop_read = paho.loop_read
    rb = _ReadBuffer()

    def sock_recv(bufsize: int) -> bytes:
        if rb.sock is not paho._sock:  # noqa: SLF001 (a new connection: nothing buffered)
            rb.sock, rb.data, rb.pos = paho._sock, b"", 0  # noqa: SLF001
        if rb.pos >= len(rb.data):
            if not rb.refill:
                raise BlockingIOError  # paho keeps the partial packet; epoll calls again
            data = recv(max(bufsize, read_bytes))  # b"" at EOF: paho sees the close
            if len(data) <= bufsize:
                return data
            rb.data, rb.pos = data, 0
        end = rb.pos + bufsize
        out = rb.data[rb.pos : end]
        rb.pos = min(end, len(rb.data))
        return out

    def buffered_loop_read(max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = loop_read(max_packets)
        if rb.buffered() and rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
            rb.refill = False  # the rest of this buffer only, then back to the event loop
            try:
                while (
                    rb.buffered()
                    and rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
                    and paho._sock is rb.sock  # noqa: SLF001
                ):
                    rc = loop_read(max_packets)
            finally:
                rb.refill = True
        return rc

    paho._sock_recv = sock_recv  # type: ignore[method-assign]  # noqa: SLF001
    paho.loop_read = buffered_loop_read  # type: ignore[method-assign]


def light_messages(client: aiomqtt.Client) -> None:
    """Queue `Received` tuples in the client's queue instead of aiomqtt Messages."""
    queue: asyncio.Queue[Any] = client._queue  # noqa: SLF001

    def on_message(message: mqtt.MQTTMessage) -> None:
        raw = message._topic  # noqa: SLF001
        topic = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        try:
            queue.put_nowait(Received(topic, bytes(message.payload), message.qos, message.mid))
        except asyncio.QueueFull:
            log.warning("Message queue is full. Discarding message.")

    client._client._handle_on_message = on_message  # type: ignore[method-assign]  # noqa: SLF001


def tune(client: aiomqtt.Client, *, buffered_reads: bool = True) -> aiomqtt.Client:
    """The read-side changes on a new client (before it connects)."""
    if buffered_reads:
        buffer_reads(client._client)  # noqa: SLF001
    light_messages(client)
    return client


_PUBACK = struct.Struct("!BBH")


def ack_all(client: aiomqtt.Client, acks: list[tuple[int, int]]) -> None:
    """PUBACK (QoS 1) / PUBCOMP (QoS 2) the messages `(mid, qos)`, in order; the
    QoS 1 ones go out as one write. Nothing on a connection that has gone: its
    message ids mean nothing to the next one, and the broker redelivers them."""
    if not acks or client._disconnected.done():  # noqa: SLF001
        return
    paho = client._client  # noqa: SLF001
    if all(qos == 1 for _, qos in acks):
        packet = b"".join(_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid, _ in acks)
        paho._packet_queue(mqtt.PUBACK, packet, 0, 0)  # noqa: SLF001
        return
    for mid, qos in acks:
        paho.ack(mid, qos)
