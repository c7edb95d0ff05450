"""Run the app under uvicorn with the protocol choices the benchmarks justify."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

from dialtone.app import create_app
from dialtone.config import Settings
from dialtone.realtime.hub import Hub

MAX_HEADER_BYTES = 32 * 1024
HEADER_TIMEOUT = 10.0


class BoundedHttpProtocol(HttpToolsProtocol):
    """httptools with bounds uvicorn leaves out: the request head (line plus headers)
    must arrive within HEADER_TIMEOUT seconds of the connection or of its first byte,
    and fit in MAX_HEADER_BYTES. Slow bodies are bounded by the request deadline of
    dialtone.api.edge; idle keep-alive connections by uvicorn's keep-alive timeout."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _head_tail = b""
    _in_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends anything is cut too (uvicorn arms no timer
        # until a first response has been sent).
        self._head_timer = self.loop.call_later(HEADER_TIMEOUT, self._head_timeout)

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            super().data_received(data)
            return
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEADER_TIMEOUT, self._head_timeout)
        # Count only the head: one read may also carry (part of) the body. The blank line
        # that ends the head may straddle two reads, hence the three-byte tail.
        window = self._head_tail + data
        end = window.find(b"\r\n\r\n")
        self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._head_tail))
        self._head_tail = window[-3:]
        if self._head_bytes > MAX_HEADER_BYTES:
            self._reject(431, "Request Header Fields Too Large", "request headers too large")
            return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self._head_bytes = 0
        self._head_tail = b""
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self._in_body:
            self._reject(408, "Request Timeout", "request headers too slow")

    def _reject(self, status: int, reason: str, message: str) -> None:
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        body = json.dumps({"error": message, "code": "bad_request"}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason.encode(), len(body), body)
        )
        self.transport.close()


class _Inbox:
    """What uvicorn uses of ``asyncio.Queue`` (put_nowait, get, empty) for the one reader
    of a socket, without the queue's three deques: ~2 KiB less per idle socket. uvicorn
    pauses reading while a message waits, so the list stays a few items long."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class _Flag:
    """What uvicorn uses of ``asyncio.Event`` (set, clear, is_set, wait), lighter."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = True) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if not self._value:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        return True


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus a synchronous write for the hub.

    The ASGI ``send`` is a coroutine: writing one event to N sockets through it means
    N awaits, and a task per socket to run them. The hub instead hands a frame it built
    once (``dialtone.realtime.hub.text_frame``: server frames are unmasked, so the bytes
    are the same for every socket) to ``write_frame``, found in the scope's extensions
    under ``dialtone.write_frame``. It writes only while the socket is open and its
    transport is below the high-water mark; otherwise it returns False and the hub
    queues the event for the ordinary ASGI ``send``, which waits for the buffer to drain.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The handshake's request and response (headers and all) are not needed again.
            self.request = self.response = None  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and self.response.status_code == 101:
            # The app's task is created but has not run yet: it sees the extension.
            scope["extensions"]["dialtone.write_frame"] = self.write_frame
            scope["extensions"]["dialtone.abort"] = self.abort

    def write_frame(self, frame: bytes) -> bool:
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or self.conn.state is not State.OPEN
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True

    def abort(self) -> None:
        """Drop the connection now (a closing socket that could not flush in time)."""
        self.transport.abort()


def uvicorn_config(settings: Settings, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": BoundedHttpProtocol,
        "ws": DirectWebSocketProtocol,
        # Ciphertext does not compress; deflate would only cost memory per socket.
        "ws_per_message_deflate": False,
        "ws_max_size": 64 * 1024,
        # Protocol-level pings (ASGI cannot send them): a peer that does not answer
        # within one interval is dropped, and the gateway sees a disconnect.
        "ws_ping_interval": settings.ws_ping_interval,
        "ws_ping_timeout": settings.ws_ping_interval,
        "proxy_headers": False,
        "server_header": False,
        "date_header": True,
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 10,
        "h11_max_incomplete_event_size": 16 * 1024,
        "limit_concurrency": 20000,
        "backlog": 4096,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
    }
    if settings.tls_cert and settings.tls_key:
        options["ssl_certfile"] = settings.tls_cert
        options["ssl_keyfile"] = settings.tls_key
    options.update(overrides)
    return uvicorn.Config(create_app(settings), **options)


class DialtoneServer(uvicorn.Server):
    """uvicorn, but sockets are closed by the hub with 1001 (going away) and the voice
    rooms emptied before uvicorn's own shutdown would close them with 1012."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        hub = getattr(getattr(self.config.app, "state", None), "hub", None)
        if isinstance(hub, Hub):
            await hub.shutdown(grace=min(5.0, float(self.config.timeout_graceful_shutdown or 5)))
        await super().shutdown(sockets)


def serve(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """Serve until stopped; on ``sockets`` when given (``dialtone.workers``), else on
    settings.host:settings.port."""
    DialtoneServer(uvicorn_config(settings)).run(sockets=sockets)
