"""Private rooms over the WebSocket, on one node: events reach members only, a non-member
can neither send nor join voice, a removed member stops receiving at once (issue 16)."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.conftest import Member
from tests.realtime.conftest import LiveServer, chat_frame, next_of, only, quiet, recv

CHANNEL_EVENTS = (
    "channel.message.new",
    "channel.message.deleted",
    "channel.updated",
    "channel.created",
    "channel.deleted",
    "channel.member.added",
    "channel.member.removed",
    "channel.rekey_required",
    "voice_roster",
    "voice.presence",
    "voice_join",
    "voice_leave",
)


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def private_room(live: LiveServer, owner: Member) -> str:
    response = await live.http.post(
        "/channels", json={"name_enc": "cm9vbQ==", "private": True}, headers=owner.auth
    )
    assert response.status_code == 201, response.text
    channel_id: str = response.json()["channel"]["id"]
    return channel_id


async def add(live: LiveServer, by: Member, channel_id: str, user: Member) -> None:
    response = await live.http.post(
        "/channels/members",
        json={"channel_id": channel_id, "user_id": user.user_id},
        headers=by.auth,
    )
    assert response.status_code == 201, response.text


async def remove(live: LiveServer, by: Member, channel_id: str, user: Member) -> None:
    response = await live.http.delete(
        "/channels/members",
        params={"channel_id": channel_id, "user_id": user.user_id},
        headers=by.auth,
    )
    assert response.status_code == 204, response.text


def about(events: list[dict[str, Any]], channel_id: str) -> list[dict[str, Any]]:
    """The events that name this channel, however they name it."""
    return [
        e
        for e in events
        if e.get("channel_id") == channel_id
        or e.get("channel", {}).get("id") == channel_id
        or channel_id in e.get("voice_rooms", {})
    ]


async def refusal(ws: ClientConnection, channel_id: str) -> str:
    """The next error's code; nothing of the room may come before it."""
    while True:
        event = await recv(ws)
        if event["type"] == "error":
            return str(event["code"])
        assert about([event], channel_id) == [], event


async def test_a_non_member_hears_nothing_of_a_private_room(
    live: LiveServer, admin: Member, member: Member
) -> None:
    carol = await live.register("carol")
    outsider = await live.connect(carol)
    staff = await live.connect(admin)  # admins are outsiders too
    owner = await live.connect(member)
    room = await private_room(live, member)
    created = await next_of(owner, "channel.created")
    assert created["channel"]["id"] == room
    assert created["channel"]["private"] is True
    assert created["channel"]["role"] is None
    assert created["members"] == [{"user_id": member.user_id, "role": "owner"}]
    updated = await next_of(owner, "channel.updated")
    assert updated["private"] is True

    await owner.send(chat_frame(room, "aGk="))
    new = await next_of(owner, "channel.message.new")
    renamed = await live.http.patch(
        "/channels", json={"channel_id": room, "name_enc": "bmV3"}, headers=member.auth
    )
    assert renamed.status_code == 200
    await next_of(owner, "channel.updated")
    deleted = await live.http.delete(
        "/channels/messages", params={"message_id": new["message_id"]}, headers=member.auth
    )
    assert deleted.status_code == 204
    await next_of(owner, "channel.message.deleted")
    await send(owner, type="voice_join", channel_id=room)
    await next_of(owner, "voice_roster")
    await next_of(owner, "voice.presence")

    # The outsiders: sending and joining voice are refused as for a missing channel.
    for ws in (outsider, staff):
        await ws.send(chat_frame(room, "eA=="))
        assert await refusal(ws, room) == "channel_not_found"
        await send(ws, type="voice_join", channel_id=room)
        assert await refusal(ws, room) == "channel_not_found"
        await send(ws, type="webrtc_offer", channel_id=room, recipient=member.user_id, sdp="v=0")
        assert await refusal(ws, room) == "voice_not_joined"
    # A newcomer's voice snapshot leaves the room out; a member's shows it.
    late = await live.connect_raw(carol)
    snapshot = await recv(late)
    assert snapshot == {"type": "voice.presence.snapshot", "voice_rooms": {}}
    second = await live.connect_raw(member)
    assert (await recv(second))["voice_rooms"] == {room: [member.user_id]}

    await send(owner, type="voice_leave", channel_id=room)
    await next_of(owner, "voice.presence")
    ended = await live.http.delete("/channels", params={"channel_id": room}, headers=member.auth)
    assert ended.status_code == 204
    assert (await next_of(owner, "channel.deleted"))["channel_id"] == room
    for ws in (outsider, staff, late):
        assert about(await quiet(ws), room) == []


