"""Run the app under uvicorn, through uvicorn's public configuration.

uvicorn with httptools bounds neither the size of a request head nor the time it may
take to arrive. ``BoundedHttp`` adds both without touching uvicorn's internals: it is
an asyncio protocol that *holds* uvicorn's httptools protocol, follows the framing of
the byte stream on its own (``RequestFraming``) and hands every byte on unchanged
until a head breaks a bound. See docs/OPERATIONS.md for the same bounds at a proxy.

A WebSocket upgrade is served by Dialtone's own protocol class,
``dialtone.realtime.wsserver.WebSocketProtocol``, given to uvicorn as ``ws=``: the
hub writes prebuilt frames through it. Everything that depends on how uvicorn builds
and shuts down that class lives in that one module.

Both classes are given to uvicorn as subclasses made by ``gated_protocols``, which count
each connection in a ``dialtone.accept.AcceptGate`` from its accept to its end (the
WebSocket class gives the count back for an upgraded connection, whose transport it
then owns): an address over its cap is closed before uvicorn sees the connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, cast

import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from dialtone.accept import AcceptGate, raise_descriptor_limit
from dialtone.api.edge import DialtoneApp
from dialtone.app import create_app
from dialtone.config import Settings
from dialtone.errors import error_body
from dialtone.realtime.wsserver import WebSocketProtocol

# A request head (request line, headers, and a chunked body's trailers) must fit in
# MAX_HEADER_BYTES and arrive within HEADER_TIMEOUT seconds of its first byte (or of
# the connection, for the first one). Read when a connection opens: tests lower them.
MAX_HEADER_BYTES = 32 * 1024
HEADER_TIMEOUT = 10.0
# The longest chunk-size line accepted (hex size plus extensions).
MAX_CHUNK_LINE = 1024

# uvicorn's httptools protocol, found by its public name (the `--http httptools` choice)
# in uvicorn's own table of protocols, the lookup its Config does; never by module path.
HTTP_PROTOCOL: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS["httptools"])

TOO_LARGE = "too_large"
BAD_FRAMING = "bad_framing"


class RequestFraming:
    """Follows an HTTP/1.1 request stream: where each head starts and ends.

    ``feed`` returns how many bytes of ``data`` may be handed on and, when that is not
    all of them, why not (``TOO_LARGE``: a head over the bound; ``BAD_FRAMING``: a
    head whose body length it cannot tell, which httptools would refuse too). Bodies
    are skipped by their length (Content-Length, or chunk sizes), so a head that
    arrives in the same read as the end of a body is counted from its first byte.
    After a protocol switch (WebSocket upgrade, CONNECT) it stops looking.
    """

    HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, TRAILERS, SWITCHED = range(6)

    __slots__ = (
        "_blank",
        "_buffer",
        "_remaining",
        "_trailer_bytes",
        "heads",
        "max_head",
        "state",
        "switched_at",
    )

    def __init__(self, max_head: int = MAX_HEADER_BYTES) -> None:
        self.max_head = max_head
        self.state = self.HEAD
        self._buffer = bytearray()
        self._remaining = 0  # body or chunk bytes (chunk data includes its CRLF)
        self._trailer_bytes = 0
        self.heads = 0  # complete, well-formed heads seen (and handed on)
        # Blank lines arrived since the last head: they start no request (HTTP allows
        # them before one), but they do not stop the head's clock either, or a
        # connection sending "\r\n\r\n" now and then would never be cut.
        self._blank = False
        # Where, in the bytes of the last ``feed``, the head that switched protocols
        # ended (None if that call did not switch): what follows is the new protocol's.
        self.switched_at: int | None = None

    @property
    def head_started(self) -> bool:
        """Bytes of a head have arrived, its end has not."""
        return self.state == self.HEAD and (bool(self._buffer) or self._blank)

    def feed(self, data: bytes) -> tuple[int, str | None]:
        pos, size = 0, len(data)
        self.switched_at = None
        while pos < size:
            state = self.state
            if state == self.SWITCHED:
                return size, None
            if state == self.BODY or state == self.CHUNK_DATA:
                step = min(self._remaining, size - pos)
                pos += step
                self._remaining -= step
                if not self._remaining:
                    self.state = self.HEAD if state == self.BODY else self.CHUNK_SIZE
                continue
            if state == self.HEAD:
                end = self._until(data, pos, b"\r\n\r\n", self.max_head)
                if end is None:
                    # Nothing of this head is handed on beyond what already was.
                    return (pos, TOO_LARGE) if len(self._buffer) > self.max_head else (size, None)
                head = bytes(self._buffer)
                self._buffer.clear()
                problem = self._parse_head(head)
                if problem is not None:
                    return pos, problem  # uvicorn never sees this head complete
                pos = end
                if self.state == self.SWITCHED:
                    self.switched_at = end
                continue
            # A chunk-size line, or one line of a chunked body's trailers.
            bound = MAX_CHUNK_LINE if state == self.CHUNK_SIZE else self.max_head
            bound -= self._trailer_bytes
            end = self._until(data, pos, b"\r\n", bound)
            if end is None:
                if len(self._buffer) > bound:
                    return pos, TOO_LARGE if state == self.TRAILERS else BAD_FRAMING
                return size, None
            pos = end
            line = bytes(self._buffer[:-2])
            self._buffer.clear()
            if state == self.TRAILERS:
                if line:
                    self._trailer_bytes += len(line) + 2
                else:
                    self._trailer_bytes = 0
                    self.state = self.HEAD
                continue
            chunk = self._chunk_size(line)
            if chunk is None:
                return pos, BAD_FRAMING
            if chunk:
                self._remaining = chunk + 2
                self.state = self.CHUNK_DATA
            else:
                self.state = self.TRAILERS
        return size, None

    def _until(self, data: bytes, pos: int, mark: bytes, bound: int) -> int | None:
        """Buffer ``data`` from ``pos`` up to and including ``mark``, keeping at most
        ``bound`` + len(mark) bytes; the position in ``data`` after the mark, or None
        while it has not arrived (all of ``data`` is then buffered or over the bound)."""
        buffer = self._buffer
        before = len(buffer)
        buffer += data[pos : pos + max(0, bound + len(mark) - before)]
        found = buffer.find(mark, max(0, before - len(mark) + 1))
        if found < 0:
            return None
        end = found + len(mark)
        del buffer[end:]
        return pos + end - before

    def _parse_head(self, head: bytes) -> str | None:
        if len(head) > self.max_head:
            return TOO_LARGE
        lines = head[:-4].split(b"\r\n")
        while lines and not lines[0]:
            lines.pop(0)  # empty lines before a request line are allowed
        if not lines:
            self._blank = True
            return None
        self._blank = False
        lengths: list[bytes] = []
        codings: list[bytes] = []
        connection: list[bytes] = []
        upgrade = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
                return BAD_FRAMING
            name = name.lower()
            if name == b"content-length":
                lengths.extend(v.strip(b" \t") for v in value.split(b","))
            elif name == b"transfer-encoding":
                codings.extend(v.strip(b" \t").lower() for v in value.split(b","))
            elif name == b"connection":
                connection.extend(v.strip(b" \t").lower() for v in value.split(b","))
            elif name == b"upgrade":
                upgrade = True
        if codings and (lengths or codings[-1] != b"chunked"):
            return BAD_FRAMING
        if lengths and (len(set(lengths)) != 1 or not lengths[0].isdigit()):
            return BAD_FRAMING
        self.heads += 1
        if lines[0].startswith(b"CONNECT ") or (upgrade and b"upgrade" in connection):
            self.state = self.SWITCHED  # the WebSocket protocol (or nobody) reads on
        elif codings:
            self.state = self.CHUNK_SIZE
        elif lengths and int(lengths[0]):
            self._remaining = int(lengths[0])
            self.state = self.BODY
        return None

    @staticmethod
    def _chunk_size(line: bytes) -> int | None:
        digits = line.partition(b";")[0].strip(b" \t")
        if not digits or len(digits) > 16:
            return None
        try:
            return int(digits, 16)
        except ValueError:
            return None


class BoundedHttp(asyncio.Protocol):
    """uvicorn's httptools protocol, held rather than subclassed, behind two bounds:
    each request head must fit in MAX_HEADER_BYTES and arrive within HEADER_TIMEOUT.

    A head that breaks a bound before any request was handed on is answered 431 or
    408 and the connection closed. One that comes after earlier requests (keep-alive,
    pipelining) only closes the connection: an answer written here could interleave
    with one uvicorn is still writing. Slow bodies are bounded by the request deadline
    of dialtone.api.edge; idle keep-alive connections by uvicorn's keep-alive timeout.
    A WebSocket upgrade hands the transport to the WebSocket protocol, so once a
    socket is open its frames no longer pass through here.
    """

    # Counts connections from their accept (dialtone.accept); set by gated_protocols.
    gate: AcceptGate | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.inner = HTTP_PROTOCOL(*args, **kwargs)
        self.framing = RequestFraming(MAX_HEADER_BYTES)
        self.timeout = HEADER_TIMEOUT
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.refused = False
        self.started = False  # uvicorn's protocol has the connection (not refused at accept)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)
        if self.gate is not None and not self.gate.admit(transport):
            # Over its address's cap: closed before a byte is read or uvicorn sees it.
            self.refused = True
            self.transport.abort()
            return
        self.inner.connection_made(self.transport)
        self.started = True
        # A connection that never sends anything is cut too (uvicorn arms no timer
        # until a first response has been sent).
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        framing = self.framing
        taken, problem = framing.feed(data)
        switched = framing.switched_at
        if switched is not None and switched < taken:
            # An upgrade request and the first frames in one read: uvicorn hands the
            # WebSocket protocol the request it parsed, not what followed it. The
            # request goes to uvicorn, which switches the transport's protocol; the
            # frames then go to whichever protocol the transport now has.
            self.inner.data_received(data[:switched])
            self._after_switch(data[switched:taken])
        elif taken:
            self.inner.data_received(data if taken == len(data) else data[:taken])
        if problem is not None:
            if problem == TOO_LARGE:
                self._refuse(431, "Request Header Fields Too Large", "request headers too large")
            else:
                self._refuse(400, "Bad Request", "unsupported request framing")
        elif framing.head_started:
            if self.timer is None:
                self._arm()
        elif self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _after_switch(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.get_protocol() is self:
            self.inner.data_received(data)  # uvicorn did not switch: as before
        elif not transport.is_closing():
            cast(asyncio.Protocol, transport.get_protocol()).data_received(data)

    def eof_received(self) -> None:
        if self.started:
            self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.gate is not None and self.transport is not None:
            self.gate.release(self.transport)
        if self.started:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.started:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.started:
            self.inner.resume_writing()

    def _arm(self) -> None:
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._too_slow)

    def _too_slow(self) -> None:
        self.timer = None
        if self.framing.state == RequestFraming.HEAD:
            self._refuse(408, "Request Timeout", "request headers too slow")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self.refused = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.framing.heads == 0:
            # Nothing of uvicorn's is in flight: the answer cannot interleave with one.
            body = error_body(message, "bad_request")
            transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, reason.encode(), len(body), body)
            )
        transport.close()


def gated_protocols(gate: AcceptGate) -> tuple[type[BoundedHttp], type[WebSocketProtocol]]:
    """The HTTP and WebSocket protocol classes for uvicorn, counting connections in
    ``gate`` from accept to close. An upgraded connection's transport belongs to the
    WebSocket protocol, so that one gives the count back when it ends."""

    class GatedHttp(BoundedHttp):
        pass

    GatedHttp.gate = gate

    class GatedWebSocket(WebSocketProtocol):
        __slots__ = ()

        def connection_lost(self, exc: Exception | None) -> None:
            transport = self.transport
            super().connection_lost(exc)
            if transport is not None:
                gate.release(transport)

    return GatedHttp, GatedWebSocket


def quiet_protocol_logs() -> None:
    """uvicorn's protocol log, and the websockets library's that uvicorn and Dialtone's
    WebSocket protocol route into it, print every header of a WebSocket handshake at
    debug level (bearer tokens included): they stay at info, whatever
    DIALTONE_LOG_LEVEL says. (The paths uvicorn logs are percent-encoded, so they cannot
    forge lines; dialtone's own are escaped.)"""
    for name in ("uvicorn.error", "websockets"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def uvicorn_config(settings: Settings, **overrides: Any) -> uvicorn.Config:
    quiet_protocol_logs()
    app = overrides.pop("app", None) or create_app(settings)
    # Connections per address from their accept (dialtone.accept); lifted with the other
    # limits by DIALTONE_RATE_LIMITS=off. Kept on the app's state for metrics to read.
    gate = AcceptGate(
        settings.max_open_connections_per_address if settings.rate_limits else None,
        app.trusted,
    )
    app.state.accept_gate = gate
    http, ws = gated_protocols(gate)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": http,
        # Dialtone's own WebSocket protocol (dialtone.realtime.wsserver): the hub writes
        # prebuilt frames through it; the coupling to uvicorn is that module's alone.
        "ws": ws,
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
        "limit_concurrency": 20000,
        "backlog": 4096,
        "log_config": None,
        # dialtone.api.edge writes the access log (without tokens, paths escaped).
        "access_log": False,
        "lifespan": "on",
    }
    if settings.tls_cert and settings.tls_key:
        options["ssl_certfile"] = settings.tls_cert
        options["ssl_keyfile"] = settings.tls_key
    options.update(overrides)
    return uvicorn.Config(app, **options)


class DialtoneServer(uvicorn.Server):
    """uvicorn, but sockets are closed by the hub with 1001 (going away) and the voice
    rooms emptied before uvicorn's own shutdown would close them with 1012."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        app = self.config.app
        if isinstance(app, DialtoneApp):
            grace = min(5.0, float(self.config.timeout_graceful_shutdown or 5))
            await app.state.gateway.stop(grace=grace)
        await super().shutdown(sockets)


def serve(
    settings: Settings,
    sockets: list[socket.socket] | None = None,
    *,
    worker: int = 0,
    metrics_dir: str | None = None,
) -> None:
    """Serve until stopped; on ``sockets`` when given (``dialtone.workers``, which also
    names the worker and its multiprocess metrics folder), else on settings.host:port."""
    # Before the gate reads the limit: systemd's default soft limit is 1024.
    raise_descriptor_limit()
    app = create_app(settings, worker=worker, metrics_dir=metrics_dir)
    DialtoneServer(uvicorn_config(settings, app=app)).run(sockets=sockets)
