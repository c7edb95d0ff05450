"""Delivery through plain ASGI ``send``, the path the hub takes when the server is not
Dialtone's own WebSocket protocol: here uvicorn's stock websockets-sansio protocol
(``STOCK``). Ordering and the 1013 slow-consumer close are covered in test_reliability
and test_fanout_paths (through Dialtone's protocol); here, the drain timeout, which
ends the socket's ASGI task (ASGI has no abort), and the inline sends."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from websockets.asyncio.client import connect

from dialtone.config import Settings
from dialtone.realtime.hub import CLOSE_TRY_AGAIN, Hub
from tests.realtime.conftest import chat_frame, next_of, running_server, with_settings

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

STOCK = {"ws": "websockets-sansio"}


async def test_a_socket_that_cannot_drain_is_dropped_and_forgotten(
    settings: Settings, tmp_path: Any
) -> None:
    async with running_server(with_settings(settings, ws_send_queue=10_000), **STOCK) as live:
        await live.register("admin")
        stuck = await live.register("stuck")
        # A client that stops reading: a tiny receive buffer, one message of queue.
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
            additional_headers={"Authorization": f"Bearer {stuck.token}"},
        )
        live.sockets.append(ws)
        hub: Hub = live.server.config.app.state.hub
        conn = next(c for c in hub.conns.values() if c.user_id == stuck.user_id)
        event = '{"type":"filler","pad":"' + "x" * 60_000 + '"}'
        for _ in range(300):  # ~18 MB: far more than the socket buffers hold
            conn.push(event)
        # Let the writer fill the transport until uvicorn's send waits for it to drain.
        for _ in range(200):
            await asyncio.sleep(0.01)
            if conn.queued < 300 and conn.writing:
                break
        conn.close(CLOSE_TRY_AGAIN, "slow_consumer", drain_timeout=0.2)
        for _ in range(500):
            if conn.id not in hub.conns:
                break
            await asyncio.sleep(0.02)
        # The hub gave up on it: no writer, nothing queued, the socket's task ended.
        assert conn.id not in hub.conns
        assert not conn.writing
        assert conn.queued == 0
        # The server is fine: a new socket of the same user works.
        fresh = await live.connect(stuck)
        assert fresh.state.name == "OPEN"


async def test_a_paused_socket_does_not_hold_back_the_others_and_loses_nothing(
    settings: Settings, tmp_path: Any
) -> None:
    """Events go out inline while a socket's transport takes them; a socket whose
    transport is paused gets a writer task of its own, the others keep being sent to
    inline, and the paused one receives everything, in order, once its reader resumes."""
    async with running_server(with_settings(settings, ws_send_queue=10_000), **STOCK) as live:
        admin = await live.register("admin")
        channel = await live.create_channel(admin)
        stuck_member = await live.register("stuck")
        sender = await live.connect(admin)
        others = [await live.connect(admin) for _ in range(3)]
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
        hub: Hub = live.server.config.app.state.hub
        conn = next(c for c in hub.conns.values() if c.user_id == stuck_member.user_id)
        # Inline sends fill the transport until it pauses: the send that has to wait is
        # the first one handed to a writer task (no sleep: pausing happens in the write).
        filler = '{"type":"filler","pad":"' + "x" * 60_000 + '"}'
        fillers = 0
        while not conn.writing:
            conn.push(filler)
            fillers += 1
            assert fillers < 2_000, "the transport never paused"
        assert fillers > 1, "the first events went out inline, without a writer task"
        # Meanwhile the others are served at once, in order, by no task of their own.
        bodies = [f"bXNn{i}" for i in range(20)]
        for body in bodies:
            await sender.send(chat_frame(channel, body))
        for ws in others:
            got = [(await next_of(ws, "channel.message.new"))["body"] for _ in bodies]
            assert got == bodies
        assert conn.writing, "the paused socket still waits for its reader"
        assert conn.queued > 0
        assert not any(c.writing for c in hub.conns.values() if c is not conn)
        # The reader resumes: every filler, then every message in order, nothing lost.
        seen_fillers = 0
        got = []
        while len(got) < len(bodies):
            event = json.loads(await asyncio.wait_for(stuck.recv(), 30))
            if event["type"] == "filler":
                assert not got, "a filler after a message: out of order"
                seen_fillers += 1
            elif event["type"] == "channel.message.new":
                got.append(event["body"])
        assert seen_fillers == fillers
        assert got == bodies
        await asyncio.wait_for(conn.drained(), 30)
        assert not conn.writing
        assert conn.queued == 0
