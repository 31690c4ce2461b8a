"""A real local HTTP server that misbehaves on purpose, one behaviour per path.

- `/trickle`: headers, then one byte of body every `trickle_s` seconds, forever
- `/trickle-headers`: the status line one byte every `trickle_s` seconds
- `/hang`: accepts, reads the request, never answers
- `/huge-declared`: `Content-Length` of `huge_bytes`, then streams zeros-like metrics
- `/huge-chunked`: chunked body that never ends (64 KiB chunks of valid lines)
- `/huge-unframed`: no length, no chunking: lines until the client leaves
- `/short`: says 1000 bytes, sends 100 of a valid body, closes
- `/long`: says 30 bytes, sends a longer body
- `/ok`: a small valid dcgm-exporter body
Only the first path segment counts (`/trickle/api/v1/query` trickles too).
Counts how many body bytes it managed to send per path (`sent`).
"""

from __future__ import annotations

import asyncio
import contextlib

OK_BODY = (
    b'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-ok",Hostname="h-ok"} 41\n'
    b'DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-ok",Hostname="h-ok"} 300\n'
)
LINE = b'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-huge",Hostname="h-huge"} 41\n'


class HostileServer:
    def __init__(self, trickle_s: float = 3.0, huge_bytes: int = 200 << 20):
        self.trickle_s = trickle_s
        self.huge_bytes = huge_bytes
        self.sent: dict[str, int] = {}
        self.open_connections = 0
        self._server: asyncio.base_events.Server | None = None
        self.url = ""

    async def start(self) -> HostileServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=256)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = "/" + head.split(b" ", 2)[1].decode().split("?")[0].split("/")[1]
            self.sent.setdefault(path, 0)
            await self._answer(path, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()

    async def _send(self, path: str, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent[path] += len(data)

    async def _answer(self, path: str, w: asyncio.StreamWriter) -> None:
        ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
        if path == "/ok":
            w.write(ok + b"Content-Length: %d\r\n\r\n" % len(OK_BODY))
            await self._send(path, w, OK_BODY)
        elif path == "/trickle":
            w.write(ok + b"Content-Length: 100000\r\n\r\n")
            while True:
                await self._send(path, w, b"D")
                await asyncio.sleep(self.trickle_s)
        elif path == "/trickle-headers":
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc":
                w.write(bytes([byte]))
                await w.drain()
                await asyncio.sleep(self.trickle_s)
        elif path == "/hang":
            await asyncio.sleep(3600)
        elif path == "/huge-declared":
            w.write(ok + b"Content-Length: %d\r\n\r\n" % self.huge_bytes)
            block = LINE * 1000
            while self.sent[path] < self.huge_bytes:
                await self._send(path, w, block)
        elif path == "/huge-chunked":
            w.write(ok + b"Transfer-Encoding: chunked\r\n\r\n")
            block = LINE * 1000
            while True:
                await self._send(path, w, b"%x\r\n" % len(block) + block + b"\r\n")
        elif path == "/huge-unframed":
            w.write(ok + b"Connection: close\r\n\r\n")
            block = LINE * 1000
            while True:
                await self._send(path, w, block)
        elif path == "/short":
            w.write(ok + b"Content-Length: 1000\r\n\r\n")
            await self._send(path, w, OK_BODY[:100])
        elif path == "/long":
            w.write(ok + b"Content-Length: 30\r\n\r\n")
            await self._send(path, w, OK_BODY)
        else:
            w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await w.drain()
