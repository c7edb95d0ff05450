"""A real uvicorn server in-process on a free port, real sockets, clients named by role."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dialtone.config import Settings
from dialtone.server import DialtoneServer, uvicorn_config
from tests.conftest import Member, register_member
from tests.e2ee import DeviceKeys


def chat_frame(channel_id: str, body: str, sender_name_enc: str = "bg==") -> str:
    """A ``channel.message.send`` frame as a client sends it."""
    return json.dumps(
        {
            "type": "channel.message.send",
            "channel_id": channel_id,
            "body": body,
            "sender_name_enc": sender_name_enc,
        }
    )


@dataclass
class LiveServer:
    settings: Settings
    server: DialtoneServer
    port: int
    http: httpx.AsyncClient
    sockets: list[ClientConnection] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def register(self, username: str | None = None) -> Member:
        return await register_member(self.http, username)

    async def second_device(self, member: Member) -> Member:
        keys = DeviceKeys()
        response = await self.http.post(
            "/auth/login",
            json={
                "username": member.username,
                "password": member.password,
                "public_key": keys.public_b64,
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["device_id"] != member.device_id
        return Member(
            username=member.username,
            password=member.password,
            token=body["token"],
            user_id=body["user_id"],
            device_id=body["device_id"],
            is_admin=body["is_admin"],
            keys=keys,
        )

    async def create_channel(self, admin: Member, name_enc: str = "bmFtZQ==") -> str:
        response = await self.http.post(
            "/channels", json={"name_enc": name_enc}, headers=admin.auth
        )
        assert response.status_code == 201, response.text
        channel_id: str = response.json()["channel"]["id"]
        return channel_id

    async def connect(self, member: Member, **options: Any) -> ClientConnection:
        """Open a socket and consume the greeting (the voice snapshot, then server.hello;
        a device is not told of its own arrival). The hub has registered the socket once
        it is read."""
        ws = await self.connect_raw(member, **options)
        snapshot = await recv(ws)
        assert snapshot["type"] == "voice.presence.snapshot"
        hello = await recv(ws)
        assert hello["type"] == "server.hello"
        return ws

    async def connect_raw(self, member: Member, **options: Any) -> ClientConnection:
        options.setdefault("additional_headers", {"Authorization": f"Bearer {member.token}"})
        ws = await connect(self.ws_url, open_timeout=5, **options)
        self.sockets.append(ws)
        return ws


async def recv(ws: ClientConnection, within: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), within)
    assert isinstance(raw, str), "server frames are JSON text"
    value: dict[str, Any] = json.loads(raw)
    return value


async def next_of(ws: ClientConnection, kind: str, within: float = 5.0) -> dict[str, Any]:
    """The next event of this type, skipping others (e.g. device.joined of late comers)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        event = await recv(ws, max(0.01, deadline - loop.time()))
        if event["type"] == kind:
            return event


async def quiet(ws: ClientConnection, wait: float = 0.3) -> list[dict[str, Any]]:
    """Everything that arrives within `wait` seconds."""
    seen: list[dict[str, Any]] = []
    try:
        while True:
            seen.append(await recv(ws, wait))
    except TimeoutError:
        return seen


def only(events: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in kinds]


def with_settings(settings: Settings, **changes: Any) -> Settings:
    values = {f: getattr(settings, f) for f in settings.__struct_fields__}
    values.update(changes)
    return Settings(**values)


async def closed_with(ws: ClientConnection) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the server closes; the close code, reason and what came before."""
    seen: list[dict[str, Any]] = []
    while True:
        try:
            seen.append(await recv(ws, 10))
        except ConnectionClosed as closed:
            frame = closed.rcvd
            break
    assert frame is not None, "the server sent a close frame"
    return frame.code, frame.reason, seen


def move_away(parts: list[Path]) -> None:
    for part in parts:
        if part.exists():
            part.rename(part.with_name(part.name + ".away"))


def bring_back(parts: list[Path]) -> None:
    for part in parts:
        part.unlink(missing_ok=True)
        away = part.with_name(part.name + ".away")
        if away.exists():
            away.rename(part)


@asynccontextmanager
async def running_server(settings: Settings, **config: Any) -> AsyncIterator[LiveServer]:
    """``config``: uvicorn options over dialtone.server's (e.g. ``ws`` for another protocol)."""
    server = DialtoneServer(uvicorn_config(settings, **{"port": 0, "loop": "asyncio", **config}))
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 60  # generous: only a broken start fails
    # uvicorn offers a flag, not an event, for "started".
    while not (server.started or task.done()) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    assert server.started, "server did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
    live = LiveServer(settings=settings, server=server, port=port, http=http)
    try:
        yield live
    finally:
        for ws in live.sockets:
            await ws.close()
        await http.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 20)


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveServer]:
    async with running_server(settings) as server:
        yield server


@pytest.fixture
async def admin(live: LiveServer) -> Member:
    member = await live.register("admin")
    assert member.is_admin
    return member


@pytest.fixture
async def member(live: LiveServer, admin: Member) -> Member:
    return await live.register("bob")


@pytest.fixture
async def channel(live: LiveServer, admin: Member) -> str:
    return await live.create_channel(admin)


Connect = Callable[[Member], Awaitable[ClientConnection]]
