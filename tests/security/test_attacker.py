"""The issue's "done when", tried as an attacker would on a running server with the
default limits on: password guessing, a lost device, logout, and a database outage.

Each test runs a real uvicorn server (in-process, real sockets). Clients that must
look like different machines connect from other loopback addresses (127.0.0.x), so
the server's per-address limits see them as distinct, with no proxy header involved.
On PostgreSQL the database sits behind a TCP proxy the test can cut.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from dialtone.config import Settings
from tests.conftest import Member, make_settings
from tests.e2ee import DeviceKeys
from tests.realtime.conftest import (
    LiveServer,
    bring_back,
    chat_frame,
    closed_with,
    move_away,
    next_of,
    quiet,
    running_server,
)
from tests.security.conftest import TcpProxy


@dataclass
class Target:
    live: LiveServer
    settings: Settings
    proxy: TcpProxy | None  # PostgreSQL runs behind it; None on SQLite

    def client_from(self, address: str) -> httpx.AsyncClient:
        """An HTTP client whose connections come from another loopback address."""
        return httpx.AsyncClient(
            base_url=self.live.base,
            timeout=10,
            transport=httpx.AsyncHTTPTransport(local_address=address),
        )

    async def cut_database(self) -> None:
        if self.proxy is not None:
            await self.proxy.stop()  # every connection dropped, new ones refused
            return
        # A running process keeps its open SQLite files, so the pool is emptied first;
        # then the files are swapped for a folder, which SQLite cannot open.
        await self.live.server.config.app.state.engine.dispose()
        self._swap_sqlite_files(away=True)

    async def restore_database(self) -> None:
        if self.proxy is not None:
            await self.proxy.start()  # on the same port
            return
        self._swap_sqlite_files(away=False)

    def _swap_sqlite_files(self, *, away: bool) -> None:
        path = Path(self.settings.db_url.split(":///", 1)[1])
        parts = [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm")]
        if away:
            move_away(parts)
            path.mkdir()
        else:
            path.rmdir()
            bring_back(parts)


@pytest.fixture
async def target(db_url: str, tmp_path: Path) -> AsyncIterator[Target]:
    proxy = None
    url = db_url
    if not db_url.startswith("sqlite"):
        proxy, url = await TcpProxy.in_front_of(db_url)
    # The default limits; only the database deadline is shortened to keep the outage brief.
    settings = make_settings(tmp_path, url, rate_limits=True, db_timeout=2.0)
    try:
        async with running_server(settings) as live:
            yield Target(live, settings, proxy)
    finally:
        if proxy is not None and proxy.server is not None:
            await proxy.stop()


def login_body(member: Member, password: str) -> dict[str, str]:
    return {
        "username": member.username,
        "password": password,
        "public_key": DeviceKeys().public_b64,
    }


async def cut_off(ws: ClientConnection) -> tuple[int, str]:
    """The close the server sends. Waiting is event-driven (closed_with gives up after 10 s
    of silence); how fast revocation is lives in bench/, not in a timed assertion."""
    code, reason, _ = await closed_with(ws)
    return code, reason


async def test_thirty_wrong_passwords_get_429s(target: Target) -> None:
    live = target.live
    alice = await live.register("alice")
    bob = await live.register("bob")
    async with target.client_from("127.0.0.9") as attacker:
        statuses = []
        for _ in range(30):
            response = await attacker.post("/auth/login", json=login_body(alice, "guess-1234"))
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["error"]
                assert 1 <= int(response.headers["retry-after"]) <= 600
        # A failure costs two of the five tokens: three guesses, then only 429s.
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3:] == [429] * 27
        # Even the right password from the guessing address waits.
        right = await attacker.post("/auth/login", json=login_body(alice, alice.password))
        assert right.status_code == 429

    # Another user on another address is not affected.
    async with target.client_from("127.0.0.4") as elsewhere:
        response = await elsewhere.post("/auth/login", json=login_body(bob, bob.password))
        assert response.status_code == 200, response.text
    # The guesser cannot lock her out: from her own address she logs in.
    async with target.client_from("127.0.0.5") as fresh:
        response = await fresh.post("/auth/login", json=login_body(alice, alice.password))
        assert response.status_code == 200, response.text
    # Her existing session is untouched.
    assert (await live.http.get("/devices", headers=alice.auth)).status_code == 200


async def test_revoked_device_is_cut_off(target: Target) -> None:
    live = target.live
    await live.register("admin")
    laptop = await live.register("bob")
    phone = await live.second_device(laptop)
    laptop_ws = await live.connect(laptop)
    phone_ws = await live.connect(phone)
    await quiet(laptop_ws, 0.2)  # the phone's device.joined

    response = await live.http.delete(f"/devices/{phone.device_id}", headers=laptop.auth)
    assert response.status_code == 204, response.text
    assert await cut_off(phone_ws) == (1008, "revoked")
    assert (await live.http.get("/devices", headers=phone.auth)).status_code == 401
    assert await next_of(laptop_ws, "device.revoked") == {
        "type": "device.revoked",
        "sender": laptop.user_id,
        "device_id": phone.device_id,
    }
    assert laptop_ws.state.name == "OPEN"
    # The revoked token cannot open a new socket either.
    with pytest.raises(InvalidStatus) as refused:
        await live.connect_raw(phone)
    assert refused.value.response.status_code == 401
    # Refused before the upgrade, as an ordinary HTTP answer with the usual headers.
    assert refused.value.response.headers["X-Content-Type-Options"] == "nosniff"
    assert refused.value.response.headers["Cache-Control"] == "no-store"


async def test_logout_closes_that_tokens_sockets_and_all_closes_every_one(
    target: Target,
) -> None:
    live = target.live
    await live.register("admin")
    laptop = await live.register("bob")
    tablet = await live.second_device(laptop)
    phone = await live.second_device(laptop)
    laptop_sockets = [await live.connect(laptop) for _ in range(2)]
    tablet_sockets = [await live.connect(tablet) for _ in range(2)]
    phone_socket = await live.connect(phone)

    response = await live.http.post("/auth/logout", headers=tablet.auth)
    assert response.status_code == 200, response.text
    for ws in tablet_sockets:
        assert await cut_off(ws) == (1008, "revoked")
    assert (await live.http.get("/devices", headers=tablet.auth)).status_code == 401
    for ws in [*laptop_sockets, phone_socket]:
        await quiet(ws, 0.1)
        assert ws.state.name == "OPEN"

    response = await live.http.post("/auth/logout", params={"all": "1"}, headers=laptop.auth)
    assert response.status_code == 200, response.text
    for ws in [*laptop_sockets, phone_socket]:
        assert await cut_off(ws) == (1008, "revoked")
    for who in (laptop, phone):
        assert (await live.http.get("/devices", headers=who.auth)).status_code == 401


async def test_database_outage_is_survived_without_a_restart(target: Target) -> None:
    live = target.live
    admin = await live.register("admin")
    channel = await live.create_channel(admin)
    ws = await live.connect(admin)
    # Also a session this node has never verified: its handshake must reach the database.
    phone = await live.second_device(admin)
    frame = chat_frame(channel, "b3V0YWdl")

    await target.cut_database()
    try:
        # First, while this node still remembers the session: the history fast path
        # meets the outage and hands the request to Litestar, which answers 503.
        history = await live.http.get(
            f"/channels/messages?channel_id={channel}&limit=5", headers=admin.auth
        )
        assert history.status_code == 503, history.text
        assert history.json()["code"] == "unavailable"
        for _ in range(2):
            response = await live.http.get("/channels", headers=admin.auth)
            assert response.status_code == 503, response.text
            # The database timeout answered, not the request deadline (no clock needed).
            assert response.json()["error"] == "database unavailable, try again shortly"
            assert response.headers["retry-after"]
        await ws.send(frame)
        assert (await next_of(ws, "error"))["code"] == "server_error"
        # A new socket is refused with 503 before the upgrade, not left hanging: for a
        # session the node verified before the outage and for one it never saw.
        for who in (admin, phone):
            with pytest.raises(InvalidStatus) as refused:
                await live.connect_raw(who)
            assert refused.value.response.status_code == 503
        assert ws.state.name == "OPEN"
    finally:
        await target.restore_database()

    # Same process, same socket: service resumes by itself.
    deadline = time.monotonic() + 60  # generous: only a server that never recovers fails
    status = 0
    while time.monotonic() < deadline:
        status = (await live.http.get("/channels", headers=admin.auth)).status_code
        if status == 200:
            break
        await asyncio.sleep(0.2)
    assert status == 200, "the server did not recover"
    await ws.send(frame)
    assert (await next_of(ws, "channel.message.new"))["body"] == "b3V0YWdl"
    history = await live.http.get(
        "/channels/messages", params={"channel_id": channel}, headers=admin.auth
    )
    assert [m["body"] for m in history.json()["messages"]] == ["b3V0YWdl"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_open_sockets_count_against_the_per_address_cap(tmp_path: Path, db_url: str) -> None:
    """One address may hold only so many requests and sockets at once (3 here); the
    next handshake gets a 429 before the upgrade, other addresses are unaffected, and
    closing a socket frees its place."""
    settings = make_settings(tmp_path, db_url, rate_limits=True, max_connections_per_address=3)
    async with running_server(settings) as live:
        member = await live.register("holder")
        sockets = [await live.connect(member) for _ in range(3)]
        with pytest.raises(InvalidStatus) as refused:
            await live.connect_raw(member)
        response = refused.value.response
        assert response.status_code == 429
        assert response.headers["Retry-After"]
        assert json.loads(response.body)["code"] == "rate_limited"
        busy = await live.http.get("/devices", headers=member.auth)
        assert busy.status_code == 429
        target = Target(live, settings, None)
        async with target.client_from("127.0.0.7") as elsewhere:
            assert (await elsewhere.get("/devices", headers=member.auth)).status_code == 200

        await sockets[0].close()
        for _ in range(50):
            if (await live.http.get("/health")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert (await live.http.get("/devices", headers=member.auth)).status_code == 200
        await live.connect(member)
