"""Keep-alive (collectors.http_get.Pool): a connection whose answer was read whole by its
framing serves the next GET to that server; anything else closes it, and a pooled
connection that fails before the answer is retried once on a new one. Against real
local servers (asyncio streams), counting the connections they accept."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from collectors import http_get
from tests.hostile_http import OK_BODY, HostileServer

MIB = 1 << 20


class KeepAliveServer:
    """Answers every request on a connection until the client leaves; `mode` per path:
    `/len` Content-Length, `/chunked` chunked with a trailer, `/http10` an HTTP/1.0
    answer, `/close` `Connection: close`, `/extra` 5 bytes more than its length says."""

    def __init__(self, idle_close_s: float | None = None):
        self.idle_close_s = idle_close_s
        self.accepted = 0
        self.requests = 0
        self.url = ""
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> KeepAliveServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_close_s)
                except TimeoutError:
                    return  # idle too long: the server closes, as real ones do
                self.requests += 1
                path = head.split(b" ", 2)[1].decode()
                ok = b"HTTP/1.1 200 OK\r\n"
                if path == "/chunked":
                    half = len(OK_BODY) // 2
                    writer.write(
                        ok
                        + b"Transfer-Encoding: chunked\r\n\r\n"
                        + b"%x\r\n%s\r\n" % (half, OK_BODY[:half])
                        + b"%x\r\n%s\r\n" % (len(OK_BODY) - half, OK_BODY[half:])
                        + b"0\r\nX-Trailer: yes\r\n\r\n"
                    )
                elif path == "/http10":
                    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(OK_BODY))
                    writer.write(OK_BODY)
                elif path == "/close":
                    writer.write(
                        ok + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(OK_BODY)
                    )
                    writer.write(OK_BODY)
                    await writer.drain()
                    return
                elif path == "/extra":
                    writer.write(ok + b"Content-Length: %d\r\n\r\n" % len(OK_BODY))
                    writer.write(OK_BODY + b"junk!")
                else:
                    writer.write(ok + b"Content-Length: %d\r\n\r\n" % len(OK_BODY))
                    writer.write(OK_BODY)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server():
    s = await KeepAliveServer().start()
    yield s
    await s.stop()


async def _get(url: str, pool: http_get.Pool | None) -> http_get.Response:
    return await http_get.get(url, deadline_s=5.0, max_bytes=MIB, pool=pool)


@pytest.mark.parametrize("path", ["/len", "/chunked"])
async def test_a_whole_framed_answer_leaves_its_connection_for_the_next_get(server, path):
    pool = http_get.Pool()
    for _ in range(5):
        r = await _get(server.url + path, pool)
        assert r.reason is None and r.body == OK_BODY
    assert server.requests == 5 and server.accepted == 1
    assert len(pool) == 1
    pool.close()


async def test_without_a_pool_every_get_has_its_own_connection(server):
    for _ in range(3):
        r = await _get(server.url + "/len", None)
        assert r.body == OK_BODY
    assert server.accepted == 3


@pytest.mark.parametrize("path", ["/http10", "/close"])
async def test_an_answer_that_does_not_keep_alive_closes_its_connection(server, path):
    pool = http_get.Pool()
    for _ in range(3):
        r = await _get(server.url + path, pool)
        assert r.reason is None and r.body == OK_BODY
    assert server.accepted == 3 and len(pool) == 0


async def test_bytes_past_the_declared_length_cost_only_a_retry_on_a_new_connection(server):
    pool = http_get.Pool()
    first = await _get(server.url + "/extra", pool)
    assert first.body == OK_BODY
    second = await _get(server.url + "/len", pool)  # the pooled one starts with "junk!"
    assert second.reason is None and second.body == OK_BODY
    assert server.accepted == 2
    pool.close()


async def test_a_connection_the_server_closed_while_idle_is_retried_on_a_new_one():
    s = await KeepAliveServer(idle_close_s=0.2).start()
    try:
        pool = http_get.Pool()
        assert (await _get(s.url + "/len", pool)).body == OK_BODY
        await asyncio.sleep(0.6)  # the server has closed it
        r = await _get(s.url + "/len", pool)
        assert r.reason is None and r.body == OK_BODY
        assert s.accepted == 2
        pool.close()
    finally:
        await s.stop()


@pytest.mark.parametrize("path", ["/short", "/long", "/huge-chunked", "/trickle"])
async def test_hostile_answers_with_a_pool_are_handled_as_without_and_not_pooled(path):
    h = await HostileServer(trickle_s=3.0, huge_bytes=4 * MIB).start()
    try:
        pool = http_get.Pool()
        with_pool = await http_get.get(h.url + path, deadline_s=1.5, max_bytes=MIB, pool=pool)
        without = await http_get.get(h.url + path, deadline_s=1.5, max_bytes=MIB)
        assert with_pool.reason == without.reason
        assert with_pool.body == without.body
        if path != "/long":  # cut, late or over the limit: never pooled
            assert len(pool) == 0
        # whatever was pooled, the next GET to that server still gets its answer
        nxt = await http_get.get(h.url + "/ok", deadline_s=5.0, max_bytes=MIB, pool=pool)
        assert nxt.reason is None and nxt.body == OK_BODY
        pool.close()
    finally:
        await h.stop()
