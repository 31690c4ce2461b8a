"""The two Prometheus HTTP API calls the "prometheus" source makes, each under a deadline.

`GET /api/v1/query` and `GET /api/v1/query_range` through `collectors.http_get`
(one deadline for connect, headers and body, whatever the server or a proxy
in front of it does; a body over `max_body_bytes` refused from its
Content-Length or cut while streaming). The JSON answer is decoded in the
caller's executor, never on the event loop: a range query over a large fleet
is tens of megabytes.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.parse
from concurrent.futures import Executor
from typing import Any

from collectors import http_get
from storage.batch import storable_text


class PromApiError(RuntimeError):
    """A query failed; the message is one line naming the URL."""


class PromApi:
    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        tls_verify: bool = True,
        timeout_s: float = 10.0,
        max_body_bytes: int = 256 << 20,
    ):
        self.url = url.rstrip("/")
        self.headers = dict(headers or {})
        self.auth = auth
        self.tls_verify = tls_verify
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._ssl: ssl.SSLContext | None = (
            http_get.ssl_context(tls_verify) if self.url.startswith("https") else None
        )
        sent = dict(self.headers)
        if auth is not None and not any(k.lower() == "authorization" for k in sent):
            sent["Authorization"] = http_get.basic_auth(*auth)
        sent.setdefault("Accept", "application/json")
        self._sent_headers = sent

    async def query(self, query: str, executor: Executor | None = None) -> list[dict[str, Any]]:
        return await self._get("/api/v1/query", {"query": query}, executor)

    async def query_range(
        self, query: str, start: float, end: float, step: str, executor: Executor | None = None
    ) -> list[dict[str, Any]]:
        params = {"query": query, "start": round(start), "end": round(end), "step": step}
        return await self._get("/api/v1/query_range", params, executor)

    async def targets(self, state: str = "active", executor: Executor | None = None) -> dict:
        """`GET /api/v1/targets` (`data`: activeTargets, droppedTargets)."""
        return await self._get("/api/v1/targets", {"state": state}, executor, key=None)

    async def _get(
        self, path: str, params: dict, executor: Executor | None, key: str | None = "result"
    ) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        r = await http_get.get(
            url,
            deadline_s=self.timeout_s,
            max_bytes=self.max_body_bytes,
            headers=self._sent_headers,
            ssl_ctx=self._ssl,
        )
        where = f"{self.url}{path}"
        if r.reason is not None:
            # reasons name the full URL (with the query); keep the line short
            raise PromApiError(r.reason.replace(url, where, 1))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, _result, r.body or b"", where, key)


def _result(body: bytes, where: str, key: str | None = "result") -> Any:
    """`data.result` (or all of `data` when key is None) of an API answer."""
    try:
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise PromApiError(  # the server's words: bounded, storable (no lone surrogate)
                storable_text(
                    f"{where}: {doc.get('errorType', 'error')}: {doc.get('error', '')}"[:300]
                )
            )
        return doc["data"] if key is None else doc["data"][key]
    # RecursionError: JSON nested deeper than the decoder goes ([[[[...]]]])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise PromApiError(f"{where}: not a Prometheus API answer ({type(exc).__name__})") from exc
