"""One HTTP GET with a deadline, whatever the peer does.

urllib's and requests' `timeout` bounds each socket read: a server that sends
its headers and then one byte every 3 s never trips it, and the thread that
waits is lost to everyone sharing its executor. Here the whole request
(connect, TLS, headers, body) runs on the event loop under one
`asyncio.timeout`: at the deadline it is cut, whatever arrived.

Size: a `Content-Length` over the limit is refused before the body is read;
a chunked or unframed body is counted while it streams and cut at the limit.
The body is returned as bytes (decoding and parsing are the caller's, off the
event loop). HTTP/1.1, no redirects, no compression (`Accept-Encoding:
identity`). Without a `Pool`, one request per connection (`Connection:
close`). With one, a connection whose answer was read whole by its framing
(Content-Length, or chunked to its last chunk) and that the server did not
close goes back to the pool for the next GET to the same host and port
(keep-alive, as Prometheus scrapes): no connect and accept per scrape. A
pooled connection that fails before the answer's headers (the server closed
it while idle, or left bytes of a past answer) is retried once on a new
connection, within the same deadline; a cut, late or unframed answer closes
its connection.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 64 << 10
_READ = 256 << 10


@dataclass(slots=True)
class Response:
    """What one GET gave: `reason` says why it is not a whole 2xx body (None when it is)."""

    url: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: nothing usable; else what arrived (maybe partial)
    reason: str | None = None
    at: float = 0.0  # epoch seconds when the request started
    elapsed_s: float = 0.0


class Pool:
    """Idle keep-alive connections by (TLS, host, port), for one event loop."""

    def __init__(self, max_idle_per_host: int = 256):
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[tuple, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def take(self, key: tuple) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections of another (closed) loop cannot be used
            self._idle.clear()
            self._loop = loop
        conns = self._idle.get(key)
        while conns:
            reader, writer = conns.pop()
            if reader.at_eof() or writer.is_closing():  # the server closed it while idle
                writer.close()
                continue
            return reader, writer
        return None

    def give(self, key: tuple, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns = self._idle.setdefault(key, [])
        if len(conns) < self.max_idle_per_host and asyncio.get_running_loop() is self._loop:
            conns.append((reader, writer))
        else:
            writer.close()

    def close(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                try:
                    writer.close()
                except RuntimeError:  # its loop is gone
                    pass
        self._idle.clear()

    def __len__(self) -> int:
        return sum(len(c) for c in self._idle.values())


class _Stale(Exception):
    """A pooled connection the server had closed: nothing of the answer arrived."""


class _Cut(Exception):
    """The body ended early or went over the limit; `body` holds what arrived."""

    def __init__(self, reason: str, body: bytes):
        super().__init__(reason)
        self.reason, self.body = reason, body


def ssl_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


async def get(
    url: str,
    *,
    deadline_s: float,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    verify: bool = True,
    ssl_ctx: ssl.SSLContext | None = None,
    pool: Pool | None = None,
) -> Response:
    """GET `url` within `deadline_s` seconds in all; never raises for the peer's faults."""
    r = Response(url, at=time.time())
    t0 = time.perf_counter()
    stage = ["connecting"]
    conn: list = [None, None]  # reader, writer of the connection in use
    keep = False
    try:
        async with asyncio.timeout(deadline_s):
            key, request = _request(url, tuple((headers or {}).items()), pool is not None)
            tls, host, port = key
            pooled = pool.take(key) if pool is not None else None
            while True:
                if pooled is None:
                    stage[0] = "connecting"
                    ctx = (ssl_ctx or ssl_context(verify)) if tls else None
                    conn[:] = await asyncio.open_connection(
                        host, port, ssl=ctx, server_hostname=host if tls else None, limit=_READ
                    )
                else:
                    conn[:] = pooled
                reader, writer = conn
                try:
                    writer.write(request)
                    stage[0] = "waiting for the answer"
                    r.status, r.headers, version = await _read_head(
                        reader, stale_ok=pooled is not None
                    )
                    break
                except (_Stale, OSError, ValueError, asyncio.IncompleteReadError):
                    if pooled is None:
                        raise
                    # closed by the server while idle, or left with bytes of a past
                    # answer: once more, on a new connection
                    writer.close()
                    pooled = None
            stage[0] = "reading the body"
            try:
                r.body, framed = await _read_body(reader, r.headers, max_bytes, stage)
                keep = (
                    pool is not None
                    and framed
                    and version == "HTTP/1.1"
                    and r.headers.get("connection", "").lower() != "close"
                    and not reader.at_eof()
                )
            except _Cut as cut:  # what arrived is kept: the parser drops a partial last line
                r.body, r.reason = cut.body or None, f"{url}: {cut.reason}"
    except TimeoutError:
        got = f" ({stage[0]})" if stage[0] else ""
        r.reason = f"{url}: no complete answer within the {deadline_s:g} s deadline{got}"
        r.body = None
        keep = False
    except ssl.SSLError as exc:
        r.reason, r.body = f"{url}: TLS failed: {exc.reason or exc}", None
    except _Stale:
        r.reason, r.body = (
            f"{url}: cannot fetch: connection closed before the answer's headers",
            None,
        )
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        r.reason, r.body = f"{url}: cannot fetch: {_one_line(exc)}", None
    finally:
        writer = conn[1]
        if writer is not None:
            if keep and pool is not None:
                pool.give(key, conn[0], writer)
            else:
                writer.close()
    r.elapsed_s = time.perf_counter() - t0
    if r.status is not None and not 200 <= r.status < 300 and r.reason is None:
        r.reason, r.body = f"{url}: HTTP {r.status}", None
    return r


