"""Dialtone's WebSocket protocol (dialtone.realtime.wsserver) under a real uvicorn.

The first part is the contract with uvicorn that the module relies on: uvicorn builds
the class with ``config``/``server_state``/``app_state`` keywords on an upgrade, and on
shutdown calls ``shutdown()`` on what is in ``server_state.connections``. If uvicorn
changes either, these tests fail. They run a small ASGI app of their own, on a real
socket, with raw clients where the test needs to misbehave (no pong, fragments).
The second part runs the Dialtone app: refusal, subprotocol echo, the direct frame
path (coalescing, order, slow consumer, drain timeout), and the same handshake bytes
as under uvicorn's stock protocol.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

from dialtone.config import Settings
from dialtone.realtime.hub import CLOSE_TRY_AGAIN, Hub
from dialtone.realtime.wsserver import FRAMES_EXTENSION, WebSocketProtocol
from dialtone.server import BoundedHttp
from tests.realtime.conftest import (
    LiveServer,
    closed_with,
    next_of,
    recv,
    running_server,
    with_settings,
)

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


# ---------------------------------------------------------------- a small app on uvicorn


class Recording(WebSocketProtocol):
    """Our protocol (subclassing our own class), noting how uvicorn built it."""

    __slots__ = ()
    built: list[dict[str, Any]] = []  # one test at a time

    def __init__(self, **kwargs: Any) -> None:
        type(self).built.append(kwargs)
        super().__init__(**kwargs)


FLOOD = 100  # messages of 60 kB sent by /flood


class EchoApp:
    """Accepts every socket (echoing an offered subprotocol) and echoes text; ``close``
    makes it close with 4000; ``/deny`` refuses with a 401. Every message it receives
    after the connect goes to ``received``."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        self.scopes.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        if scope["path"] == "/boom":
            raise RuntimeError("the app fails before answering")
        if scope["path"] == "/deny":
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": b'{"code":"no"}'})
            return
        if scope["path"] == "/flood":
            await send({"type": "websocket.accept"})
            for i in range(FLOOD):
                await send({"type": "websocket.send", "text": f"{i:05d}" + "x" * 60_000})
            await self.received.put({"type": "flooded"})
            await receive()
            return
        accept: dict[str, Any] = {"type": "websocket.accept", "headers": [(b"x-echo", b"1")]}
        if scope["subprotocols"]:
            accept["subprotocol"] = scope["subprotocols"][0]
        await send(accept)
        while True:
            message = await receive()
            await self.received.put(message)
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close":
                await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
            elif message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})


@asynccontextmanager
async def echo_server(**options: Any) -> AsyncIterator[tuple[uvicorn.Server, EchoApp, int]]:
    app = EchoApp()
    values: dict[str, Any] = {
        "port": 0,
        "loop": "asyncio",
        "http": "httptools",
        "ws": Recording,
        "lifespan": "off",
        "log_config": None,
        "ws_ping_interval": None,
        **options,
    }
    server = uvicorn.Server(uvicorn.Config(app, **values))
    task = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    # uvicorn offers a flag, not an event, for "started".
    while not (server.started or task.done()) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield server, app, port
    finally:
        await RawClient.close_all()
        server.should_exit = True
        await asyncio.wait_for(task, 20)


class RawClient:
    """A WebSocket client written by hand: it answers nothing unless told to."""

    opened: list[RawClient] = []  # closed by echo_server / the test's end

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        RawClient.opened.append(self)

    @classmethod
    async def close_all(cls) -> None:
        clients, cls.opened = cls.opened, []
        for client in clients:
            client.writer.close()
            with contextlib.suppress(OSError):
                await client.writer.wait_closed()

    @classmethod
    async def open(cls, port: int, path: str = "/", headers: str = "") -> tuple[RawClient, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{headers}\r\n"
            ).encode()
        )
        client = cls(reader, writer)  # registered first: closed even if no answer comes
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return client, head

    def send(self, opcode: Opcode, data: bytes, fin: bool = True) -> None:
        self.writer.write(Frame(opcode, data, fin=fin).serialize(mask=True))

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload); (-1, b"") at EOF."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), 5)
        except asyncio.IncompleteReadError:
            return -1, b""
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return head[0] & 0x0F, await self.reader.readexactly(length)

    async def eof(self) -> bytes:
        """Everything until the server closes the connection."""
        return await asyncio.wait_for(self.reader.read(), 5)

    def close(self) -> None:
        self.writer.close()


def close_code(payload: bytes) -> tuple[int, str]:
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


