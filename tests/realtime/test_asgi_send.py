"""Delivery through plain ASGI ``send``: what the removed direct-write path used to
guarantee still holds. Ordering and the 1013 slow-consumer close are covered in
test_reliability and test_fanout_paths; here, the drain timeout, which used to abort
the transport and now ends the socket's ASGI task (ASGI has no abort)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from websockets.asyncio.client import connect

from dialtone.config import Settings
from dialtone.realtime.hub import CLOSE_TRY_AGAIN, Hub
from tests.realtime.conftest import running_server, with_settings

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def test_a_socket_that_cannot_drain_is_dropped_and_forgotten(
    settings: Settings, tmp_path: Any
) -> None:
    async with running_server(with_settings(settings, ws_send_queue=10_000)) as live:
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