@functools.lru_cache(maxsize=1 << 16)
def _request(
    url: str, headers: tuple[tuple[str, str], ...], keep_alive: bool
) -> tuple[tuple[bool, str, int], bytes]:
    """((TLS, host, port), the request's bytes) for `url`: worked out once per target,
    not on every scrape."""
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    hdrs = {
        "Host": parts.netloc.rsplit("@", 1)[-1],
        "User-Agent": "fleettui",
        "Accept-Encoding": "identity",
        **({} if keep_alive else {"Connection": "close"}),
        **dict(headers),
    }
    head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    return (tls, host, port), (head + "\r\n").encode("latin-1")


async def _read_head(
    reader: asyncio.StreamReader, stale_ok: bool = False
) -> tuple[int, dict[str, str], str]:
    """(status, headers by lower-case name, HTTP version)."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ValueError("answer headers too long") from exc
    except asyncio.IncompleteReadError as exc:
        if stale_ok and not exc.partial:
            raise _Stale from exc
        raise ValueError("connection closed before the answer's headers") from exc
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError("answer headers too long")
    lines = raw.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if (
        len(status_line) < 2
        or not status_line[0].startswith("HTTP/")
        or not status_line[1].isdigit()
    ):
        raise ValueError(f"not an HTTP answer: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(status_line[1]), headers, status_line[0]


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], max_bytes: int, stage: list[str]
) -> tuple[bytes, bool]:
    """(body, framed): framed when its end was known (the connection may serve another)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader, max_bytes, stage)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ValueError(f"bad Content-Length {length[:20]!r}")
        n = int(length)
        if n > max_bytes:  # refused before a byte of the body is read
            raise _Cut(f"body of {n} bytes over the {max_bytes}-byte limit, not read", b"")
        first = await reader.read(n) if n else b""  # usually the whole body, already here
        if len(first) == n:
            return first, True
        buf = bytearray(first)
        if not first:
            raise _Cut(f"connection closed after 0 of {n} bytes", b"")
        stage[0] = f"after {len(buf)} of {n} body bytes"
        while len(buf) < n:
            chunk = await reader.read(min(_READ, n - len(buf)))
            if not chunk:
                raise _Cut(f"connection closed after {len(buf)} of {n} bytes", bytes(buf))
            buf += chunk
            stage[0] = f"after {len(buf)} of {n} body bytes"
        return bytes(buf), True
    buf = bytearray()  # unframed: until the peer closes
    while True:
        chunk = await reader.read(_READ)
        if not chunk:
            return bytes(buf), False
        buf += chunk
        stage[0] = f"after {len(buf)} body bytes"
        if len(buf) > max_bytes:
            raise _Cut(f"body over {max_bytes} bytes, cut", bytes(buf[:max_bytes]))


async def _read_chunked(
    reader: asyncio.StreamReader, max_bytes: int, stage: list[str]
) -> tuple[bytes, bool]:
    buf = bytearray()
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as exc:
            raise _Cut(f"connection closed after {len(buf)} body bytes", bytes(buf)) from exc
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise _Cut(f"bad chunk size {size_text[:20]!r}", bytes(buf)) from exc
        if size == 0:
            while True:  # trailers, up to the empty line that ends the message
                try:
                    line = await reader.readuntil(b"\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return bytes(buf), False  # the body is whole; its connection is not reused
                if line == b"\r\n":
                    return bytes(buf), True
        if len(buf) + size > max_bytes:
            buf += await reader.readexactly(max_bytes - len(buf))
            raise _Cut(f"body over {max_bytes} bytes, cut", bytes(buf))
        try:
            buf += await reader.readexactly(size)
            await reader.readexactly(2)  # the chunk's CRLF
        except asyncio.IncompleteReadError as exc:
            buf += exc.partial
            raise _Cut(f"connection closed after {len(buf)} body bytes", bytes(buf)) from exc
        stage[0] = f"after {len(buf)} body bytes"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