async def test_uvicorn_builds_the_protocol_with_keywords_and_the_scope_is_complete() -> None:
    Recording.built.clear()
    async with echo_server(root_path="/base") as (server, app, port):
        url = f"ws://127.0.0.1:{port}/a%20b?x=1"
        async with connect(url, subprotocols=["chat.v1"], open_timeout=5) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat.v1"
            assert ws.response.headers["x-echo"] == "1"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
        assert (await app.received.get())["text"] == "hello"
        assert (await app.received.get())["bytes"] == b"\x00\x01"
        closed = await app.received.get()
        assert closed == {"type": "websocket.disconnect", "code": 1000, "reason": ""}
    [kwargs] = Recording.built
    assert set(kwargs) == {"config", "server_state", "app_state"}
    assert kwargs["config"] is server.config
    assert isinstance(kwargs["server_state"], ServerState)
    assert kwargs["server_state"] is server.server_state
    assert isinstance(kwargs["app_state"], dict)
    [scope] = app.scopes
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["server"] == ("127.0.0.1", port)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["root_path"] == "/base"
    assert scope["path"] == "/base/a b"
    assert scope["raw_path"] == b"/base/a%20b"
    assert scope["query_string"] == b"x=1"
    assert (b"sec-websocket-protocol", b"chat.v1") in [(k.lower(), v) for k, v in scope["headers"]]
    assert scope["subprotocols"] == ["chat.v1"]
    assert scope["state"] == {}
    assert "websocket.http.response" in scope["extensions"]
    assert isinstance(scope["extensions"][FRAMES_EXTENSION], WebSocketProtocol)


async def test_a_refusal_is_a_real_http_response() -> None:
    async with echo_server() as (_, app, port):
        client, head = await RawClient.open(port, "/deny")
        assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
        body = await client.eof()
        assert body == b'{"code":"no"}'
        assert b"content-length: 13" in head.lower()
        assert app.received.empty()


async def test_an_app_that_fails_before_answering_gets_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with echo_server() as (_, _app, port):
        client, head = await RawClient.open(port, "/boom")
        assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        await client.eof()
    assert "Exception in ASGI application" in caplog.text


async def test_handshakes_websockets_refuses_get_its_http_answer() -> None:
    async with echo_server() as (_, app, port):
        # A header line longer than websockets reads (uvicorn took it): 431 (websockets
        # 15 closes without an answer instead); the connection is not left hanging.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        writer.close()
        # No Sec-WebSocket-Key: 400.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 400 ")
        writer.close()
        assert app.scopes == []


