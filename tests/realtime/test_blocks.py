"""Blocks on one node: the blocker's sockets get neither the blocked user's messages nor
their voice signalling; lifting the block restores both. Direct rooms are announced.

Each "nothing arrived" is shown by ordering, not by waiting: after the blocked user's
frame, a third user sends one that every socket must get, and the blocker's next event
of that type is the third user's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from tests.conftest import Member
from tests.realtime.conftest import LiveServer, chat_frame, next_of

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def block(live: LiveServer, blocker: Member, blocked: Member) -> None:
    response = await live.http.post(
        "/users/blocks", json={"user_id": blocked.user_id}, headers=blocker.auth
    )
    assert response.status_code == 201, response.text


async def unblock(live: LiveServer, blocker: Member, blocked: Member) -> None:
    response = await live.http.delete(
        f"/users/blocks?user_id={blocked.user_id}", headers=blocker.auth
    )
    assert response.status_code == 204, response.text


async def test_blocked_senders_messages_do_not_reach_the_blocker(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    alice, bob = member, await live.register("pest")
    carol = await live.register("carol")
    alice_ws = await live.connect(alice)
    alice_phone = await live.connect(await live.second_device(alice))
    bob_ws = await live.connect(bob)
    carol_ws = await live.connect(carol)
    await block(live, alice, bob)

    await bob_ws.send(chat_frame(channel, "c3BhbQ=="))
    spam = await next_of(bob_ws, "channel.message.new")  # the sender's own echo
    assert spam["body"] == "c3BhbQ=="
    assert (await next_of(carol_ws, "channel.message.new"))["message_id"] == spam["message_id"]
    await carol_ws.send(chat_frame(channel, "aGk="))
    for ws in (alice_ws, alice_phone):
        got = await next_of(ws, "channel.message.new")
        assert got["sender"] == carol.user_id, "the blocked user's message was skipped"
    # History still has everything (the page hides blocked senders itself).
    page = await live.http.get(f"/channels/messages?channel_id={channel}", headers=alice.auth)
    assert [m["sender_id"] for m in page.json()["messages"]] == [bob.user_id, carol.user_id]

    # A socket opened after the block loads it.
    late = await live.connect(alice)
    await bob_ws.send(chat_frame(channel, "bW9yZQ=="))
    await next_of(carol_ws, "channel.message.new")
    await carol_ws.send(chat_frame(channel, "YWdhaW4="))
    for ws in (alice_ws, alice_phone, late):
        assert (await next_of(ws, "channel.message.new"))["sender"] == carol.user_id

    # Lifted while online: bob's next message arrives.
    await unblock(live, alice, bob)
    await bob_ws.send(chat_frame(channel, "YmFjaw=="))
    for ws in (alice_ws, alice_phone, late):
        assert (await next_of(ws, "channel.message.new"))["sender"] == bob.user_id
    # The blocked user saw nothing of any of it.
    await carol_ws.send(chat_frame(channel, "ZW5k"))
    kinds = set()
    while (event := await next_of(bob_ws, "channel.message.new"))["body"] != "ZW5k":
        kinds.add(event["type"])
    assert kinds == {"channel.message.new"}


async def test_blocked_users_voice_signalling_does_not_reach_the_blocker(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    alice, bob = member, await live.register("pest")
    carol = await live.register("carol")
    sockets = {m.user_id: await live.connect(m) for m in (alice, bob, carol)}
    alice_ws, bob_ws, carol_ws = (
        sockets[alice.user_id],
        sockets[bob.user_id],
        sockets[carol.user_id],
    )
    for ws in (alice_ws, bob_ws, carol_ws):
        await send(ws, type="voice_join", channel_id=channel)
        await next_of(ws, "voice_roster")
    await block(live, alice, bob)

    signals = [
        {"type": "webrtc_offer", "sdp": "v=0 bob"},
        {"type": "webrtc_answer", "sdp": "v=0 bob"},
        {"type": "ice_candidate", "candidate": "candidate:bob"},
    ]
    for signal in signals:
        await send(bob_ws, channel_id=channel, recipient=alice.user_id, **signal)
        # The same to carol, after it on the same socket: once carol has hers, the one
        # to alice was handled.
        await send(bob_ws, channel_id=channel, recipient=carol.user_id, **signal)
        assert (await next_of(carol_ws, signal["type"]))["sender"] == bob.user_id
        await send(carol_ws, channel_id=channel, recipient=alice.user_id, **signal)
        assert (await next_of(alice_ws, signal["type"]))["sender"] == carol.user_id

    # The block is one way: alice's signalling reaches bob.
    await send(alice_ws, type="webrtc_offer", channel_id=channel, recipient=bob.user_id, sdp="a")
    assert (await next_of(bob_ws, "webrtc_offer"))["sender"] == alice.user_id

    await unblock(live, alice, bob)
    await send(bob_ws, type="webrtc_offer", channel_id=channel, recipient=alice.user_id, sdp="b")
    assert (await next_of(alice_ws, "webrtc_offer"))["sender"] == bob.user_id


async def test_a_new_direct_room_is_announced_to_both_members(
    live: LiveServer, admin: Member, member: Member
) -> None:
    alice, bob = member, await live.register("carol")
    alice_ws = await live.connect(alice)
    bob_ws = await live.connect(bob)
    made = await live.http.post(
        "/channels/direct", json={"user_id": bob.user_id}, headers=alice.auth
    )
    assert made.status_code == 201, made.text
    channel = made.json()["channel"]
    for ws in (alice_ws, bob_ws):
        created = await next_of(ws, "channel.created")
        assert created == {
            "type": "channel.created",
            "channel": {**channel, "role": None, "peer_user_id": None},
            "members": sorted(
                [
                    {"user_id": alice.user_id, "role": "owner"},
                    {"user_id": bob.user_id, "role": "owner"},
                ],
                key=lambda m: m["user_id"],
            ),
        }
        assert await next_of(ws, "channel.updated") == {
            "type": "channel.updated",
            "channel_id": channel["id"],
            "channel_name_enc": "",
            "key_commitment": None,
            "key_version": 1,
            "private": True,
            "direct": True,
            "image_file_id": None,
        }
    # Opening it again announces nothing: the members already know it.
    again = await live.http.post(
        "/channels/direct", json={"user_id": alice.user_id}, headers=bob.auth
    )
    assert again.status_code == 200
    await alice_ws.send(chat_frame(channel["id"], "aGk="))
    assert (await next_of(bob_ws, "channel.message.new"))["channel_id"] == channel["id"]


async def test_a_handshake_whose_blocks_cannot_be_read_is_refused_with_503(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    gateway = live.server.config.app.state.gateway  # type: ignore[attr-defined]
    hub = live.server.config.app.state.hub  # type: ignore[attr-defined]

    async def database_down(user_id: str) -> set[str]:
        raise ConnectionError("database down")

    gateway._blocked_ids = database_down
    try:
        with pytest.raises(InvalidStatus) as handshake:
            await live.connect_raw(member)
    finally:
        del gateway._blocked_ids
    assert handshake.value.response.status_code == 503
    assert json.loads(handshake.value.response.body or b"{}")["code"] == "unavailable"
    assert not hub.blocks._entries, "a refused socket holds nothing"
    # The next attempt reads the blocks and is filtered as usual.
    pest = await live.register("pest")
    await block(live, member, pest)
    ws = await live.connect(member)
    assert hub.blocks.blocked_by == {pest.user_id: {member.user_id}}
    await ws.close()
