"""The delivery paths: events encoded once, writers that end when idle, device announcements."""

from __future__ import annotations

from dialtone.realtime.hub import Hub
from tests.conftest import Member
from tests.realtime.conftest import LiveServer, chat_frame, next_of, quiet, recv


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
    # Same device, second socket: greeted with the snapshot only, as the first was...
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


async def test_sockets_that_keep_up_own_no_task_once_drained(
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
    # Everything went out, in order: no queue and no writer task left behind.
    assert all(c.queued == 0 and not c.writing for c in conns)


async def test_greeting_order(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    ws = await live.connect_raw(member)
    assert (await recv(ws))["type"] == "voice.presence.snapshot"
    assert (await recv(ws))["type"] == "server.hello"  # additive (administration)
    other = await live.connect(admin)
    assert await next_of(ws, "device.joined") == {
        "type": "device.joined",
        "sender": admin.user_id,
        "device_id": admin.device_id,
    }
    await other.send(chat_frame(channel, "b3JkZXI="))
    assert (await recv(ws))["type"] == "channel.message.new"
