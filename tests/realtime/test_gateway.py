"""Handshake, greeting, chat, HTTP-side events and frame errors over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Member
from tests.realtime.conftest import LiveServer, chat_frame, next_of, only, quiet, recv


async def test_handshake_without_token_is_refused_with_401_before_upgrade(live: LiveServer) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-real-token"}, {"Authorization": "Basic x"}):
        with pytest.raises(InvalidStatus) as refused:
            await connect(live.ws_url, additional_headers=headers, open_timeout=5)
        response = refused.value.response
        assert response.status_code == 401
        assert json.loads(response.body) == {
            "error": "missing or invalid bearer token",
            "code": "unauthorized",
        }


async def test_plain_http_get_on_ws_is_a_json_error(live: LiveServer) -> None:
    response = await live.http.get("/ws")
    assert response.status_code == 426
    assert "error" in response.json()


async def test_connect_sends_snapshot_and_device_joined_to_everyone_else(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    first = await live.connect(admin)
    ws = await live.connect_raw(member)
    assert await recv(ws) == {"type": "voice.presence.snapshot", "voice_rooms": {}}
    # Additive (administration): who you are and the server's title and welcome message.
    assert await recv(ws) == {
        "type": "server.hello",
        "user_id": member.user_id,
        "device_id": member.device_id,
        "is_admin": False,
        "is_moderator": False,
        "is_trusted": True,
        "server_title": "Dialtone",
        "welcome_message": "",
    }
    announced = {"type": "device.joined", "sender": member.user_id, "device_id": member.device_id}
    assert await next_of(first, "device.joined") == announced
    # The joiner's own copy would have been queued before this message: there is none.
    await first.send(chat_frame(channel, "YWZ0ZXI="))
    assert (await recv(ws))["type"] == "channel.message.new"


async def test_token_in_subprotocol_is_accepted_and_echoed(
    live: LiveServer, member: Member
) -> None:
    protocol = f"dialtone.bearer.{member.token}"
    ws = await live.connect_raw(member, additional_headers={}, subprotocols=[protocol])
    assert ws.subprotocol == protocol
    assert (await recv(ws))["type"] == "voice.presence.snapshot"
    with pytest.raises(InvalidStatus) as refused:
        await connect(live.ws_url, subprotocols=["dialtone.bearer.wrong"], open_timeout=5)
    assert refused.value.response.status_code == 401


async def test_message_reaches_everyone_including_sender(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    alice = await live.connect(admin)
    bob = await live.connect(member)
    frame = {
        "type": "channel.message.send",
        "channel_id": channel,
        "body": "Y2lwaGVydGV4dA==",
        "sender_name_enc": "bmFtZQ==",
    }
    await alice.send(json.dumps(frame))
    got_alice = await next_of(alice, "channel.message.new")
    got_bob = await next_of(bob, "channel.message.new")
    assert got_alice == got_bob
    # `seq` added by issue 20 (the message's place in its channel); nothing else.
    assert set(got_bob) == {
        "type",
        "message_id",
        "channel_id",
        "sender",
        "sender_name_enc",
        "body",
        "sent_at",
        "seq",
    }
    assert got_bob["channel_id"] == channel
    assert got_bob["sender"] == admin.user_id
    assert got_bob["body"] == frame["body"]
    assert got_bob["sender_name_enc"] == frame["sender_name_enc"]
    assert got_bob["sent_at"].endswith("Z")
    # Persisted before it was announced: history already has it.
    history = await live.http.get(
        "/channels/messages", params={"channel_id": channel}, headers=member.auth
    )
    assert [m["id"] for m in history.json()["messages"]] == [got_bob["message_id"]]


async def test_per_channel_order_is_storage_order_for_every_client(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    alice = await live.connect(admin)
    bob = await live.connect(member)
    watcher = await live.connect(await live.register())

    async def burst(ws: object, tag: str) -> None:
        for i in range(15):
            await ws.send(
                json.dumps(
                    {  # type: ignore[attr-defined]
                        "type": "channel.message.send",
                        "channel_id": channel,
                        "body": f"{tag}{i}",
                        "sender_name_enc": "bg==",
                    }
                )
            )

    await asyncio.gather(burst(alice, "a"), burst(bob, "b"))
    seen = []
    for ws in (alice, bob, watcher):
        ids = [(await next_of(ws, "channel.message.new"))["message_id"] for _ in range(30)]
        seen.append(ids)
    history = await live.http.get(
        "/channels/messages", params={"channel_id": channel, "limit": 100}, headers=member.auth
    )
    stored = [m["id"] for m in history.json()["messages"]]
    assert len(stored) == 30
    assert seen == [stored, stored, stored]


async def test_http_side_events_arrive_after_commit(
    live: LiveServer, admin: Member, member: Member
) -> None:
    bob = await live.connect(member)
    channel = await live.create_channel(admin, "Zmlyc3Q=")
    # key_commitment and key_version: added by issue 15 (additive).
    assert await next_of(bob, "channel.updated") == {
        "type": "channel.updated",
        "channel_id": channel,
        "channel_name_enc": "Zmlyc3Q=",
        "key_commitment": None,
        "key_version": 1,
        "private": False,
        "direct": False,
        "image_file_id": None,
    }
    renamed = await live.http.patch(
        "/channels", json={"channel_id": channel, "name_enc": "c2Vjb25k"}, headers=admin.auth
    )
    assert renamed.status_code == 200
    assert await next_of(bob, "channel.updated") == {
        "type": "channel.updated",
        "channel_id": channel,
        "channel_name_enc": "c2Vjb25k",
        "key_commitment": None,
        "key_version": 1,
        "private": False,
        "direct": False,
        "image_file_id": None,
    }
    profile = await live.http.post(
        "/users/profiles", json={"name_enc": "Ym9i"}, headers=member.auth
    )
    assert profile.status_code == 201
    assert await next_of(bob, "user.profile.updated") == {
        "type": "user.profile.updated",
        "sender": member.user_id,
    }
    deleted = await live.http.delete(
        "/channels", params={"channel_id": channel}, headers=admin.auth
    )
    assert deleted.status_code == 204
    assert await next_of(bob, "channel.deleted") == {
        "type": "channel.deleted",
        "channel_id": channel,
    }
    # A refused HTTP change announces nothing.
    refused = await live.http.post("/channels", json={"name_enc": "eA=="}, headers=member.auth)
    assert refused.status_code == 403
    assert only(await quiet(bob), "channel.updated") == []


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_message"),
        ("[1, 2]", "invalid_message"),
        ('{"no_type": 1}', "invalid_message"),
        ('{"type": "teleport"}', "unsupported_type"),
        ('{"type": 5}', "invalid_message"),
        ('{"type": "channel.message.send", "channel_id": "x"}', "invalid_message"),
        ('{"type": "channel.message.send", "channel_id": "x", "body": "b"}', "invalid_message"),
        (
            '{"type": "channel.message.send", "channel_id": "x", "body": "b",'
            ' "sender_name_enc": ""}',
            "invalid_message",
        ),
        (
            '{"type": "channel.message.send", "channel_id": "nope", "body": "b",'
            ' "sender_name_enc": "n"}',
            "channel_not_found",
        ),
        ('{"type": "voice_join", "channel_id": "nope"}', "channel_not_found"),
        ('{"type": "voice_leave", "channel_id": "nope"}', "voice_not_joined"),
        (
            '{"type": "webrtc_offer", "channel_id": "c", "recipient": "r", "sdp": "v=0"}',
            "voice_not_joined",
        ),
    ],
)
async def test_bad_frames_get_an_error_event_and_the_socket_stays_open(
    live: LiveServer, member: Member, frame: str, code: str
) -> None:
    ws = await live.connect(member)
    await ws.send(frame)
    error = await next_of(ws, "error")
    assert set(error) == {"type", "code", "message"}
    assert error["code"] == code
    await ws.send('{"type": "teleport"}')
    assert (await next_of(ws, "error"))["code"] == "unsupported_type"


async def test_body_over_16384_bytes_is_refused_and_not_stored(
    live: LiveServer, member: Member, channel: str
) -> None:
    ws = await live.connect(member)
    # 8193 two-byte characters: within the character count, over the byte limit.
    for body in ("é" * 8193, "x" * 16385):
        await ws.send(chat_frame(channel, body))
        assert (await next_of(ws, "error"))["code"] == "invalid_message"
    await ws.send(chat_frame(channel, "x" * 16384))
    assert len((await next_of(ws, "channel.message.new"))["body"]) == 16384


async def test_binary_frame_is_invalid_message(live: LiveServer, member: Member) -> None:
    ws = await live.connect(member)
    await ws.send(b'{"type": "voice_join"}')
    assert (await next_of(ws, "error"))["code"] == "invalid_message"


async def test_frame_over_64_kib_closes_with_1009(live: LiveServer, member: Member) -> None:
    ws = await live.connect(member)
    await ws.send("x" * (64 * 1024 + 1))
    with pytest.raises(ConnectionClosed) as closed:
        await recv(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_presence_answers_from_the_hub(
    live: LiveServer, admin: Member, member: Member
) -> None:
    async def statuses() -> dict[str, bool]:
        response = await live.http.post(
            "/presence", json={"user_ids": [admin.user_id, member.user_id]}, headers=admin.auth
        )
        assert response.status_code == 200
        result: dict[str, bool] = response.json()["statuses"]
        return result

    assert await statuses() == {admin.user_id: False, member.user_id: False}
    ws = await live.connect(member)
    second = await live.connect(await live.second_device(member))
    assert await statuses() == {admin.user_id: False, member.user_id: True}
    hub = live.server.config.app.state.hub  # type: ignore[attr-defined]
    await ws.close()
    await until(lambda: len(hub.of_user(member.user_id)) == 1)  # the close is processed
    assert await statuses() == {admin.user_id: False, member.user_id: True}
    await second.close()
    await until(lambda: not hub.of_user(member.user_id))
    assert await statuses() == {admin.user_id: False, member.user_id: False}


async def until(check: Callable[[], bool], within: float = 60.0) -> None:
    """Wait for a condition of the in-process server; the bound only stops a broken run."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110  (the hub has no event for a socket leaving)
            await asyncio.sleep(0.005)


async def test_turn_credentials_need_configuration(live: LiveServer, member: Member) -> None:
    response = await live.http.get("/voice/turn", headers=member.auth)
    assert response.status_code == 404
    assert response.json()["error"]
    assert (await live.http.get("/voice/turn")).status_code == 401


async def test_two_devices_of_one_user_both_receive(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    phone = await live.connect(member)
    laptop_member = await live.second_device(member)
    laptop = await live.connect(laptop_member)
    assert await next_of(phone, "device.joined") == {
        "type": "device.joined",
        "sender": member.user_id,
        "device_id": laptop_member.device_id,
    }
    alice = await live.connect(admin)
    await alice.send(chat_frame(channel, "aGk="))
    a = await next_of(phone, "channel.message.new")
    b = await next_of(laptop, "channel.message.new")
    assert a == b
