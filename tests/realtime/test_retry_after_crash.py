"""Issue 20: a server process killed (-9) or stopped (SIGTERM) with messages in flight;
the client resends everything with the same ``client_message_id``s to the restarted
server, and nothing is stored twice. On SIGTERM, every message stored was acknowledged
before the socket was closed with 1001."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Member
from tests.realtime.test_multinode import Node

COUNT = 10


def frame(channel: str, n: int) -> str:
    return json.dumps(
        {
            "type": "channel.message.send",
            "channel_id": channel,
            "body": f"bXNn{n}",
            "sender_name_enc": "bg==",
            "client_message_id": f"m{n}",
        }
    )


async def open_socket(node: Node, member: Member) -> ClientConnection:
    return await connect(
        node.ws_url, additional_headers={"Authorization": f"Bearer {member.token}"}
    )


async def stored(node: Node, member: Member, channel: str) -> list[dict[str, Any]]:
    response = await node.http.get(
        "/channels/messages", params={"channel_id": channel, "limit": 500}, headers=member.auth
    )
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


@pytest.mark.parametrize("stop", ["sigkill", "sigterm"])
async def test_resending_after_a_crash_stores_nothing_twice(
    db_url: str, tmp_path: Path, stop: str
) -> None:
    data = tmp_path / "node"
    node = Node(db_url, "unused:", data, redis_url="")
    await node.ready()
    alice = await node.register("alice")
    made = await node.http.post("/channels", json={"name_enc": "cm9vbQ=="}, headers=alice.auth)
    assert made.status_code == 201, made.text
    channel = made.json()["channel"]["id"]

    ws = await open_socket(node, alice)
    for n in range(COUNT):
        await ws.send(frame(channel, n))
    if stop == "sigkill":
        node.proc.kill()
    else:
        node.proc.terminate()
    acked: dict[str, str] = {}
    try:
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] == "channel.message.new":
                acked[event["client_message_id"]] = event["message_id"]
    except ConnectionClosed:
        pass
    if stop == "sigterm":
        assert ws.close_code == 1001, (ws.close_code, ws.close_reason)
    await node.stop()

    node = Node(db_url, "unused:", data, redis_url="")
    try:
        await node.ready()
        before = await stored(node, alice, channel)
        held = {m["client_message_id"]: m["id"] for m in before}
        # What was acknowledged was stored (and is what was acknowledged).
        assert {k: held[k] for k in acked} == acked
        if stop == "sigterm":
            # Flushed and answered before the 1001: nothing stored unacknowledged.
            assert held == acked
        # The client resends everything it sent (it cannot know what was stored).
        ws = await open_socket(node, alice)
        for n in range(COUNT):
            await ws.send(frame(channel, n))
        answers: dict[str, str] = {}
        while len(answers) < COUNT:
            event = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert event["type"] != "error", event
            if event["type"] == "channel.message.new":
                answers[event["client_message_id"]] = event["message_id"]
        await ws.close()
        for client_id, message_id in held.items():
            assert answers[client_id] == message_id  # the stored one, not a new one
        after = await stored(node, alice, channel)
        sent = sorted(f"m{n}" for n in range(COUNT))
        assert sorted(m["client_message_id"] for m in after) == sent
        assert [m["seq"] for m in after] == list(range(1, COUNT + 1))
    finally:
        await node.stop()
