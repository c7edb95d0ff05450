"""Issue 20: each message's place in its channel (`seq`), paging by it (`after_seq=`), and
sends that are safe to retry (`client_message_id`), on a real server and both databases."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.conftest import Member
from tests.realtime.conftest import LiveServer, chat_frame, next_of, only, quiet, recv


def send_frame(channel_id: str, body: str, client_message_id: str | None = None) -> str:
    frame: dict[str, Any] = json.loads(chat_frame(channel_id, body))
    if client_message_id is not None:
        frame["client_message_id"] = client_message_id
    return json.dumps(frame)


async def history(live: LiveServer, who: Member, query: str) -> list[dict[str, Any]]:
    response = await live.http.get(f"/channels/messages?{query}", headers=who.auth)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def test_seq_counts_each_channel_and_after_seq_pages_from_it(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    other = await live.http.post("/channels", json={"name_enc": "b3RoZXI="}, headers=admin.auth)
    assert other.status_code == 201, other.text
    second = other.json()["channel"]["id"]
    ws = await live.connect(admin)
    seqs: dict[str, list[int]] = {channel: [], second: []}
    for i in range(6):
        target = channel if i % 3 else second
        await ws.send(chat_frame(target, f"bXNn{i}"))
        event = await next_of(ws, "channel.message.new")
        assert "client_message_id" not in event  # absent when the sender gave none
        seqs[target].append(event["seq"])
    # Numbered 1, 2, 3 ... in each channel on its own: a jump is a hole.
    assert seqs == {channel: [1, 2, 3, 4], second: [1, 2]}
    items = await history(live, member, f"channel_id={channel}")
    assert [m["seq"] for m in items] == [1, 2, 3, 4]
    assert [m["seq"] for m in await history(live, member, f"channel_id={channel}&after_seq=2")] == [
        3,
        4,
    ]
    paged = await history(live, member, f"channel_id={channel}&after_seq=0&limit=3")
    assert [m["seq"] for m in paged] == [1, 2, 3]
    assert await history(live, member, f"channel_id={channel}&after_seq=4") == []
    assert await history(live, member, f"channel_id={channel}&after_seq=99") == []
    for bad in ("after_seq=-1", "after_seq=x", f"after_seq=1&after={items[0]['id']}"):
        response = await live.http.get(
            f"/channels/messages?channel_id={channel}&{bad}", headers=member.auth
        )
        assert response.status_code == 400, bad
        assert set(response.json()) == {"error", "code"}
    missing = await live.http.get(
        "/channels/messages?channel_id=nope&after_seq=1", headers=member.auth
    )
    assert missing.status_code == 404


async def test_a_repeated_client_message_id_is_answered_with_the_stored_message(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    alice = await live.connect(admin)
    bob = await live.connect(member)
    await alice.send(send_frame(channel, "Zmlyc3Q=", "c-1"))
    first = await next_of(alice, "channel.message.new")
    assert first["client_message_id"] == "c-1"
    assert (await next_of(bob, "channel.message.new")) == first
    # The same send again (the acknowledgement was lost, say), even with another body:
    # the stored message comes back to the sender alone, nothing is stored twice.
    await alice.send(send_frame(channel, "YWdhaW4=", "c-1"))
    assert await next_of(alice, "channel.message.new") == first
    # Another user may use the same id: ids are per sender.
    await bob.send(send_frame(channel, "Ym9i", "c-1"))
    from_bob = await next_of(bob, "channel.message.new")
    assert from_bob["message_id"] != first["message_id"]
    assert from_bob["seq"] == first["seq"] + 1
    seen_by_bob = only(await quiet(bob, 0.3), "channel.message.new")
    assert seen_by_bob == []  # alice's retry was not broadcast
    items = await history(live, member, f"channel_id={channel}")
    assert [(m["id"], m.get("client_message_id")) for m in items] == [
        (first["message_id"], "c-1"),
        (from_bob["message_id"], "c-1"),
    ]


async def test_concurrent_retries_store_one_message(
    live: LiveServer, admin: Member, channel: str
) -> None:
    """The same client id from several sockets of one user at once: in one batch or in
    several, one row, and every socket gets that row as its acknowledgement."""
    sockets = [await live.connect(admin) for _ in range(4)]
    for round_ in range(3):
        client_id = f"race-{round_}"
        frame = send_frame(channel, "cmFjZQ==", client_id)
        await asyncio.gather(*(ws.send(frame) for ws in sockets))
        acks = []
        for ws in sockets:
            while True:
                got = await recv(ws)
                assert got["type"] != "error", got
                if got["type"] == "channel.message.new" and got["client_message_id"] == client_id:
                    break
            acks.append(got["message_id"])
        assert len(set(acks)) == 1
    items = await history(live, admin, f"channel_id={channel}")
    assert [m["client_message_id"] for m in items] == ["race-0", "race-1", "race-2"]
    assert [m["seq"] for m in items] == [1, 2, 3]


async def test_bad_client_message_ids_are_refused(
    live: LiveServer, admin: Member, channel: str
) -> None:
    ws = await live.connect(admin)
    for bad in ("", "x" * 65, "has space", "caf\u00e9"):
        await ws.send(send_frame(channel, "Ym9keQ==", bad))
        event = await next_of(ws, "error")
        assert event["code"] == "invalid_message", bad
    raw = json.loads(chat_frame(channel, "Ym9keQ=="))
    raw["client_message_id"] = 7
    await ws.send(json.dumps(raw))
    assert (await next_of(ws, "error"))["code"] == "invalid_message"
    assert await history(live, admin, f"channel_id={channel}") == []


async def test_two_writers_racing_on_one_client_message_id_store_it_once(
    live: LiveServer, admin: Member, channel: str
) -> None:
    """Two message writers (as on two nodes) take the same send at once: the unique index
    refuses the second insert, the writer retries and answers with the stored row."""
    from dialtone.realtime.writer import MessageWriter
    from dialtone.services.context import Caller
    from dialtone.services.messages import NewMessage

    gateway = live.server.config.app.state.gateway  # type: ignore[attr-defined]
    other = MessageWriter(gateway.unit_of_work, gateway.ctx, cluster_locks=False)
    caller = Caller(
        user_id=admin.user_id,
        device_id=admin.device_id,
        is_admin=True,
        is_trusted=True,
        token_hash="",
    )
    try:
        for n in range(8):
            message = NewMessage(caller, channel, f"cmFjZS{n}", "bg==", f"twice-{n}")
            answers = await asyncio.gather(gateway.writer.submit(message), other.submit(message))
            # One stored it (and published it); the other got the stored message back.
            assert sorted(a is None for a in answers) == [False, True], answers
            (repeat,) = [a for a in answers if a is not None]
            assert repeat.client_message_id == f"twice-{n}"
    finally:
        await other.close(grace=5)
    items = await history(live, admin, f"channel_id={channel}")
    assert [m["client_message_id"] for m in items] == [f"twice-{n}" for n in range(8)]
    assert [m["seq"] for m in items] == list(range(1, 9))
