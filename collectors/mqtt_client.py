"""Per-message costs of the MQTT client (aiomqtt over paho-mqtt), cut for the source.

At fleet rates the client's Python work per message was about half the daemon's
CPU. Three changes, all on one client instance, keep paho's protocol handling
(packet parsing, session, keep-alive) and every guarantee the source relies on:

- reads: paho reads a packet with several `recv` calls (command byte, each
  length byte, then the body). `buffer_reads` serves those from one large
  `recv`; each read callback then handles the whole buffer. Bounded: only the
  first packet of a callback may refill the buffer, so a callback handles at
  most one buffer's worth of packets before the event loop runs again. Complete
  QoS 0/1 PUBLISH packets in the buffer, between packets, are cut out here
  (`_publishes`: topic, packet id, MQTT 5 properties skipped, payload) instead of
  by paho's parser (an `MQTTMessage` and a `Properties` object per message);
  everything else, a packet split across reads included, is still paho's.
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
from collections.abc import Callable
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


def _varint(data: bytes, i: int, end: int) -> tuple[int, int]:
    """MQTT variable byte integer at `i`: (value, next position), or (-1, i) when it
    is not complete (or longer than 4 bytes: paho reports that)."""
    value, mult, j = 0, 1, i
    while j < end and j - i < 4:
        b = data[j]
        value += (b & 127) * mult
        j += 1
        if not b & 128:
            return value, j
        mult *= 128
    return -1, i


def _publishes(paho: mqtt.Client, rb: _ReadBuffer, deliver: Callable[[Received], None]) -> None:
    """Hand over the complete QoS 0/1 PUBLISH packets at the head of the buffer; stop
    at anything else (another packet type, QoS 2, a packet not all here, a malformed
    one), which paho reads as before. Only between packets: never when paho holds
    part of one."""
    if paho._in_packet["command"] != 0:  # noqa: SLF001
        return
    data, pos, end = rb.data, rb.pos, len(rb.data)
    v5 = paho._protocol == mqtt.MQTTv5  # noqa: SLF001
    auto_ack = not paho._manual_ack  # noqa: SLF001
    start = pos
    while pos < end:
        cmd = data[pos]
        qos = (cmd >> 1) & 3
        if cmd & 0xF0 != mqtt.PUBLISH or qos > 1:
            break
        length, i = _varint(data, pos + 1, end)
        if length < 2 or i + length > end:
            break
        body_end = i + length
        j = i + 2 + int.from_bytes(data[i : i + 2], "big")
        topic = data[i + 2 : j]
        mid = 0
        if qos:
            mid = int.from_bytes(data[j : j + 2], "big")
            j += 2
        if v5:
            props, j = _varint(data, j, body_end)
            if props < 0:
                break
            j += props
        if j > body_end:
            break
        deliver(Received(topic.decode("utf-8", errors="replace"), data[j:body_end], qos, mid))
        pos = body_end
        rb.pos = pos
        if qos and auto_ack:
            paho._send_puback(mid)  # noqa: SLF001
    if pos != start:
        with paho._msgtime_mutex:  # noqa: SLF001 (keep-alive: the broker was heard)
            paho._last_bytes_received = mqtt.time_func()  # noqa: SLF001


def buffer_reads(
    paho: mqtt.Client,
    read_bytes: int = READ_BYTES,
    deliver: Callable[[Received], None] | None = None,
) -> None:
    """Serve paho's small `recv` calls from one large read (see module docstring);
    with `deliver`, complete PUBLISH packets in the buffer go to it directly."""
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
                    if deliver is not None:
                        _publishes(paho, rb, deliver)
                        if not rb.buffered() or paho._sock is not rb.sock:  # noqa: SLF001
                            break
                    rc = loop_read(max_packets)
            finally:
                rb.refill = True
        return rc

    paho._sock_recv = sock_recv  # type: ignore[method-assign]  # noqa: SLF001
    paho.loop_read = buffered_loop_read  # type: ignore[method-assign]


def light_messages(client: aiomqtt.Client) -> Callable[[Received], None]:
    """Queue `Received` tuples in the client's queue instead of aiomqtt Messages;
    returns the function that queues one."""
    queue: asyncio.Queue[Any] = client._queue  # noqa: SLF001

    def deliver(msg: Received) -> None:
        try:
            queue.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("Message queue is full. Discarding message.")

    def on_message(message: mqtt.MQTTMessage) -> None:
        raw = message._topic  # noqa: SLF001
        topic = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        deliver(Received(topic, bytes(message.payload), message.qos, message.mid))

    client._client._handle_on_message = on_message  # type: ignore[method-assign]  # noqa: SLF001
    return deliver


def tune(client: aiomqtt.Client, *, buffered_reads: bool = True) -> aiomqtt.Client:
    """The read-side changes on a new client (before it connects)."""
    deliver = light_messages(client)
    if buffered_reads:
        buffer_reads(client._client, deliver=deliver)  # noqa: SLF001
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
