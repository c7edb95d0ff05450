"""kill -9 in the middle of a WebSocket message burst, on a real `dialtone serve`.

Every message a client saw acknowledged (its own `channel.message.new`, which the
server sends only after the commit) must be in history after a restart on the same
database: byte for byte, once, and in the order each channel had it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dialtone.config import normalise_db_url
from tests.conftest import ADMIN_TOKEN, PG_URL, _pg_admin
from tests.e2ee import DeviceKeys
from tests.realtime.conftest import chat_frame, next_of, recv
from tests.security.conftest import free_port, start_serve, wait_healthy

CLIENTS = 4
CHANNELS = 2
# Kill once this many messages are acknowledged (or after KILL_AFTER seconds).
KILL_AT = 200
KILL_AFTER = 3.0
# More than the server can store before the kill, so the kill always lands mid-burst.
FRAMES_PER_CLIENT = 5000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of this test's own; `dialtone serve` migrates it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}"
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests need DIALTONE_TEST_DATABASE_URL")
    base = normalise_db_url(PG_URL)
    name = f"dialtone_crash_{os.getpid()}_{secrets.token_hex(3)}"
    await _pg_admin(f'CREATE DATABASE "{name}"', base)
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', base)


@dataclass
class Writer:
    """One client: its account, its socket, and the messages it saw acknowledged."""

    index: int
    user_id: str
    token: str
    sent: list[tuple[str, str]] = field(default_factory=list)  # (channel, body), in order
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # message id → event
    seen: dict[str, list[str]] = field(default_factory=dict)  # channel → ids, as delivered


async def register(http: httpx.AsyncClient, name: str) -> tuple[str, str]:
    invite = await http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})
    response = await http.post(
        "/auth/register",
        json={
            "username": name,
            "password": "password1",
            "public_key": DeviceKeys().public_b64,
            "invite_token": invite.json()["token"],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["user_id"], body["token"]


async def history(http: httpx.AsyncClient, token: str, channel: str) -> list[dict[str, Any]]:
    """The whole channel, oldest first, read newest-first in pages of 50 with `before`."""
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"channel_id": channel, "limit": 50}
    while True:
        response = await http.get(
            "/channels/messages", params=params, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.text
        page = response.json()["messages"]
        if not page:
            break
        pages.append(page)
        params["before"] = page[0]["id"]
    return [message for page in reversed(pages) for message in page]


async def burst(ws: ClientConnection, writer: Writer, channels: list[str]) -> None:
    """Send as fast as the socket takes frames; never wait for an answer."""
    with contextlib.suppress(ConnectionClosed, OSError):
        for seq in range(FRAMES_PER_CLIENT):
            channel = channels[(writer.index + seq) % len(channels)]
            # Random bytes, so a changed byte anywhere would show.
            body = base64.b64encode(f"{writer.index}:{seq}:".encode() + os.urandom(48)).decode()
            writer.sent.append((channel, body))
            await ws.send(
                json.dumps(
                    {
                        "type": "channel.message.send",
                        "channel_id": channel,
                        "body": body,
                        "sender_name_enc": f"c2VuZGVy{writer.index}",
                    }
                )
            )


async def listen(ws: ClientConnection, writer: Writer, progress: asyncio.Event) -> None:
    with contextlib.suppress(ConnectionClosed, OSError):
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] == "error":
                raise AssertionError(f"the server refused a frame: {event}")
            if event["type"] != "channel.message.new":
                continue
            writer.seen.setdefault(event["channel_id"], []).append(event["message_id"])
            if event["sender"] == writer.user_id:
                writer.acked[event["message_id"]] = event
                progress.set()


async def test_kill_9_mid_burst_loses_no_acknowledged_message(
    tmp_path: Path, fresh_db: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(tmp_path, fresh_db, port)
    writers: list[Writer] = []
    channels: list[str] = []
    try:
        await wait_healthy(url, proc)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for i in range(CLIENTS):
                user_id, token = await register(http, f"writer{i}")
                writers.append(Writer(i, user_id, token))
            for _ in range(CHANNELS):
                response = await http.post(
                    "/channels",
                    json={"name_enc": "Y2hhbm5lbA=="},
                    headers={"Authorization": f"Bearer {writers[0].token}"},
                )
                assert response.status_code == 201, response.text
                channels.append(response.json()["channel"]["id"])

        sockets = []
        for writer in writers:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws",
                additional_headers={"Authorization": f"Bearer {writer.token}"},
                open_timeout=5,
                max_queue=None,
            )
            await recv(ws)  # voice.presence.snapshot
            sockets.append(ws)

        progress = asyncio.Event()
        listeners = [
            asyncio.create_task(listen(ws, w, progress))
            for ws, w in zip(sockets, writers, strict=True)
        ]
        senders = [
            asyncio.create_task(burst(ws, w, channels))
            for ws, w in zip(sockets, writers, strict=True)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KILL_AFTER
        while sum(len(w.acked) for w in writers) < KILL_AT and loop.time() < deadline:
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), max(0.01, deadline - loop.time()))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await asyncio.wait_for(asyncio.gather(*senders, *listeners), 20)
        for ws in sockets:
            await ws.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    acked = {mid: event for w in writers for mid, event in w.acked.items()}
    sent = sum(len(w.sent) for w in writers)
    assert len(acked) >= 20, "too few messages were acknowledged before the kill"
    assert len(acked) < sent, "the kill came after the burst ended: it cut nothing"

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(tmp_path, fresh_db, port)
    try:
        await wait_healthy(url, proc)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            stored = {c: await history(http, writers[0].token, c) for c in channels}
    finally:
        proc.kill()
        proc.wait(10)

    by_id = {m["id"]: m for messages in stored.values() for m in messages}
    ids = [m["id"] for messages in stored.values() for m in messages]
    assert len(ids) == len(set(ids)), "a message is stored twice"
    bodies = [m["body"] for m in by_id.values()]
    assert len(bodies) == len(set(bodies)), "a frame was stored twice"

    # Every acknowledged message survived, byte for byte.
    missing = set(acked) - set(by_id)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages were lost"
    for mid, event in acked.items():
        message = by_id[mid]
        for key in ("channel_id", "body", "sender_name_enc", "sent_at"):
            assert message[key] == event[key], (mid, key)
        assert message["sender_id"] == event["sender"]

    # Nothing stored that was never sent, and every sender's messages keep its order.
    sent_bodies = {body: (w.index, n) for w in writers for n, (_, body) in enumerate(w.sent)}
    for channel, messages in stored.items():
        positions = [m["id"] for m in messages]
        for writer in writers:
            mine = [sent_bodies[m["body"]] for m in messages if m["sender_id"] == writer.user_id]
            assert all(index == writer.index for index, _ in mine)
            order = [n for _, n in mine]
            assert order == sorted(order), "a sender's messages were stored out of order"
            assert all(writer.sent[n][0] == channel for n in order)
            # What each client saw delivered is history's order, with nothing skipped.
            delivered = writer.seen.get(channel, [])
            if delivered:
                start = positions.index(delivered[0])
                assert positions[start : start + len(delivered)] == delivered


async def test_websocket_limit_override_end_to_end(tmp_path: Path) -> None:
    """DIALTONE_WS_CHAT_BURST / _RATE given to `dialtone serve` shape its chat bucket."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(
        tmp_path,
        f"sqlite:///{tmp_path / 'limits.db'}",
        port,
        DIALTONE_RATE_LIMITS="on",
        DIALTONE_WS_CHAT_BURST="3",
        # One token per 1000 s: nothing refills while the test runs, however slowly.
        DIALTONE_WS_CHAT_RATE="0.001",
    )
    try:
        await wait_healthy(url, proc)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            _, token = await register(http, "limited")
            response = await http.post(
                "/channels",
                json={"name_enc": "Y2hhbm5lbA=="},
                headers={"Authorization": f"Bearer {token}"},
            )
            channel = response.json()["channel"]["id"]
        async with connect(
            f"ws://127.0.0.1:{port}/ws",
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=5,
        ) as ws:
            await recv(ws)  # voice.presence.snapshot
            assert (await recv(ws))["type"] == "server.hello"

            for i in range(5):
                await ws.send(chat_frame(channel, f"bTx{i}"))
            kinds: list[str] = []
            while len(kinds) < 5:  # the answers to those frames, not other events
                kind = (await recv(ws))["type"]
                if kind in ("channel.message.new", "error"):
                    kinds.append(kind)
            # A burst of 3 (not the default 10), then refused.
            assert kinds.count("channel.message.new") == 3
            assert kinds.count("error") == 2
            # Refilling is tested in-process on an injected clock (test_reliability).
            await ws.send(chat_frame(channel, "bTx10"))
            assert (await next_of(ws, "error"))["code"] == "rate_limited"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