async def test_an_asgi_send_waits_while_the_transport_is_paused() -> None:
    async with echo_server() as (_, app, port):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", port))
        # A small stream limit: the client stops reading the socket once ~2 kB wait.
        reader, writer = await asyncio.open_connection(sock=raw, limit=1024)
        client = RawClient(reader, writer)
        writer.write(
            b"GET /flood HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        protocol = app.scopes[0]["extensions"][FRAMES_EXTENSION]
        for _ in range(500):
            if not protocol.writable:
                break
            await asyncio.sleep(0.01)
        assert not protocol.writable, "the transport never paused"
        # Paused: the app's send waits, so what the server holds stays bounded.
        assert protocol.transport.get_write_buffer_size() < 256 * 1024
        assert app.received.empty()
        # The client reads: every message arrives, in order, and the app finishes.
        for i in range(FLOOD):
            opcode, payload = await client.frame()
            assert (opcode, payload[:5]) == (Opcode.TEXT.value, f"{i:05d}".encode())
        assert await app.received.get() == {"type": "flooded"}


async def test_uvicorn_shutdown_closes_open_sockets_with_1012() -> None:
    async with echo_server() as (server, app, port):
        client, _ = await RawClient.open(port)
        client.send(Opcode.TEXT, b"hi")
        assert await client.frame() == (Opcode.TEXT.value, b"hi")
        assert (await app.received.get())["text"] == "hi"
        server.should_exit = True
        opcode, payload = await client.frame()
        assert opcode == Opcode.CLOSE.value
        assert close_code(payload)[0] == 1012
        assert await app.received.get() == {"type": "websocket.disconnect", "code": 1012}
        assert await client.eof() == b""


async def test_a_peer_that_does_not_answer_pings_is_dropped() -> None:
    async with echo_server(ws_ping_interval=0.05, ws_ping_timeout=0.05) as (_, app, port):
        client, _ = await RawClient.open(port)
        opcode, _ = await client.frame()
        assert opcode == Opcode.PING.value
        # No pong: the server gives up with 1011 and the app sees a disconnect.
        opcode, payload = await client.frame()
        assert opcode == Opcode.CLOSE.value
        assert close_code(payload) == (1011, "keepalive ping timeout")
        message = await app.received.get()
        assert message["type"] == "websocket.disconnect"
        assert message["code"] == 1011


async def test_a_peer_that_answers_pings_stays() -> None:
    async with echo_server(ws_ping_interval=0.02, ws_ping_timeout=0.5) as (_, _app, port):
        client, _ = await RawClient.open(port)
        for _ in range(3):
            opcode, payload = await client.frame()
            assert opcode == Opcode.PING.value
            client.send(Opcode.PONG, payload)
        client.send(Opcode.TEXT, b"still here")
        while (frame := await client.frame())[0] == Opcode.PING.value:
            client.send(Opcode.PONG, frame[1])
        assert frame == (Opcode.TEXT.value, b"still here")


async def test_a_message_over_ws_max_size_closes_1009() -> None:
    async with echo_server(ws_max_size=1024) as (_, app, port):
        async with connect(f"ws://127.0.0.1:{port}/", open_timeout=5) as ws:
            await ws.send("x" * 1024)
            assert await ws.recv() == "x" * 1024
            await ws.send("x" * 1025)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009
        assert (await app.received.get())["text"] == "x" * 1024
        message = await app.received.get()
        assert (message["type"], message["code"]) == ("websocket.disconnect", 1009)


async def test_a_fragmented_message_arrives_whole_and_fragments_count_toward_the_limit() -> None:
    async with echo_server(ws_max_size=1024) as (_, app, port):
        client, _ = await RawClient.open(port)
        client.send(Opcode.TEXT, "héllo ".encode(), fin=False)
        client.send(Opcode.CONT, b"wor", fin=False)
        client.send(Opcode.CONT, b"ld")
        assert await client.frame() == (Opcode.TEXT.value, "héllo world".encode())
        assert (await app.received.get())["text"] == "héllo world"
        client.send(Opcode.BINARY, b"a" * 1000, fin=False)
        client.send(Opcode.CONT, b"a" * 100)
        opcode, payload = await client.frame()
        assert (opcode, close_code(payload)[0]) == (Opcode.CLOSE.value, 1009)


async def test_close_handshakes_both_ways() -> None:
    async with echo_server() as (_, app, port):
        # The app closes: the peer gets 4000 "bye", answers, and the server hangs up.
        client, _ = await RawClient.open(port)
        client.send(Opcode.TEXT, b"close")
        opcode, payload = await client.frame()
        assert (opcode, close_code(payload)) == (Opcode.CLOSE.value, (4000, "bye"))
        assert (await app.received.get())["text"] == "close"
        assert await app.received.get() == {
            "type": "websocket.disconnect",
            "code": 4000,
            "reason": "bye",
        }
        client.send(Opcode.CLOSE, payload)
        assert await client.eof() == b""
        # The peer closes: the server echoes its close frame and the app is told.
        client, _ = await RawClient.open(port)
        client.send(Opcode.CLOSE, struct.pack("!H", 1001) + b"away")
        opcode, payload = await client.frame()
        assert (opcode, close_code(payload)) == (Opcode.CLOSE.value, (1001, "away"))
        assert await app.received.get() == {
            "type": "websocket.disconnect",
            "code": 1001,
            "reason": "away",
        }
        assert await client.eof() == b""


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_sockets_are_wss_and_work_the_same(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    async with echo_server(ssl_certfile=str(cert), ssl_keyfile=str(key)) as (_, app, port):
        async with connect(f"wss://127.0.0.1:{port}/", ssl=trust, open_timeout=5) as ws:
            await ws.send("over tls")
            assert await ws.recv() == "over tls"
        [scope] = app.scopes
        assert scope["scheme"] == "wss"
        assert (await app.received.get())["text"] == "over tls"


# ---------------------------------------------------------------- the Dialtone app


def hub_of(live: LiveServer) -> Hub:
    hub: Hub = live.server.config.app.state.hub
    return hub


@SQLITE
async def test_the_handshake_bytes_are_those_of_uvicorns_stock_protocol(
    settings: Settings,
) -> None:
    """Same status, header names and values (but the per-connection ones) for a 101
    with a subprotocol echo and for a 401 refusal, under both protocols."""
    seen: dict[str, list[tuple[bytes, list[bytes]]]] = {}
    for name, options in (("stock", {"ws": "websockets-sansio"}), ("ours", {})):
        async with running_server(settings, **options) as live:
            member = await live.register(f"someone{name}")
            heads = []
            for headers in (f"Sec-WebSocket-Protocol: dialtone.bearer.{member.token}\r\n", ""):
                _, head = await RawClient.open(live.port, "/ws", headers)
                lines = head.split(b"\r\n")
                kept = sorted(
                    line.lower()
                    for line in lines[1:]
                    if line and not line.lower().startswith((b"date:", b"sec-websocket-accept:"))
                )
                kept = [k.replace(member.token.lower().encode(), b"TOKEN") for k in kept]
                heads.append((lines[0], kept))
            await RawClient.close_all()
            seen[name] = heads
    assert seen["ours"] == seen["stock"]
    assert seen["ours"][0][0] == b"HTTP/1.1 101 Switching Protocols"
    assert b"sec-websocket-protocol: dialtone.bearer.TOKEN" in seen["ours"][0][1]
    assert seen["ours"][1][0] == b"HTTP/1.1 401 Unauthorized"


@SQLITE
async def test_a_handshake_without_a_token_gets_401_through_the_protocol(live: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(live.ws_url, open_timeout=5)
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert b'"code":"unauthorized"' in response.body


@SQLITE
async def test_events_in_one_loop_turn_go_out_in_one_write_in_order(live: LiveServer) -> None:
    member = await live.register("reader")
    ws = await live.connect(member)
    hub = hub_of(live)
    [conn] = hub.conns.values()
    events = [f'{{"type":"filler","n":{i}}}' for i in range(50)]
    for text in events:
        conn.push(text)
    # Nothing is written before the loop turns: all 50 wait in the socket's buffer...
    assert conn.queued == 50
    assert conn.writing
    conn.close(4001, "done")
    # ...and the close frame comes after them.
    code, reason, seen = await closed_with(ws)
    assert [e["n"] for e in seen if e["type"] == "filler"] == list(range(50))
    assert (code, reason) == (4001, "done")
    assert conn.queued == 0
    assert not conn.writing


@SQLITE
async def test_a_paused_socket_keeps_its_frames_until_it_reads_and_loses_nothing(
    settings: Settings,
) -> None:
    async with running_server(with_settings(settings, ws_send_queue=10_000)) as live:
        stuck_member = await live.register("stuck")
        other_member = await live.register("other")
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", live.port))
        raw.setblocking(False)
        stuck = await connect(
            live.ws_url,
            sock=raw,
            max_queue=1,
            open_timeout=5,
            additional_headers={"Authorization": f"Bearer {stuck_member.token}"},
        )
        live.sockets.append(stuck)
        other = await live.connect(other_member)
        hub = hub_of(live)
        conn = next(c for c in hub.conns.values() if c.user_id == stuck_member.user_id)
        filler = '{"type":"filler","pad":"' + "x" * 60_000 + '"}'
        pushed = 0
        # One loop turn at a time until the transport pauses and frames stay behind.
        while conn.queued == 0:
            conn.push(filler)
            pushed += 1
            assert pushed < 2_000, "the transport never paused"
            await asyncio.sleep(0)
        assert conn.writing
        # The other socket is served meanwhile.
        hub.broadcast('{"type":"ping.test"}')
        assert (await next_of(other, "ping.test"))["type"] == "ping.test"
        # The stuck reader resumes: every filler, then the broadcast, in order.
        count = 0
        while True:
            event = await recv(stuck, 30)
            if event["type"] == "filler":
                count += 1
            elif event["type"] == "ping.test":
                break
        assert count == pushed
        await asyncio.wait_for(conn.drained(), 30)
        assert conn.queued == 0
        assert not conn.writing


@SQLITE
async def test_a_socket_that_cannot_drain_is_aborted_and_forgotten(settings: Settings) -> None:
    async with running_server(with_settings(settings, ws_send_queue=10_000)) as live:
        stuck_member = await live.register("stuck")
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", live.port))
        raw.setblocking(False)
        ws = await connect(
            live.ws_url,
            sock=raw,
            max_queue=1,
            open_timeout=5,
            close_timeout=1,
            additional_headers={"Authorization": f"Bearer {stuck_member.token}"},
        )
        live.sockets.append(ws)
        hub = hub_of(live)
        conn = next(c for c in hub.conns.values() if c.user_id == stuck_member.user_id)
        filler = '{"type":"filler","pad":"' + "x" * 60_000 + '"}'
        while conn.queued == 0:
            conn.push(filler)
            await asyncio.sleep(0)
        for _ in range(20):
            conn.push(filler)
        conn.close(CLOSE_TRY_AGAIN, "slow_consumer", drain_timeout=0.05)
        # The drain timer aborts the connection (no close frame): the server forgets it.
        for _ in range(500):
            if conn.id not in hub.conns:
                break
            await asyncio.sleep(0.01)
        assert conn.id not in hub.conns
        assert conn.queued == 0
        assert not conn.writing
        fresh = await live.connect(stuck_member)
        assert fresh.state.name == "OPEN"


# ---------------------------------------------------------------- nothing before the 101


class Watching(WebSocketProtocol):
    """Our protocol, telling the test when bytes arrived before the handshake's answer."""

    __slots__ = ()
    arrived: asyncio.Event | None = None  # one test at a time

    def data_received(self, data: bytes) -> None:
        requested = self.response is not None or self.denial is not None
        super().data_received(data)
        if requested and type(self).arrived is not None:
            type(self).arrived.set()


class GatedApp(EchoApp):
    """Answers the handshake (accept, or a 401 on ``/deny``) only once ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def gated_receive() -> Any:
            message = await receive()
            if message["type"] == "websocket.connect":
                await self.gate.wait()
            return message

        await super().__call__(scope, gated_receive, send)


def upgrade_request(path: str, headers: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    ).encode()


def masked(opcode: Opcode, data: bytes) -> bytes:
    return Frame(opcode, data).serialize(mask=True)


@asynccontextmanager
async def gated_server(**options: Any) -> AsyncIterator[tuple[GatedApp, int]]:
    app = GatedApp()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            port=0,
            loop="asyncio",
            http=BoundedHttp,
            ws=Watching,
            lifespan="off",
            log_config=None,
            ws_ping_interval=None,
            **options,
        )
    )
    task = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not (server.started or task.done()) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield app, server.servers[0].sockets[0].getsockname()[1]
    finally:
        await RawClient.close_all()
        server.should_exit = True
        await asyncio.wait_for(task, 20)


@pytest.mark.parametrize("together", [True, False], ids=["one-write", "while-deciding"])
async def test_a_ping_before_the_answer_is_ponged_after_the_101(together: bool) -> None:
    """A ping sent with the upgrade request (one write), or after it while the app is
    still deciding: the first bytes out are the 101, and the pong follows it; a text
    frame sent with it reaches the app after the accept."""
    Watching.arrived = asyncio.Event()
    async with gated_server() as (app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = RawClient(reader, writer)
        early = masked(Opcode.PING, b"early") + masked(Opcode.TEXT, b"hello")
        if together:
            writer.write(upgrade_request("/") + early)
        else:
            writer.write(upgrade_request("/"))
            # The app has the connect (it waits at the gate) once the request is parsed.
            await writer.drain()
            writer.write(early)
            await asyncio.wait_for(Watching.arrived.wait(), 5)
        app.gate.set()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head
        assert await client.frame() == (Opcode.PONG.value, b"early")
        assert await app.received.get() == {"type": "websocket.receive", "text": "hello"}
        assert await client.frame() == (Opcode.TEXT.value, b"hello")


async def test_frames_before_a_refusal_are_dropped() -> None:
    """Refused: the refusal is all that is written (no pong before or after it)."""
    Watching.arrived = asyncio.Event()
    async with gated_server() as (app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        RawClient(reader, writer)
        writer.write(upgrade_request("/deny") + masked(Opcode.PING, b"early"))
        await writer.drain()
        writer.write(masked(Opcode.PING, b"later"))
        await asyncio.wait_for(Watching.arrived.wait(), 5)
        app.gate.set()
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), answer
        assert answer.endswith(b'\r\n\r\n{"code":"no"}'), answer


@SQLITE
async def test_the_server_answers_an_upgrade_with_a_ping_101_first(live: LiveServer) -> None:
    """Dialtone's own server (its bounded HTTP protocol, the gateway's database lookup
    before the accept): the upgrade request with a token and a ping in one write. The
    101 comes first, the pong after it, and the socket works on."""
    member = await live.register("eager")
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    client = RawClient(reader, writer)
    writer.write(
        upgrade_request("/ws", f"Authorization: Bearer {member.token}\r\n")
        + masked(Opcode.PING, b"first")
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head
    # The first events (voice snapshot, hello) and the pong, in whatever order.
    frames = [await client.frame()]
    while frames[-1][0] == Opcode.TEXT.value and len(frames) < 5:
        frames.append(await client.frame())
    assert frames[-1] == (Opcode.PONG.value, b"first"), frames
    client.send(Opcode.CLOSE, struct.pack("!H", 1000))
    opcode, payload = await client.frame()
    while opcode != Opcode.CLOSE.value:
        opcode, payload = await client.frame()
    assert close_code(payload)[0] == 1000
