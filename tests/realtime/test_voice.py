"""Voice rooms and the WebRTC relay, exactly as existing clients expect them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from dialtone.config import Settings
from tests.conftest import Member
from tests.realtime.conftest import LiveServer, next_of, only, quiet, recv, running_server

# Voice routing, backpressure and liveness do not depend on the database engine: SQLite only.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def test_join_gives_roster_to_joiner_join_to_members_presence_to_all(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    alice = await live.connect(admin)
    bob = await live.connect(member)
    carol_member = await live.register()
    carol = await live.connect(carol_member)

    await send(alice, type="voice_join", channel_id=channel)
    assert await next_of(alice, "voice_roster") == {
        "type": "voice_roster",
        "channel_id": channel,
        "users": [admin.user_id],
    }
    presence = {
        "type": "voice.presence",
        "channel_id": channel,
        "sender": admin.user_id,
        "active": True,
    }
    for ws in (alice, bob, carol):
        assert await next_of(ws, "voice.presence") == presence

    await send(bob, type="voice_join", channel_id=channel)
    assert await next_of(bob, "voice_roster") == {
        "type": "voice_roster",
        "channel_id": channel,
        "users": sorted([admin.user_id, member.user_id]),
    }
    assert await next_of(alice, "voice_join") == {
        "type": "voice_join",
        "channel_id": channel,
        "sender": member.user_id,
    }
    # carol is not in the room: presence only, no voice_join.
    carol_events = await quiet(carol)
    assert only(carol_events, "voice_join") == []
    assert only(carol_events, "voice.presence") == [
        {"type": "voice.presence", "channel_id": channel, "sender": member.user_id, "active": True}
    ]
    bob_events = await quiet(bob)
    assert only(bob_events, "voice_join") == [], "the joiner is not told about itself"

    # A newcomer's snapshot shows the room.
    late = await live.connect_raw(await live.register())
    snapshot = await recv(late)
    assert snapshot == {
        "type": "voice.presence.snapshot",
        "voice_rooms": {channel: sorted([admin.user_id, member.user_id])},
    }


async def test_offers_go_only_to_the_recipient_in_the_room_with_sender_set(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    alice = await live.connect(admin)
    bob = await live.connect(member)
    eve_member = await live.register()
    eve = await live.connect(eve_member)
    bob_phone_member = await live.second_device(member)
    bob_phone = await live.connect(bob_phone_member)  # bob's other device, not in the room
    for ws in (alice, bob):
        await send(ws, type="voice_join", channel_id=channel)
        await next_of(ws, "voice_roster")
    await quiet(alice, 0.2)

    # eve is not in the room: she cannot signal and receives nothing.
    await send(eve, type="webrtc_offer", channel_id=channel, recipient=member.user_id, sdp="x")
    assert (await next_of(eve, "error"))["code"] == "voice_not_joined"

    await send(
        alice, type="webrtc_offer", channel_id=channel, recipient=member.user_id, sdp="v=0 offer"
    )
    assert await next_of(bob, "webrtc_offer") == {
        "type": "webrtc_offer",
        "channel_id": channel,
        "sender": admin.user_id,
        "recipient": member.user_id,
        "sdp": "v=0 offer",
    }
    await send(
        bob, type="webrtc_answer", channel_id=channel, recipient=admin.user_id, sdp="v=0 answer"
    )
    assert await next_of(alice, "webrtc_answer") == {
        "type": "webrtc_answer",
        "channel_id": channel,
        "sender": member.user_id,
        "recipient": admin.user_id,
        "sdp": "v=0 answer",
    }
    await send(
        alice,
        type="ice_candidate",
        channel_id=channel,
        recipient=member.user_id,
        candidate="candidate:1 1 UDP 1 10.0.0.1 5000 typ host",
    )
    assert await next_of(bob, "ice_candidate") == {
        "type": "ice_candidate",
        "channel_id": channel,
        "sender": admin.user_id,
        "recipient": member.user_id,
        "candidate": "candidate:1 1 UDP 1 10.0.0.1 5000 typ host",
    }
    # An offer addressed to someone outside the room goes nowhere; to oneself, not back.
    await send(
        alice, type="webrtc_offer", channel_id=channel, recipient=eve_member.user_id, sdp="leak?"
    )
    await send(alice, type="webrtc_offer", channel_id=channel, recipient=admin.user_id, sdp="echo?")
    signalling = ("webrtc_offer", "webrtc_answer", "ice_candidate")
    assert only(await quiet(eve), *signalling) == []
    assert only(await quiet(bob_phone), *signalling) == []
    assert only(await quiet(alice), *signalling) == []
    assert only(await quiet(bob), *signalling) == []


async def test_leave_switch_and_disconnect(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    other = await live.create_channel(admin)
    alice = await live.connect(admin)
    bob = await live.connect(member)
    for ws in (alice, bob):
        await send(ws, type="voice_join", channel_id=channel)
        await next_of(ws, "voice_roster")
    await quiet(alice, 0.2)
    await quiet(bob, 0.2)

    # Switching rooms leaves the first one, with its events.
    await send(bob, type="voice_join", channel_id=other)
    assert await next_of(alice, "voice_leave") == {
        "type": "voice_leave",
        "channel_id": channel,
        "sender": member.user_id,
    }
    events = await quiet(alice)
    assert only(events, "voice.presence") == [
        {
            "type": "voice.presence",
            "channel_id": channel,
            "sender": member.user_id,
            "active": False,
        },
        {"type": "voice.presence", "channel_id": other, "sender": member.user_id, "active": True},
    ]
    bob_events = await quiet(bob)
    assert only(bob_events, "voice_roster") == [
        {"type": "voice_roster", "channel_id": other, "users": [member.user_id]}
    ]
    # Bob can no longer signal in the old room.
    await send(bob, type="webrtc_offer", channel_id=channel, recipient=admin.user_id, sdp="x")
    assert (await next_of(bob, "error"))["code"] == "voice_not_joined"

    # voice_leave.
    await send(bob, type="voice_leave", channel_id=other)
    assert await next_of(alice, "voice.presence") == {
        "type": "voice.presence",
        "channel_id": other,
        "sender": member.user_id,
        "active": False,
    }
    # Disconnect leaves the room: bob (back in alice's room) drops his socket.
    await send(bob, type="voice_join", channel_id=channel)
    await next_of(alice, "voice_join")
    await quiet(alice, 0.2)
    await bob.close()
    assert await next_of(alice, "voice_leave") == {
        "type": "voice_leave",
        "channel_id": channel,
        "sender": member.user_id,
    }
    assert await next_of(alice, "voice.presence") == {
        "type": "voice.presence",
        "channel_id": channel,
        "sender": member.user_id,
        "active": False,
    }
    late = await live.connect_raw(await live.register())
    assert (await recv(late))["voice_rooms"] == {channel: [admin.user_id]}


async def test_deleting_a_channel_ends_its_voice_room(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    alice = await live.connect(admin)
    bob = await live.connect(member)
    for ws in (alice, bob):
        await send(ws, type="voice_join", channel_id=channel)
        await next_of(ws, "voice_roster")
    await quiet(alice, 0.2)
    response = await live.http.delete(
        "/channels", params={"channel_id": channel}, headers=admin.auth
    )
    assert response.status_code == 204
    events = await quiet(alice)
    assert events[0] == {"type": "channel.deleted", "channel_id": channel}
    assert {(e["sender"], e["active"]) for e in only(events, "voice.presence")} == {
        (admin.user_id, False),
        (member.user_id, False),
    }
    await send(alice, type="webrtc_offer", channel_id=channel, recipient=member.user_id, sdp="x")
    assert (await next_of(alice, "error"))["code"] == "voice_not_joined"
    late = await live.connect_raw(await live.register())
    assert (await recv(late))["voice_rooms"] == {}


async def test_scripted_two_user_session(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    """The "done when" script: chat, join voice, offer/answer/ICE, leave."""
    alice = await live.connect(admin)
    bob = await live.connect(member)
    assert await next_of(alice, "device.joined") == {
        "type": "device.joined",
        "sender": member.user_id,
        "device_id": member.device_id,
    }

    await send(
        alice,
        type="channel.message.send",
        channel_id=channel,
        body="aGVsbG8=",
        sender_name_enc="YWxpY2U=",
    )
    for ws in (alice, bob):
        message = await recv(ws)
        assert message["type"] == "channel.message.new"
        assert message["body"] == "aGVsbG8="

    await send(alice, type="voice_join", channel_id=channel)
    assert await recv(alice) == {
        "type": "voice_roster",
        "channel_id": channel,
        "users": [admin.user_id],
    }
    on = {"type": "voice.presence", "channel_id": channel, "sender": admin.user_id, "active": True}
    assert await recv(alice) == on
    assert await recv(bob) == on

    await send(bob, type="voice_join", channel_id=channel)
    assert await recv(bob) == {
        "type": "voice_roster",
        "channel_id": channel,
        "users": sorted([admin.user_id, member.user_id]),
    }
    assert await recv(alice) == {
        "type": "voice_join",
        "channel_id": channel,
        "sender": member.user_id,
    }
    bob_on = {
        "type": "voice.presence",
        "channel_id": channel,
        "sender": member.user_id,
        "active": True,
    }
    assert await recv(alice) == bob_on
    assert await recv(bob) == bob_on

    await send(bob, type="webrtc_offer", channel_id=channel, recipient=admin.user_id, sdp="o")
    assert await recv(alice) == {
        "type": "webrtc_offer",
        "channel_id": channel,
        "sender": member.user_id,
        "recipient": admin.user_id,
        "sdp": "o",
    }
    await send(alice, type="webrtc_answer", channel_id=channel, recipient=member.user_id, sdp="a")
    assert await recv(bob) == {
        "type": "webrtc_answer",
        "channel_id": channel,
        "sender": admin.user_id,
        "recipient": member.user_id,
        "sdp": "a",
    }
    await send(
        alice, type="ice_candidate", channel_id=channel, recipient=member.user_id, candidate="c1"
    )
    assert await recv(bob) == {
        "type": "ice_candidate",
        "channel_id": channel,
        "sender": admin.user_id,
        "recipient": member.user_id,
        "candidate": "c1",
    }
    await send(
        bob, type="ice_candidate", channel_id=channel, recipient=admin.user_id, candidate="c2"
    )
    assert (await recv(alice))["candidate"] == "c2"

    await send(bob, type="voice_leave", channel_id=channel)
    assert await recv(alice) == {
        "type": "voice_leave",
        "channel_id": channel,
        "sender": member.user_id,
    }
    off = {
        "type": "voice.presence",
        "channel_id": channel,
        "sender": member.user_id,
        "active": False,
    }
    assert await recv(alice) == off
    assert await recv(bob) == off
    await send(alice, type="voice_leave", channel_id=channel)
    alice_off = {
        "type": "voice.presence",
        "channel_id": channel,
        "sender": admin.user_id,
        "active": False,
    }
    assert await recv(alice) == alice_off
    assert await recv(bob) == alice_off
    assert await quiet(alice) == []
    assert await quiet(bob) == []


async def test_turn_credentials_verify_with_the_hmac(settings: Settings, tmp_path: Any) -> None:
    secret = "coturn-static-auth-secret"
    uris = ("turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349")
    configured = Settings(
        **{
            **{f: getattr(settings, f) for f in settings.__struct_fields__},
            "turn_secret": secret,
            "turn_uris": uris,
            "turn_ttl": 3600,
        }
    )
    async with running_server(configured) as live:
        user = await live.register("turnuser")
        response = await live.http.get("/voice/turn", headers=user.auth)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"username", "credential", "ttl", "uris"}
        assert body["ttl"] == 3600
        assert body["uris"] == list(uris)
        expiry, _, user_id = body["username"].partition(":")
        assert user_id == user.user_id
        assert abs(int(expiry) - (time.time() + 3600)) < 60
        expected = base64.b64encode(
            hmac.new(secret.encode(), body["username"].encode(), hashlib.sha1).digest()
        ).decode()
        assert body["credential"] == expected
        assert (await live.http.get("/voice/turn")).status_code == 401
