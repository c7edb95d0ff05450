"""The edge of the HTTP server, on public interfaces only.

- ``security_headers``: a Litestar ``before_send`` hook. Litestar runs its hooks on
  every message it sends, its router's 404/405, CORS preflights and refused WebSocket
  handshakes included, so every answer gets the same headers.
- ``DialtoneApp``: a plain ASGI application that holds the Litestar app and is what
  uvicorn is handed. It caps concurrent requests per address, puts a deadline on each
  HTTP request and writes one access-log line per request. Lifespan passes straight
  through to Litestar. A fast route (``fast_routes``) may answer a request before
  Litestar, inside those same bounds, and hands it to Litestar when it declines.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import Message as LitestarMessage
from litestar.types import Scope as LitestarScope

from dialtone.config import Settings
from dialtone.errors import error_body
from dialtone.metrics import NO_METRICS, Metrics
from dialtone.realtime.gateway import FRAME_SEND
from dialtone.security.addresses import Proxies, limit_key
from dialtone.security.headers import header, scope_address

log = logging.getLogger("dialtone.http")

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# A route answered before Litestar when it can (see history_fast.py): True when it did.
FastRoute = Callable[[Scope, Send], Awaitable[bool]]

BASE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
NO_STORE = (b"cache-control", b"no-store")

# The access log's status for a request whose client left before it was answered.
CLIENT_CLOSED = 499
_RESPONSE_STARTS = frozenset({"http.response.start", "websocket.http.response.start"})
# C0 controls, DEL and the C1 range: a path is shown with these escaped, so a request
# for "/x%0A<forged line>" cannot start a line of its own in a text log.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """``text`` with control characters (newlines included) escaped as ``\\xNN``."""
    return text.translate(_CONTROL)


def secure_headers(
    headers: list[tuple[bytes, bytes]], *, authenticated: bool, hsts: bool
) -> list[tuple[bytes, bytes]]:
    """The response's headers plus those of ours it does not set itself."""
    present = {bytes(name).lower() for name, _ in headers}
    extra = [h for h in BASE_HEADERS if h[0] not in present]
    content_type = next(
        (bytes(v).lower() for n, v in headers if bytes(n).lower() == b"content-type"), b""
    )
    # The interactive schema pages are HTML with scripts; every API answer gets CSP.
    if CSP[0] not in present and not content_type.startswith(b"text/html"):
        extra.append(CSP)
    if NO_STORE[0] not in present and (authenticated or not content_type.startswith(b"text/html")):
        extra.append(NO_STORE)
    if hsts and HSTS[0] not in present:
        extra.append(HSTS)
    return headers + extra


def security_headers(
    settings: Settings,
) -> Callable[[LitestarMessage, LitestarScope], Awaitable[None]]:
    """A Litestar ``before_send`` hook that adds the security headers to each response."""
    hsts = bool(settings.tls_cert)

    async def before_send(message: LitestarMessage, scope: LitestarScope) -> None:
        if message["type"] in _RESPONSE_STARTS:
            start: Message = message  # type: ignore[assignment]
            start["headers"] = secure_headers(
                list(start.get("headers") or ()),
                authenticated=header(scope, b"authorization") is not None,
                hsts=hsts,
            )

    return before_send


async def log_websocket_failure(exc: Exception, scope: LitestarScope) -> None:
    """A Litestar ``after_exception`` hook: an exception that escapes ``/ws`` is logged.

    By its type and where it was raised, not its text: a database error's text can carry
    the statement's parameters (ciphertext, token hashes)."""
    if scope["type"] != ScopeType.WEBSOCKET:
        return  # HTTP errors are answered and logged by dialtone.api.error_handlers
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    log.error(
        "websocket endpoint failed: %s at %s",
        type(exc).__name__,
        where,
        extra={"event": "websocket_error", "path": printable(scope.get("path", ""))},
    )


