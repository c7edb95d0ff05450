"""The outermost ASGI layer: per-address concurrency cap, request deadline, security
headers and one log line per request.

It wraps Litestar's whole handler (router and exception handling included), so 404s,
405s and CORS preflights get the same headers and log line as everything else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from typing import Any

from dialtone.config import Settings
from dialtone.security.addresses import Proxies, client_address

log = logging.getLogger("dialtone.http")

ASGIApp = Any
Message = dict[str, Any]

BASE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
NO_STORE = (b"cache-control", b"no-store")


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class Edge:
    def __init__(self, app: ASGIApp, settings: Settings, trusted: Proxies) -> None:
        self.app = app
        self.timeout = settings.request_timeout
        # DIALTONE_RATE_LIMITS=off lifts the cap too: load tests open thousands of
        # sockets from one address.
        self.cap = settings.max_connections_per_address if settings.rate_limits else None
        self.hsts = bool(settings.tls_cert)
        self.trusted = trusted
        self.active: dict[str, int] = defaultdict(int)

    def address(self, scope: dict[str, Any]) -> str:
        client = scope.get("client")
        peer = client[0] if client else None
        return client_address(peer, _header(scope, b"x-forwarded-for"), self.trusted)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        address = self.address(scope)
        if self.cap is not None and self.active[address] >= self.cap:
            log.warning(
                "connection cap hit",
                extra={"event": "rate_limited", "policy": "connections", "client": address},
            )
            await self._refuse(scope, send)
            return
        self.active[address] += 1
        try:
            if kind == "http":
                await self._http(scope, receive, send, address)
            else:
                await self.app(scope, receive, self._secured_denial(send))
        finally:
            self.active[address] -= 1
            if not self.active[address]:
                del self.active[address]

    def _secured_denial(self, send: Any) -> Any:
        """A refused WebSocket handshake is an HTTP response too: it gets the same headers."""

        async def secured_send(message: Message) -> None:
            if message["type"] == "websocket.http.response.start":
                message["headers"] = self._secure(list(message.get("headers", [])), True)
            await send(message)

        return secured_send

    async def _refuse(self, scope: dict[str, Any], send: Any) -> None:
        prefix = "http"
        if scope["type"] == "websocket":
            if "websocket.http.response" not in (scope.get("extensions") or {}):
                # Without the denial-response extension a handshake can only be refused as 403.
                await send({"type": "websocket.close", "code": 1008})
                return
            # The same 429 as over HTTP, before the upgrade, so a client can tell why.
            prefix = "websocket.http"
        await _send_error(
            send, 429, "too many concurrent connections", "rate_limited", retry=True, prefix=prefix
        )

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any, address: str) -> None:
        started = time.perf_counter()
        state: dict[str, Any] = {"status": None, "body_done": False}
        authenticated = _header(scope, b"authorization") is not None

        async def tracked_receive() -> Message:
            message: Message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message["headers"] = self._secure(list(message.get("headers", [])), authenticated)
            await send(message)

        try:
            async with asyncio.timeout(self.timeout):
                await self.app(scope, tracked_receive, secured_send)
        except TimeoutError:
            # Still reading a slow body: the client's fault (408); otherwise ours (503).
            slow_body = not state["body_done"]
            log.warning(
                "request timed out",
                extra={"event": "timeout", "path": scope.get("path"), "slow_body": slow_body},
            )
            if state["status"] is None:
                if slow_body:
                    await _send_error(secured_send, 408, "request body too slow", "timeout")
                else:
                    await _send_error(
                        secured_send, 503, "request timed out", "unavailable", retry=True
                    )
        finally:
            self._log(scope, state["status"], started, address)

    def _secure(
        self, headers: list[tuple[bytes, bytes]], authenticated: bool
    ) -> list[tuple[bytes, bytes]]:
        present = {bytes(name).lower() for name, _ in headers}
        extra = [h for h in BASE_HEADERS if h[0] not in present]
        content_type = next(
            (bytes(v).lower() for n, v in headers if bytes(n).lower() == b"content-type"), b""
        )
        # The interactive schema pages are HTML with scripts; every API answer gets CSP.
        if CSP[0] not in present and not content_type.startswith(b"text/html"):
            extra.append(CSP)
        if NO_STORE[0] not in present and (
            authenticated or not content_type.startswith(b"text/html")
        ):
            extra.append(NO_STORE)
        if self.hsts and HSTS[0] not in present:
            extra.append(HSTS)
        return headers + extra

    def _log(self, scope: dict[str, Any], status: int | None, started: float, address: str) -> None:
        caller = scope.get("dialtone_caller")
        path = scope.get("path", "")
        level = logging.DEBUG if path == "/health" else logging.INFO
        log.log(
            level,
            "request",
            extra={
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "user_id": getattr(caller, "user_id", None),
                "device_id": getattr(caller, "device_id", None),
                "client": address,
            },
        )


async def _send_error(
    send: Any, status: int, message: str, code: str, retry: bool = False, prefix: str = "http"
) -> None:
    body = json.dumps({"error": message, "code": code}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *BASE_HEADERS,
        CSP,
        NO_STORE,
    ]
    if retry:
        headers.append((b"retry-after", b"1"))
    await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})
