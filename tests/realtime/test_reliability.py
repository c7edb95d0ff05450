"""Backpressure, revocation, liveness, shutdown and per-connection rate limits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from dialtone.config import Settings
from dialtone.realtime.hub import Hub
from dialtone.schemas.events import DeviceRevoked
from tests.conftest import Member
from tests.realtime.conftest import (
    LiveServer,
    bring_back,
    chat_frame,
    closed_with,
    move_away,
    next_of,
    only,
    quiet,
    recv,
    running_server,
    with_settings,
)

# Voice routing, backpressure and liveness do not depend on the database engine: SQLite only.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hub_of(live: LiveServer) -> Hub:
    hub: Hub = live.server.config.app.state.hub
    return hub


async def test_slow_consumer_is_closed_with_1013_and_loses_nothing_before(
    settings: Settings, tmp_path: Any
) -> None:
    async with running_server(with_settings(settings, ws_send_queue=8)) as live:
        admin = await live.register("admin")
        channel = await live.create_channel(admin)
        reader_member = await live.register("slowpoke")
        sender = await live.connect(admin)

        # A client that stops reading: a tiny receive buffer and no recv() calls.
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", live.port))
        raw.setblocking(False)
        slow = await connect(
            live.ws_url,
            sock=raw,
            max_queue=1,
            open_timeout=5,
            additional_headers={"Authorization": f"Bearer {reader_member.token}"},
        )
        live.sockets.append(slow)
        hub = hub_of(live)
        body = base64.b64encode(os.urandom(6000)).decode()
        sent = 0
        while sent < 600:
            await sender.send(chat_frame(channel, body))
            await next_of(sender, "channel.message.new")
            sent += 1
            if not any(
                c.user_id == reader_member.user_id and c.closing is None for c in hub.conns.values()
            ):
                break
        assert sent < 600, "the slow reader was never cut off"

        code, reason, seen = await closed_with(slow)
        assert (code, reason) == (1013, "slow_consumer")
        received = [e["message_id"] for e in seen if e["type"] == "channel.message.new"]
        history = await live.http.get(
            "/channels/messages",
            params={"channel_id": channel, "limit": 500},
            headers=admin.auth,
        )
        stored = [m["id"] for m in history.json()["messages"]]
        assert len(stored) == sent
        assert received, "the slow reader got what was queued before the close"
        assert received == stored[: len(received)], "a prefix in order, no gaps"
        # The sender was never held back by the slow reader.
        assert sender.state.name == "OPEN"


async def test_logout_closes_that_sessions_sockets_with_1008(
    live: LiveServer, member: Member
) -> None:
    phone_member = await live.second_device(member)
    laptop = await live.connect(member)
    phone = await live.connect(phone_member)
    response = await live.http.post("/auth/logout", headers=phone_member.auth)
    assert response.status_code == 200
    code, reason, _ = await closed_with(phone)
    assert (code, reason) == (1008, "revoked")
    assert await quiet(laptop) == [] or laptop.state.name == "OPEN"
    assert laptop.state.name == "OPEN"

    response = await live.http.post("/auth/logout", params={"all": "1"}, headers=member.auth)
    assert response.status_code == 200
    code, reason, _ = await closed_with(laptop)
    assert (code, reason) == (1008, "revoked")


async def test_device_revoked_closes_that_device_and_tells_the_others(
    live: LiveServer, admin: Member, member: Member
) -> None:
    lost_member = await live.second_device(member)
    kept = await live.connect(member)
    lost = await live.connect(lost_member)
    bystander = await live.connect(admin)
    await quiet(kept, 0.2)
    await quiet(bystander, 0.2)
    await hub_of(live).publish(
        [DeviceRevoked(sender=member.user_id, device_id=lost_member.device_id)]
    )
    code, reason, _ = await closed_with(lost)
    assert (code, reason) == (1008, "revoked")
    assert await next_of(kept, "device.revoked") == {
        "type": "device.revoked",
        "sender": member.user_id,
        "device_id": lost_member.device_id,
    }
    assert await quiet(bystander) == []


async def test_peer_that_stops_answering_pings_is_dropped(
    settings: Settings, tmp_path: Any
) -> None:
    # 1 s: short for the test, long enough that a loaded machine still answers in time.
    async with running_server(with_settings(settings, ws_ping_interval=1.0)) as live:
        member = await live.register("pingless")
        healthy_member = await live.register("healthy")
        healthy = await live.connect(healthy_member)
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {member.token}\r\n\r\n"
            ).encode()
        )
        status = await reader.readline()
        assert b" 101 " in status

        async def online(user_id: str) -> bool:
            response = await live.http.post(
                "/presence", json={"user_ids": [user_id]}, headers=healthy_member.auth
            )
            value: bool = response.json()["statuses"][user_id]
            return value

        assert await online(member.user_id)
        deadline = asyncio.get_running_loop().time() + 60  # generous: only a bug fails
        while asyncio.get_running_loop().time() < deadline:
            if not await online(member.user_id):
                break
            await asyncio.sleep(0.1)
        assert not await online(member.user_id), "a silent peer is dropped"
        # The answering client survived several ping rounds.
        assert await online(healthy_member.user_id)
        assert healthy.state.name == "OPEN"
        writer.close()


async def test_shutdown_sends_1001_and_empties_voice_rooms(
    settings: Settings, tmp_path: Any
) -> None:
    async with running_server(settings) as live:
        admin = await live.register("admin")
        member = await live.register("bob")
        channel = await live.create_channel(admin)
        alice = await live.connect(admin)
        bob = await live.connect(member)
        for ws in (alice, bob):
            await ws.send(json.dumps({"type": "voice_join", "channel_id": channel}))
            await next_of(ws, "voice_roster")
        hub = hub_of(live)
        assert hub.voice.snapshot() == {channel: sorted([admin.user_id, member.user_id])}
        live.server.should_exit = True
        for ws in (alice, bob):
            code, _, _ = await closed_with(ws)
            assert code == 1001
        assert hub.voice.snapshot() == {}


async def test_rate_limits_trip_recover_and_close_floods(
    settings: Settings, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dialtone.realtime")
    # Accounts are made with limits off; the socket limits are checked on a second server.
    async with running_server(settings) as setup:
        admin = await setup.register("admin")
        member = await setup.register("bob")
        channel = await setup.create_channel(admin)
    async with running_server(with_settings(settings, rate_limits=True)) as live:
        # The buckets' clock stands still unless the test moves it: a slow machine
        # refills nothing between two frames.
        clock = ManualClock()
        live.server.config.app.state.gateway.frame_clock = clock  # type: ignore[attr-defined]
        ws = await live.connect(member)

        for i in range(11):
            await ws.send(chat_frame(channel, f"m{i}"))
        events = []
        while len(only(events, "channel.message.new", "error")) < 11:
            events.append(await recv(ws))
        events = only(events, "channel.message.new", "error")  # not e.g. presence
        kinds = [e["type"] for e in events]
        assert kinds.count("channel.message.new") == 10
        errors = [e for e in events if e["type"] == "error"]
        assert [e["code"] for e in errors] == ["rate_limited"]

        clock.now += 0.2  # 5 per second: a token is back
        await ws.send(chat_frame(channel, "m99"))
        assert (await next_of(ws, "channel.message.new"))["body"] == "m99"

        # Signalling frames: burst of 50 (here answered with voice_not_joined), then limited.
        leave = json.dumps({"type": "voice_leave", "channel_id": channel})
        for _ in range(50):
            await ws.send(leave)
        codes = [(await next_of(ws, "error"))["code"] for _ in range(50)]
        assert set(codes) == {"voice_not_joined"}
        await ws.send(leave)
        assert (await next_of(ws, "error"))["code"] == "rate_limited"

        # Keep flooding: the connection is closed with 1008.
        with contextlib.suppress(ConnectionClosed):
            for _ in range(200):
                await ws.send(leave)
        code, reason, _ = await closed_with(ws)
        assert (code, reason) == (1008, "rate_limited")
        # Security events: one line per episode of refusals and one for the close.
        limited = [
            (r.policy, r.user_id, r.device_id)  # type: ignore[attr-defined]
            for r in caplog.records
            if getattr(r, "event", None) == "rate_limited"
        ]
        who = (member.user_id, member.device_id)
        assert limited == [("ws_chat", *who), ("ws_signal", *who), ("ws_flood", *who)]


async def test_socket_closes_when_its_session_expires(settings: Settings, tmp_path: Any) -> None:
    async with running_server(with_settings(settings, session_ttl=2)) as live:
        member = await live.register("shortlived")
        ws = await live.connect(member)
        code, reason, _ = await closed_with(ws)
        assert (code, reason) == (1008, "session_expired")


# Disposing the engine under a live server orphans any connection a background task
# (the server log's writer, the bans refresher) has checked out at that instant: SQLAlchemy
# returns it to the old pool, and aiosqlite warns when that pool is collected. Production
# never disposes the engine under load; the test collects its own orphans while the
# server still runs, so the warning cannot surface in (and fail) whichever test runs next.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_database_fault_gives_server_error_and_the_socket_recovers(
    settings: Settings, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await _database_fault_and_recovery(settings, caplog)


async def _database_fault_and_recovery(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(settings) as live:
        admin = await live.register("admin")
        channel = await live.create_channel(admin)
        ws = await live.connect(admin)
        engine = live.server.config.app.state.engine
        db_file = settings.db_url.split(":///", 1)[1]
        secret_body = "c2VjcmV0LWNpcGhlcnRleHQ="

        def frame() -> str:
            return chat_frame(channel, secret_body)

        # The database files vanish under the server (a new, empty one appears).
        await engine.dispose()
        parts = [Path(db_file + suffix) for suffix in ("", "-wal", "-shm")]
        move_away(parts)
        try:
            await ws.send(frame())
            error = await next_of(ws, "error")
            assert error["code"] == "server_error"
            assert secret_body not in caplog.text
        finally:
            await engine.dispose()
            bring_back(parts)
        # Back: the same socket works again, no restart.
        await ws.send(frame())
        assert (await next_of(ws, "channel.message.new"))["body"] == secret_body
        # While the loop still runs, so their threads can finish closing them.
        gc.collect()


async def test_binary_frames_count_against_the_limits(settings: Settings, tmp_path: Any) -> None:
    async with running_server(settings) as setup:
        member = await setup.register("binary")
    limited = with_settings(settings, rate_limits=True, ws_signal_burst=5, ws_signal_rate=1.0)
    async with running_server(limited) as live:
        # A standing clock: nothing refills between frames on a slow machine.
        live.server.config.app.state.gateway.frame_clock = ManualClock()  # type: ignore[attr-defined]
        ws = await live.connect(member)
        for _ in range(6):
            await ws.send(b"\x00\x01")
        codes = [(await next_of(ws, "error"))["code"] for _ in range(6)]
        assert codes == ["invalid_message"] * 5 + ["rate_limited"]
        with contextlib.suppress(ConnectionClosed):
            for _ in range(100):
                await ws.send(b"\x00\x01")
        code, reason, _ = await closed_with(ws)
        assert (code, reason) == (1008, "rate_limited")