class DialtoneApp:
    """The ASGI application uvicorn serves: the edge bounds around the Litestar app."""

    def __init__(self, litestar: Litestar, settings: Settings, trusted: Proxies) -> None:
        self.litestar = litestar
        self.timeout = settings.request_timeout
        # A file upload or download may take longer than any other request.
        self.file_timeout = max(settings.request_timeout, settings.file_transfer_timeout)
        # DIALTONE_RATE_LIMITS=off lifts the cap too: load tests open thousands of
        # sockets from one address.
        self.cap = settings.max_connections_per_address if settings.rate_limits else None
        self.hsts = bool(settings.tls_cert)
        self.trusted = trusted
        self.active: dict[str, int] = defaultdict(int)
        # (method, path) → a fast route; whatever it declines goes to Litestar.
        self.fast_routes: dict[tuple[str, str], FastRoute] = {}
        self.metrics: Metrics = NO_METRICS

    @property
    def state(self) -> State:
        """The Litestar app's state (context, hub, broker, engine once started)."""
        return self.litestar.state

    def address(self, scope: Scope) -> str:
        return scope_address(scope, self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.litestar(scope, receive, send)  # type: ignore[arg-type]
            return
        address = self.address(scope)
        # Counted per client as the rate limits see it: an IPv6 /64 is one client.
        key = limit_key(address)
        if self.cap is not None and self.active[key] >= self.cap:
            self.metrics.rate_limited("connections")
            log.warning(
                "connection cap hit",
                extra={"event": "rate_limited", "policy": "connections", "client": address},
            )
            await self._refuse(scope, send)
            return
        self.active[key] += 1
        try:
            if kind == "http":
                await self._http(scope, receive, send, address)
            else:
                scope[FRAME_SEND] = send  # the gateway's events skip Litestar's send hooks
                await self.litestar(scope, receive, send)  # type: ignore[arg-type]
        finally:
            self.active[key] -= 1
            if not self.active[key]:
                del self.active[key]

    async def _refuse(self, scope: Scope, send: Send) -> None:
        prefix = "http"
        if scope["type"] == "websocket":
            if "websocket.http.response" not in (scope.get("extensions") or {}):
                # Without the denial-response extension a handshake can only be refused as 403.
                await send({"type": "websocket.close", "code": 1008})
                return
            # The same 429 as over HTTP, before the upgrade, so a client can tell why.
            prefix = "websocket.http"
        await self._send_error(
            send, 429, "too many concurrent connections", "rate_limited", retry=True, prefix=prefix
        )

    async def _http(self, scope: Scope, receive: Receive, send: Send, address: str) -> None:
        started = time.perf_counter()
        state: dict[str, Any] = {"status": None, "body_done": False, "client_gone": False}

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                state["body_done"] = True
            elif message["type"] == "http.disconnect" and not state["body_done"]:
                # Gone in the middle of its body: the client's doing, not a server error
                # (Litestar answers a body cut short as a 500).
                state["client_gone"] = True
            return message

        async def tracked_send(message: Message) -> None:
            if state["client_gone"]:
                return  # nobody is there to read an answer
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        fast = self.fast_routes.get((scope["method"], scope["path"]))
        try:
            path: str = scope.get("path", "")
            deadline = self.file_timeout if path.startswith("/files") else self.timeout
            async with asyncio.timeout(deadline):
                if fast is None or not await fast(scope, tracked_send):
                    await self.litestar(scope, tracked_receive, tracked_send)  # type: ignore[arg-type]
        except TimeoutError:
            # Still reading a slow body: the client's fault (408); otherwise ours (503).
            slow_body = not state["body_done"]
            log.warning(
                "request timed out",
                extra={
                    "event": "timeout",
                    "path": printable(scope.get("path", "")),
                    "slow_body": slow_body,
                },
            )
            if state["status"] is None:
                if slow_body:
                    await self._send_error(tracked_send, 408, "request body too slow", "timeout")
                else:
                    await self._send_error(
                        tracked_send, 503, "request timed out", "unavailable", retry=True
                    )
        finally:
            if state["client_gone"] and state["status"] is None:
                # nginx's 499: the client closed the connection before an answer.
                self._log(scope, CLIENT_CLOSED, started, address, client_disconnect=True)
                self.metrics.http_request(scope, fast is not None, CLIENT_CLOSED, started)
            else:
                self._log(scope, state["status"], started, address)
                self.metrics.http_request(scope, fast is not None, state["status"], started)

    async def _send_error(
        self,
        send: Send,
        status: int,
        message: str,
        code: str,
        retry: bool = False,
        prefix: str = "http",
    ) -> None:
        """An answer of the edge's own (Litestar never sees it), with the same headers."""
        body = error_body(message, code)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if retry:
            headers.append((b"retry-after", b"1"))
        headers = secure_headers(headers, authenticated=False, hsts=self.hsts)
        await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
        await send({"type": f"{prefix}.response.body", "body": body})

    def _log(
        self,
        scope: Scope,
        status: int | None,
        started: float,
        address: str,
        *,
        client_disconnect: bool = False,
    ) -> None:
        caller = scope.get("dialtone_caller")
        extra: dict[str, Any] = {"client_disconnect": True} if client_disconnect else {}
        path = scope.get("path", "")
        level = logging.DEBUG if path == "/health" else logging.INFO
        log.log(
            level,
            "request",
            extra={
                "method": scope.get("method"),
                "path": printable(path),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "user_id": getattr(caller, "user_id", None),
                "device_id": getattr(caller, "device_id", None),
                "client": address,
                **extra,
            },
        )
