"""Blocks across two server processes (one PostgreSQL, one Redis): a block made on one
node holds on the other for sockets already open and for sockets opened later."""

from __future__ import annotations

import json

import pytest

from tests.realtime.conftest import chat_frame, next_of
from tests.realtime.test_multinode import Node, greeted

# The two-node fixtures, re-exported for this module.
from tests.realtime.test_multinode import nodes as nodes
from tests.realtime.test_multinode import shared_db as shared_db

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_a_block_holds_on_every_node(nodes: tuple[Node, Node]) -> None:
    node_a, node_b = nodes
    admin = await node_a.register("admin")
    alice = await node_a.register("alice")
    bob = await node_b.register("bob")
    carol = await node_a.register("carol")
    created = await node_a.http.post("/channels", json={"name_enc": "bmFtZQ=="}, headers=admin.auth)
    channel = created.json()["channel"]["id"]

    alice_a = await greeted(node_a.ws_url, alice)
    carol_a = await greeted(node_a.ws_url, carol)
    bob_b = await greeted(node_b.ws_url, bob)
    opened = [alice_a, carol_a, bob_b]
    try:
        for ws in opened:
            await next_of(ws, "server.hello")
        # Alice blocks bob through node B; her socket is on node A.
        blocked = await node_b.http.post(
            "/users/blocks", json={"user_id": bob.user_id}, headers=alice.auth
        )
        assert blocked.status_code == 201, blocked.text
        # And a socket of hers opened on B after the block loads it there.
        alice_b = await greeted(node_b.ws_url, alice)
        opened.append(alice_b)
        await next_of(alice_b, "server.hello")

        await bob_b.send(chat_frame(channel, "c3BhbQ=="))
        spam = await next_of(carol_a, "channel.message.new")
        assert spam["sender"] == bob.user_id
        await carol_a.send(chat_frame(channel, "aGk="))
        for ws in (alice_a, alice_b):
            got = await next_of(ws, "channel.message.new", within=15)
            assert got["sender"] == carol.user_id, "bob's message was skipped on both nodes"

        # Voice signalling from B to A is dropped for alice, not for carol.
        for ws in (alice_a, carol_a, bob_b):
            await ws.send(json.dumps({"type": "voice_join", "channel_id": channel}))
            await next_of(ws, "voice_roster", within=15)
        offer = {"type": "webrtc_offer", "channel_id": channel, "sdp": "v=0"}
        await bob_b.send(json.dumps({**offer, "recipient": alice.user_id}))
        await bob_b.send(json.dumps({**offer, "recipient": carol.user_id}))
        assert (await next_of(carol_a, "webrtc_offer", within=15))["sender"] == bob.user_id
        await carol_a.send(json.dumps({**offer, "recipient": alice.user_id}))
        assert (await next_of(alice_a, "webrtc_offer", within=15))["sender"] == carol.user_id

        # Lifted through node A: both of alice's sockets get bob's next message.
        lifted = await node_a.http.delete(
            f"/users/blocks?user_id={bob.user_id}", headers=alice.auth
        )
        assert lifted.status_code == 204
        await bob_b.send(chat_frame(channel, "YmFjaw=="))
        for ws in (alice_a, alice_b):
            got = await next_of(ws, "channel.message.new", within=15)
            assert got["sender"] == bob.user_id
        await bob_b.send(json.dumps({**offer, "recipient": alice.user_id}))
        assert (await next_of(alice_a, "webrtc_offer", within=15))["sender"] == bob.user_id
    finally:
        for ws in opened:
            await ws.close()
