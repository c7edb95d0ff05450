"""The fast delivery paths: frames built once, direct writes, device announcements."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.frames import Frame, Opcode

from dialtone.realtime.hub import Hub, text_frame
from dialtone.schemas.events import (
    ChannelDeleted,
    ChannelMessageNew,
    ChannelUpdated,
    encode_event,
)
from tests.conftest import Member
from tests.realtime.conftest import LiveServer, chat_frame, next_of, quiet, recv


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_is_what_websockets_would_send(size: int) -> None:
    payload = ("é" * size).encode()[:size]
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


def hub_of(live: LiveServer) -> Hub:
    hub: Hub = live.server.config.app.state.hub
    return hub


async def test_an_extra_socket_of_an_online_device_is_greeted_but_not_announced(
    live: LiveServer, admin: Member, member: Member
) -> None:
    other = await live.connect(admin)
    first = await live.connect(member)
    assert await next_of(other, "device.joined") == {
        "type": "device.joined",
        "sender": member.user_id,
        "device_id": member.device_id,
    }
    # Same device, second socket: its own greeting is unchanged (snapshot, own joined)...
    second = await live.connect(member)
    # ...but the sockets that already know the device hear nothing new.
    assert [e for e in await quiet(other) if e["type"] == "device.joined"] == []
    assert [e for e in await quiet(first) if e["type"] == "device.joined"] == []
    # Once every socket of the device has gone, its next socket is announced again.
    await first.close()
    await second.close()
    for _ in range(50):
        if not hub_of(live).of_user(member.user_id):
            break
        await quiet(other, 0.05)
    await live.connect(member)
    assert await next_of(other, "device.joined") == {
        "type": "device.joined",
        "sender": member.user_id,
        "device_id": member.device_id,
    }


async def test_a_new_device_of_an_online_user_is_announced(
    live: LiveServer, admin: Member, member: Member
) -> None:
    other = await live.connect(admin)
    await live.connect(member)
    await next_of(other, "device.joined")
    laptop = await live.second_device(member)
    await live.connect(laptop)
    assert await next_of(other, "device.joined") == {
        "type": "device.joined",
        "sender": member.user_id,
        "device_id": laptop.device_id,
    }


async def test_sockets_that_keep_up_are_written_directly_and_own_no_task(
    live: LiveServer, admin: Member, channel: str
) -> None:
    sockets = [await live.connect(admin) for _ in range(5)]
    for i in range(20):
        await sockets[0].send(chat_frame(channel, f"bXNn{i}"))
    for ws in sockets:
        bodies = [(await next_of(ws, "channel.message.new"))["body"] for _ in range(20)]
        assert bodies == [f"bXNn{i}" for i in range(20)]
    conns = list(hub_of(live).conns.values())
    assert len(conns) == 5
    # Everything went out through the direct write: no queue, no writer task left.
    assert all(c.queued == 0 and not c.writing for c in conns)


async def test_greeting_order_survives_the_direct_path(live: LiveServer, member: Member) -> None:
    ws = await live.connect_raw(member)
    assert (await recv(ws))["type"] == "voice.presence.snapshot"
    assert (await recv(ws))["type"] == "device.joined"


async def test_events_delivered_together_reach_a_socket_in_one_write_in_order(
    live: LiveServer, admin: Member, channel: str
) -> None:
    ws = await live.connect(admin)
    other = await live.connect(admin)
    hub = hub_of(live)
    writes: list[bytes] = []
    for conn in hub.conns.values():
        direct = conn._write_frame
        assert direct is not None

        def counted(frame: bytes, direct: Any = direct) -> bool:
            writes.append(frame)
            ok: bool = direct(frame)
            return ok

        conn._write_frame = counted

    def message(n: int) -> ChannelMessageNew:
        return ChannelMessageNew(
            message_id=f"m{n}",
            channel_id=channel,
            sender=admin.user_id,
            sender_name_enc="bg==",
            body=f"bXNn{n}",
            sent_at="2026-01-01T00:00:00.000000Z",
        )

    # A batch's messages and a rename go out in one write per socket; an event the hub
    # also acts on (a deletion) ends the run; the order on the wire is kept.
    texts = [encode_event(message(n)) for n in range(3)]
    renamed = ChannelUpdated(channel_id=channel, channel_name_enc="bmV3")
    await hub.deliver(
        [message(0), message(1), message(2), renamed, ChannelDeleted(channel_id=channel)]
    )
    await hub.deliver([message(3)])
    for socket in (ws, other):
        kinds = [await recv(socket) for _ in range(6)]
        assert [(e["type"], e.get("body")) for e in kinds] == [
            ("channel.message.new", "bXNn0"),
            ("channel.message.new", "bXNn1"),
            ("channel.message.new", "bXNn2"),
            ("channel.updated", None),
            ("channel.deleted", None),
            ("channel.message.new", "bXNn3"),
        ]
    assert len(writes) == 6  # per socket: the run of four, the deletion, the last message
    run = b"".join(text_frame(t.encode()) for t in [*texts, encode_event(renamed)])
    assert writes[0] == writes[1] == run