async def test_members_hear_membership_and_a_removed_member_stops_at_once(
    live: LiveServer, admin: Member, member: Member
) -> None:
    carol = await live.register("carol")
    dave = await live.register("dave")
    outsider = await live.connect(dave)
    owner = await live.connect(member)
    room = await private_room(live, member)
    await next_of(owner, "channel.created")
    guest = await live.connect(carol)
    await add(live, member, room, carol)
    added = {"type": "channel.member.added", "channel_id": room, "user_id": carol.user_id}
    assert await next_of(owner, "channel.member.added") == {**added, "role": "member"}
    assert await next_of(guest, "channel.member.added") == {**added, "role": "member"}
    # A client that knows nothing of membership sees the room appear as a channel.
    assert (await next_of(guest, "channel.updated"))["channel_id"] == room

    await guest.send(chat_frame(room, "aGk="))
    for ws in (owner, guest):
        assert (await next_of(ws, "channel.message.new"))["channel_id"] == room
    # carol joins the room's voice, then is removed.
    await send(guest, type="voice_join", channel_id=room)
    await next_of(guest, "voice_roster")
    await next_of(owner, "voice.presence")

    await remove(live, member, room, carol)
    removed = {"type": "channel.member.removed", "channel_id": room, "user_id": carol.user_id}
    assert await next_of(guest, "channel.member.removed") == removed
    assert await next_of(guest, "channel.deleted") == {
        "type": "channel.deleted",
        "channel_id": room,
    }
    assert await next_of(owner, "channel.member.removed") == removed
    assert await next_of(owner, "channel.rekey_required") == {
        "type": "channel.rekey_required",
        "channel_id": room,
        "key_version": 1,
    }
    # She left its voice room: the owner sees her presence end.
    assert await next_of(owner, "voice.presence") == {
        "type": "voice.presence",
        "channel_id": room,
        "sender": carol.user_id,
        "active": False,
    }
    # From now on nothing of the room reaches her, and she cannot send to it.
    await owner.send(chat_frame(room, "YWZ0ZXI="))
    await next_of(owner, "channel.message.new")
    await guest.send(chat_frame(room, "bWU="))
    assert await refusal(guest, room) == "channel_not_found"
    await send(guest, type="voice_join", channel_id=room)
    assert await refusal(guest, room) == "channel_not_found"
    assert about(await quiet(guest), room) == []
    assert about(await quiet(outsider), room) == []


async def test_the_last_owner_leaving_promotes_and_public_channels_are_unchanged(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    carol = await live.register("carol")
    everyone = await live.connect(carol)
    owner = await live.connect(member)
    room = await private_room(live, member)
    await add(live, member, room, carol)
    await next_of(everyone, "channel.member.added")
    await remove(live, member, room, member)
    assert (await next_of(owner, "channel.deleted"))["channel_id"] == room
    assert await next_of(everyone, "channel.member.added") == {
        "type": "channel.member.added",
        "channel_id": room,
        "user_id": carol.user_id,
        "role": "owner",
    }
    # A public channel's events still reach every socket.
    await owner.send(chat_frame(channel, "cHVi"))
    for ws in (owner, everyone):
        assert (await next_of(ws, "channel.message.new"))["channel_id"] == channel
    assert only(await quiet(owner), "channel.member.added") == []
