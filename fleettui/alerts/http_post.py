"""One HTTP POST with a deadline on the whole exchange, whatever the peer does.

A per-read timeout (urllib's `timeout`) never fires on a peer that trickles a
byte every few seconds, and a request stuck in a worker thread cannot be
cancelled. This is plain asyncio streams under `asyncio.timeout`: connect,
send, read the status line and headers (bounded), close. Cancelling it closes
the socket. Only the status code matters to the callers, so the body is not read.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024


class HttpError(Exception):
    """The exchange failed: no answer within the deadline, refused, or not HTTP."""


async def post(
    url: str, body: bytes, *, deadline_s: float, content_type: str = "application/json"
) -> int:
    """POST `body` to `url` and return the status code; raises HttpError."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise HttpError(f"not an http(s) URL: {url!r}")
    port = u.port or (443 if u.scheme == "https" else 80)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    host_header = u.netloc.rpartition("@")[2]
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "User-Agent: fleettui\r\nConnection: close\r\n\r\n"
    ).encode()
    ctx = ssl.create_default_context() if u.scheme == "https" else None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(deadline_s):
            reader, writer = await asyncio.open_connection(
                u.hostname, port, ssl=ctx, limit=MAX_HEAD_BYTES
            )
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise HttpError(f"not an HTTP answer: {status_line[:80]!r}")
            # read the headers so the peer sees a clean close; the body is not needed
            seen = len(status_line)
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                seen += len(line)
                if seen > MAX_HEAD_BYTES:
                    break
            return int(parts[1])
    except TimeoutError:
        raise HttpError(f"no answer within the {deadline_s:g} s deadline") from None
    except OSError as exc:
        raise HttpError(os.strerror(exc.errno) if exc.errno else str(exc)) from None
    except (ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError) as exc:
        raise HttpError(f"bad answer: {exc}") from None
    finally:
        if writer is not None:
            writer.close()
