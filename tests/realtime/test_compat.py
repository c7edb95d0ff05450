"""Details existing clients rely on: trimmed message fields, no own ``device.joined``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Member
from tests.realtime.conftest import LiveServer, chat_frame, next_of, recv


async def next_event(ws: Any) -> dict[str, Any]:
    """The next event, past the greeting's ``server.hello`` (servers with /admin)."""
    while True:
        event = await recv(ws)
        if event["type"] != "server.hello":
            return event


async def test_message_fields_are_trimmed(live: LiveServer, member: Member, channel: str) -> None:
    ws = await live.connect(member)
    await ws.send(chat_frame(channel, "  Ym9keQ==\n", sender_name_enc="\tbmFtZQ== "))
    stored = await next_of(ws, "channel.message.new")
    assert stored["body"] == "Ym9keQ=="
    assert stored["sender_name_enc"] == "bmFtZQ=="
    history = await live.http.get(f"/channels/messages?channel_id={channel}", headers=member.auth)
    [message] = history.json()["messages"]
    assert message["body"] == "Ym9keQ=="
    assert message["sender_name_enc"] == "bmFtZQ=="


@pytest.mark.parametrize(("body", "name"), [("   ", "bmFtZQ=="), ("Ym9keQ==", " \n ")])
async def test_blank_message_fields_are_an_error_event(
    live: LiveServer, member: Member, channel: str, body: str, name: str
) -> None:
    ws = await live.connect(member)
    await ws.send(chat_frame(channel, body, sender_name_enc=name))
    error = await next_event(ws)
    assert error["type"] == "error"
    assert error["code"] == "invalid_message"
    # The socket stays open and usable; nothing was stored.
    await ws.send(chat_frame(channel, "b2s="))
    assert (await next_of(ws, "channel.message.new"))["body"] == "b2s="
    history = await live.http.get(f"/channels/messages?channel_id={channel}", headers=member.auth)
    assert [m["body"] for m in history.json()["messages"]] == ["b2s="]


async def test_a_device_is_not_told_of_its_own_arrival(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    """Everyone else hears device.joined; the joining device (all its sockets) does not."""
    other = await live.connect(admin)
    laptop = await live.second_device(member)
    phone_ws = await live.connect(member)
    assert (await next_of(other, "device.joined"))["device_id"] == member.device_id
    laptop_ws = await live.connect(laptop)
    joined = await next_of(other, "device.joined")
    assert joined == {
        "type": "device.joined",
        "sender": member.user_id,
        "device_id": laptop.device_id,
    }
    # The phone (another device of the same user) hears of the laptop...
    assert await next_of(phone_ws, "device.joined") == joined
    # ...and a second socket of the laptop is announced to nobody. A message sent after
    # all that is the next thing each laptop socket receives: no device.joined before it.
    second_ws = await live.connect(laptop)
    await other.send(chat_frame(channel, "bWFyaw=="))
    for ws in (laptop_ws, second_ws):
        assert (await next_event(ws))["type"] == "channel.message.new"
    assert (await next_event(phone_ws))["type"] == "channel.message.new"
