"""Dialtone's own WebSocket protocol, which uvicorn runs for every upgraded connection.

uvicorn's public ``Config(ws=...)`` takes an ``asyncio.Protocol`` class. Its HTTP
protocol, on a WebSocket upgrade, builds that class with three keyword arguments
(``config``, ``server_state``, ``app_state``), calls ``connection_made(transport)``,
feeds the upgrade request's bytes to ``data_received`` and hands the transport over
(``set_protocol``). On shutdown, uvicorn's Server calls ``shutdown()`` on every
protocol in ``server_state.connections`` and waits for the tasks in
``server_state.tasks``. That contract is all this module relies on, and
tests/realtime/test_wsserver.py fails if uvicorn changes it; nothing here subclasses,
imports or touches uvicorn's own WebSocket implementations. The handshake and the
parsing of incoming frames are the ``websockets`` library's public sans-I/O API
(``ServerProtocol``); frames the server sends are serialised by its ``Frame``.

Behaviour follows uvicorn's websockets-sansio protocol, which served /ws before:
the ASGI scope (with the ``websocket.http.response`` extension, so a handshake can be
refused with a real HTTP response), keep-alive pings (``ws_ping_interval``, a peer
that does not answer within ``ws_ping_timeout`` is dropped), ``ws_max_size`` (a
bigger message closes 1009), no permessage-deflate, the closing handshake with a 10 s
timeout, write flow control (an ASGI ``send`` waits while the transport is paused),
1012 to the sockets left open when uvicorn shuts down. The 101 response carries the
same headers as before.

What it adds: the scope extension ``dialtone.frames`` (``FRAMES_EXTENSION``), this
protocol object itself, through which the hub writes prebuilt server frames straight
to the transport (several events in one write), learns when a paused transport can
take more (``on_writable``), sends the close frame, and aborts a socket that does not
drain. Per-socket state is kept small (``__slots__``, no queue or event objects, the
handshake's request and response are dropped once answered): thousands of idle
sockets are held by this object, the websockets parser and the app's task.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.metadata
import logging
import random
import struct
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import uvicorn
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

FRAMES_EXTENSION = "dialtone.frames"
# The closing handshake: how long the peer has to answer our close frame.
CLOSE_TIMEOUT = 10.0

log = logging.getLogger("uvicorn.error")

Message = dict[str, Any]

# websockets 17 documents request header values as ISO-8859-1; before, they were
# decoded with surrogate escapes (the same bytes come back either way).
_LATIN1 = int(importlib.metadata.version("websockets").split(".")[0]) >= 17
_HEADER_ENCODING = "latin-1" if _LATIN1 else "ascii"
_HEADER_ERRORS = "strict" if _LATIN1 else "surrogateescape"

# Stages of a connection.
WAITING, REQUESTED, OPEN, DENYING, DONE = range(5)


def text_frame(text: str) -> bytes:
    """One unmasked server text frame: built once per event, written to many sockets."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class ClientDisconnected(OSError):
    """An ASGI ``send`` to a connection that is gone (ASGI: an OSError subclass)."""


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _address(transport: asyncio.Transport, local: bool) -> tuple[str, int | None] | None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            info = sock.getsockname() if local else sock.getpeername()
        except OSError:
            return None
    else:
        info = transport.get_extra_info("sockname" if local else "peername")
    if isinstance(info, list | tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    if isinstance(info, str) and local:
        return (info, None)
    return None


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection, from the upgrade request to the closed transport."""

    __slots__ = (
        "app_state",
        "close_timer",
        "closed",
        "config",
        "denial",
        "ended",
        "fragments",
        "fragments_text",
        "head_tail",
        "held",
        "inbox",
        "loop",
        "lost",
        "on_writable",
        "ping_payload",
        "read_paused",
        "receiver",
        "response",
        "server_state",
        "stage",
        "timer",
        "transport",
        "writable",
        "write_waiters",
        "ws",
    )

    def __init__(
        self, *, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any]
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.ws = ServerProtocol(max_size=config.ws_max_size, logger=log)
        self.stage = WAITING
        # Bytes that came after the upgrade request, before the app answered it: they
        # wait unparsed until the 101 is written (see _before_answer).
        self.held: bytearray | None = None
        self.head_tail = b""  # the last bytes of a request head still arriving
        self.response: Response | None = None  # the 101, until the app accepts
        self.denial: tuple[int, list[tuple[str, str]], bytes] | None = None
        # Incoming ASGI messages the app has not taken yet, and its waiting receive().
        self.inbox: list[Message] = []
        self.receiver: asyncio.Future[None] | None = None
        self.ended: Message | None = None  # the disconnect message, once there is one
        self.read_paused = False
        self.fragments: list[bytes] | None = None
        self.fragments_text = False
        # Output: frames may be written (accepted, no close frame sent, not lost).
        self.closed = True
        self.lost = False
        self.writable = True  # the transport is not paused
        self.write_waiters: list[asyncio.Future[None]] | None = None
        # Called when a paused transport can take more, and when the connection is lost.
        self.on_writable: Callable[[], None] | None = None
        self.timer: asyncio.TimerHandle | None = None  # the next ping, or the pong deadline
        self.ping_payload: bytes | None = None
        self.close_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)
        self.server_state.connections.add(cast(Any, self))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.closed = True
        self.writable = True
        self._stop_keepalive()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        self.server_state.connections.discard(cast(Any, self))
        self._end({"type": "websocket.disconnect", "code": 1005 if self.stage >= OPEN else 1006})
        self.stage = DONE
        self._wake_writers()
        callback, self.on_writable = self.on_writable, None
        if callback is not None:
            callback()
        if exc is None and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> None:
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._wake_writers()
        if self.on_writable is not None:
            self.on_writable()

    def data_received(self, data: bytes) -> None:
        if self.stage != OPEN:
            data = self._before_answer(data)
            if not data:
                return
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                opcode = event.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    if event.fin:
                        self._message(opcode is Opcode.TEXT, event.data)
                    else:
                        self.fragments_text = opcode is Opcode.TEXT
                        self.fragments = [bytes(event.data)]
                elif opcode is Opcode.CONT:
                    if self.fragments is not None:
                        self.fragments.append(bytes(event.data))
                        if event.fin:
                            whole, self.fragments = b"".join(self.fragments), None
                            self._message(self.fragments_text, whole)
                elif opcode is Opcode.PING:
                    self._flush_protocol()  # websockets queued the pong
                elif opcode is Opcode.PONG:
                    self._pong(bytes(event.data))
                elif opcode is Opcode.CLOSE:
                    self._peer_closed()
            elif isinstance(event, Request):
                self._request(event)
        if ws.parser_exc is not None:
            self._failed()  # after the messages that came before the bad frame
            return
        if self.stage == WAITING:
            out = ws.data_to_send()
            if out and self.transport is not None:
                # A request websockets refused to parse: it queued a 4xx response.
                self.transport.write(b"".join(out))
                self.stage = DONE
                self._close_transport()

    # ------------------------------------------------------------ server shutdown (uvicorn)

    def shutdown(self) -> None:
        self._stop_keepalive()
        transport = self.transport
        if transport is None:
            return
        if self.stage == OPEN and not self.closed:
            self._end({"type": "websocket.disconnect", "code": 1012})
            self.ws.send_close(1012)
            self._flush_protocol()
            self.closed = True
        elif self.stage != OPEN:
            self._send_500()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        transport.close()

    # ------------------------------------------------------------ the fast path (the hub)

    def write_frames(self, data: bytes) -> None:
        """Write prebuilt server frames, unless a close frame went out or the peer left."""
        if not self.closed:
            assert self.transport is not None
            self.transport.write(data)

    def send_close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake (the app then sees a disconnect)."""
        if self.stage != OPEN or self.closed:
            return
        self._end({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.ws.send_close(code, reason)
        self._flush_protocol()
        self.closed = True
        self._stop_keepalive()
        if self.read_paused:
            self.read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._close_timed_out)

    def abort(self) -> None:
        """Drop the connection at once, whatever is still buffered."""
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------ ASGI

    def _app_done(self, task: asyncio.Task[Any]) -> None:
        """The app's task ended. (The task runs the app's coroutine itself, with no
        wrapper coroutine of ours: one frame less per socket.)"""
        self.server_state.tasks.discard(task)
        if task.cancelled():
            self._send_500()
        elif (exc := task.exception()) is not None:
            if not isinstance(exc, ClientDisconnected):
                log.error("Exception in ASGI application\n", exc_info=exc)
                self._send_500()
        elif self.stage == REQUESTED:
            log.error("ASGI callable returned without completing handshake.")
            self._send_500()
        elif (result := task.result()) is not None:
            log.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None:
            self._close_transport()

    async def receive(self) -> Message:
        while True:
            inbox = self.inbox
            if inbox:
                message = inbox.pop(0)
                if not inbox and self.read_paused:
                    self.read_paused = False
                    assert self.transport is not None
                    self.transport.resume_reading()
                return message
            if self.ended is not None:
                return self.ended
            waiter = self.receiver = self.loop.create_future()
            try:
                await waiter
            finally:
                self.receiver = None

    async def send(self, message: Message) -> None:
        while not self.writable:
            waiter = self.loop.create_future()
            if self.write_waiters is None:
                self.write_waiters = []
            self.write_waiters.append(waiter)
            await waiter
        if self.lost:
            raise ClientDisconnected()
        kind = message["type"]
        stage = self.stage
        if stage == REQUESTED:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._refuse()
            elif kind == "websocket.http.response.start":
                status = message["status"]
                if not 100 <= status < 600:
                    raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
                headers = [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in message.get("headers", ())
                ]
                self.denial = (status, headers, b"")
                self.stage = DENYING
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' "
                    f"or 'websocket.http.response.start' but got '{kind}'."
                )
        elif stage == OPEN and not self.closed:
            if kind == "websocket.send":
                if self.ws.state is not State.OPEN:
                    raise ClientDisconnected()
                data = message.get("bytes")
                text = message.get("text")
                assert self.transport is not None
                if data is not None:
                    self.transport.write(Frame(Opcode.BINARY, data).serialize(mask=False))
                elif text is not None:
                    self.transport.write(text_frame(text))
            elif kind == "websocket.close":
                if self.ws.state is not State.OPEN:
                    raise ClientDisconnected()
                self.send_close(message.get("code", 1000), message.get("reason") or "")
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.send' or 'websocket.close', "
                    f"but got '{kind}'."
                )
        elif stage == DENYING and kind == "websocket.http.response.body":
            self._deny_body(message)
        elif stage in (OPEN, DONE):
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
            )
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}'.")

    # ------------------------------------------------------------ handshake

    def _request(self, request: Request) -> None:
        ws = self.ws
        response = ws.accept(request)
        if response.status_code != 101:
            self.stage = DONE
            ws.send_response(response)
            self._flush_protocol()
            self._close_transport()
            return
        self.response = response
        self.stage = REQUESTED
        transport = self.transport
        assert transport is not None
        headers = [
            (name.encode("ascii"), value.encode(_HEADER_ENCODING, _HEADER_ERRORS))
            for name, value in request.headers.raw_items()
        ]
        raw_path, _, query = request.path.partition("?")
        subprotocols: list[str] = []
        for offered in request.headers.get_all("Sec-WebSocket-Protocol"):
            subprotocols.extend(token.strip() for token in offered.split(","))
        root_path = self.config.root_path
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if transport.get_extra_info("sslcontext") else "ws",
            "server": _address(transport, local=True),
            "client": _address(transport, local=False),
            "root_path": root_path,
            "path": root_path + unquote(raw_path),
            "raw_path": root_path.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}, FRAMES_EXTENSION: self},
        }
        self.inbox.append({"type": "websocket.connect"})
        app = cast(Callable[..., Awaitable[Any]], self.config.loaded_app)
        task = asyncio.ensure_future(app(scope, self.receive, self.send), loop=self.loop)
        self.server_state.tasks.add(task)
        task.add_done_callback(self._app_done)

    def _accept(self, message: Message) -> None:
        response, self.response = self.response, None
        assert response is not None
        assert self.transport is not None
        del response.headers["Date"]
        extra = [*self.server_state.default_headers, *message.get("headers", ())]
        response.headers.update(
            (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in extra
        )
        subprotocol = message.get("subprotocol")
        if subprotocol:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
        self.stage = OPEN
        if not self.transport.is_closing():
            self.closed = False
            self.ws.send_response(response)
            self._flush_protocol()
            # A fresh parser for the frames: the handshake's keeps the request (and its
            # headers) alive for the life of the socket. It never saw a frame: what
            # came after the request was held back until now.
            self.ws = ServerProtocol(state=State.OPEN, max_size=self.config.ws_max_size, logger=log)
            self._schedule_ping()
            held, self.held = self.held, None
            if held:
                self.data_received(bytes(held))
            if self.read_paused and not self.inbox and self.transport is not None:
                self.read_paused = False
                self.transport.resume_reading()

    def _refuse(self) -> None:
        """``websocket.close`` before the handshake: 403, as ASGI says."""
        self.response = self.held = None
        self._end({"type": "websocket.disconnect", "code": 1006})
        self.ws.send_response(self.ws.reject(HTTPStatus.FORBIDDEN, ""))
        self.stage = DONE
        self._flush_protocol()
        self._close_transport()

    def _deny_body(self, message: Message) -> None:
        assert self.denial is not None
        status, headers, body = self.denial
        body += message.get("body", b"")
        if message.get("more_body", False):
            self.denial = (status, headers, body)
            return
        self.denial = self.response = self.held = None
        fields = Headers(headers)
        fields.setdefault("Date", email.utils.formatdate(usegmt=True))
        fields.setdefault("Connection", "close")
        fields.setdefault("Content-Length", str(len(body)))
        fields.setdefault("Content-Type", "text/plain; charset=utf-8")
        self._end({"type": "websocket.disconnect", "code": 1006})
        self.ws.send_response(Response(status, _phrase(status), fields, body))
        self.stage = DONE
        self._flush_protocol()
        self._close_transport()

    def _send_500(self) -> None:
        if self.stage in (REQUESTED, WAITING):
            self.response = self.held = None
            self.ws.send_response(self.ws.reject(500, "Internal Server Error"))
            self.stage = DONE
            self._flush_protocol()

    def _before_answer(self, data: bytes) -> bytes:
        """What of ``data`` the parser may have before the handshake is answered: the
        request head, nothing after it.

        websockets' parser reads frames as soon as the request is parsed, and queues a
        pong for a ping (an echo for a close) before our 101 could go out: a frame
        written before the handshake's answer, which no client can read. So a frame
        that arrives with the upgrade request or while the app decides is held, unparsed,
        with reading paused; the accept hands it to the frame parser after the 101, a
        refusal drops it.
        """
        if self.stage == WAITING:
            seen = self.head_tail + data
            end = seen.find(b"\r\n\r\n")
            if end < 0:
                self.head_tail = seen[-3:]
                return data
            cut = end + 4 - len(self.head_tail)
            self.head_tail = b""
            if cut < len(data):
                self._hold(data[cut:])
            return data[:cut]
        if self.stage == REQUESTED:
            self._hold(data)
        return b""  # refusing (or refused): nothing more is read

    def _hold(self, data: bytes) -> None:
        if self.held is None:
            self.held = bytearray()
        self.held += data
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    # ------------------------------------------------------------ incoming frames

    def _message(self, text: bool, data: Any) -> None:
        if self.closed and self.stage == OPEN:
            return  # past our close frame: read on until the peer's, keep nothing
        if text:
            try:
                message: Message = {"type": "websocket.receive", "text": str(data, "utf-8")}
            except UnicodeDecodeError:
                self.ws.fail(1007, "invalid UTF-8")
                self._failed()
                return
        else:
            message = {"type": "websocket.receive", "bytes": bytes(data)}
        self.inbox.append(message)
        self._wake_receiver()
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _peer_closed(self) -> None:
        transport = self.transport
        assert transport is not None
        if self.closed:
            # The peer answered our close frame: the closing handshake is complete.
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
                transport.close()
            return
        if not transport.is_closing():
            received = self.ws.close_rcvd
            code = received.code if received is not None else 1005
            reason = received.reason if received is not None else ""
            self._end({"type": "websocket.disconnect", "code": code, "reason": reason})
            self._flush_protocol()  # websockets queued the echo of the close frame
            self.closed = True
            self._stop_keepalive()
            transport.close()

    def _failed(self) -> None:
        """A frame websockets refused (too big: 1009, bad framing: 1002, ...): it queued
        the close frame; send it and close."""
        sent = self.ws.close_sent
        code = sent.code if sent is not None else 1006
        reason = sent.reason if sent is not None else ""
        self._end({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._flush_protocol()
        self.closed = True
        self._stop_keepalive()
        self._close_transport()

    # ------------------------------------------------------------ keep-alive

    def _schedule_ping(self) -> None:
        interval = self.config.ws_ping_interval
        if interval is not None and interval > 0:
            self.timer = self.loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        self.timer = None
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return
        self.ping_payload = payload = struct.pack("!I", random.getrandbits(32))
        self.ws.send_ping(payload)
        self._flush_protocol()
        timeout = self.config.ws_ping_timeout
        if timeout is not None:
            self.timer = self.loop.call_later(timeout, self._ping_timed_out)
        else:
            self._schedule_ping()

    def _pong(self, payload: bytes) -> None:
        if self.ping_payload is None or payload != self.ping_payload:
            return  # unsolicited, or for an older ping
        self.ping_payload = None
        if self.config.ws_ping_timeout is not None and self.timer is not None:
            self.timer.cancel()
            self._schedule_ping()

    def _ping_timed_out(self) -> None:
        self.timer = None
        self.ping_payload = None
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return
        reason = "keepalive ping timeout"
        self._end({"type": "websocket.disconnect", "code": 1011, "reason": reason})
        self.ws.fail(1011, reason)
        self._flush_protocol()
        self.closed = True
        # A peer that does not answer pings is not reading either: nothing to wait for.
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _stop_keepalive(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.ping_payload = None

    # ------------------------------------------------------------ helpers

    def _flush_protocol(self) -> None:
        """Write what websockets queued (handshake response, pong, close frame)."""
        out = self.ws.data_to_send()
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.write(b"".join(out))

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _close_timed_out(self) -> None:
        """The peer did not answer our close frame in time: stop waiting for it (and
        for it to read what is still buffered)."""
        self.close_timer = None
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _end(self, message: Message) -> None:
        if self.ended is None:
            self.ended = message
            self._wake_receiver()

    def _wake_receiver(self) -> None:
        waiter = self.receiver
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writers(self) -> None:
        waiters, self.write_waiters = self.write_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)
