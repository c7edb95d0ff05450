"""``POST /sync``: one call catches a client up on messages, deletions and rooms."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import Member, Register
from tests.http.conftest import assert_error, store_message


async def new_channel(client: AsyncTestClient[Any], admin: Member, name: str) -> dict[str, Any]:
    response = await client.post("/channels", json={"name_enc": name}, headers=admin.auth)
    assert response.status_code == 201, response.text
    channel: dict[str, Any] = response.json()["channel"]
    return channel


async def history(
    client: AsyncTestClient[Any], channel_id: str, who: Member, after: str | None = None
) -> list[dict[str, Any]]:
    url = f"/channels/messages?channel_id={channel_id}&limit=500"
    url += f"&after={after}" if after else ""
    response = await client.get(url, headers=who.auth)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["messages"]
    return items


async def deletions(
    client: AsyncTestClient[Any], channel_id: str, who: Member, since: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/channels/messages/deleted?channel_id={channel_id}&since={since}", headers=who.auth
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["deletions"]
    return items


async def sync(client: AsyncTestClient[Any], who: Member, body: dict[str, Any]) -> Any:
    response = await client.post("/sync", json=body, headers=who.auth)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_client_that_missed_three_rooms_catches_up_in_one_call(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    register: Register,
    db: async_sessionmaker[AsyncSession],
) -> None:
    carol = await register("carol")
    rooms = [await new_channel(client, admin, f"cm9vbQ{i}") for i in range(3)]
    quiet = await new_channel(client, admin, "cXVpZXQ=")
    dm = (
        await client.post("/channels/direct", json={"user_id": carol.user_id}, headers=member.auth)
    ).json()["channel"]
    # What the client saw before it slept: two messages in each room, one deletion.
    seen: dict[str, str] = {}
    for room in rooms:
        for i in range(2):
            seen[room["id"]] = await store_message(db, room["id"], carol, f"b2xk{i}")
    early = await store_message(db, rooms[0]["id"], carol, "ZWFybHk=")
    gone_early = await client.delete(f"/channels/messages?message_id={early}", headers=carol.auth)
    assert gone_early.status_code == 204
    mark = (await deletions(client, rooms[0]["id"], member, "2000-01-01T00:00:00Z"))[-1]
    last_deletion_at = mark["deleted_at"]
    seen[rooms[0]["id"]] = early  # a deleted message is still a valid cursor

    # While it slept: new messages in every room, deletions in two of them, a room
    # deleted, a room and a direct message made.
    missed: dict[str, list[str]] = {room["id"]: [] for room in rooms}
    for n in range(4):
        for room in rooms:
            missed[room["id"]].append(await store_message(db, room["id"], admin, f"bmV3{n}"))
    for room in rooms[:2]:
        victim = missed[room["id"]].pop(1)
        assert (
            await client.delete(f"/channels/messages?message_id={victim}", headers=admin.auth)
        ).status_code == 204
    old_message = await store_message(db, quiet["id"], admin, "b2xk")
    assert (
        await client.delete(f"/channels?channel_id={quiet['id']}", headers=admin.auth)
    ).status_code == 204
    fresh = await new_channel(client, admin, "ZnJlc2g=")
    other_dm = await client.post(
        "/channels/direct", json={"user_id": admin.user_id}, headers=carol.auth
    )
    assert other_dm.status_code == 201

    body = await sync(
        client,
        member,
        {
            "channels": [
                {
                    "channel_id": room["id"],
                    "last_message_id": seen[room["id"]],
                    "last_deletion_at": last_deletion_at,
                }
                for room in rooms
            ]
            + [
                {"channel_id": quiet["id"], "last_message_id": old_message},
                {"channel_id": dm["id"]},
                {"channel_id": other_dm.json()["channel"]["id"]},
            ]
        },
    )
    assert set(body) == {"channels", "gone", "added"}
    assert body["gone"] == [quiet["id"], other_dm.json()["channel"]["id"]]
    # Only what the request did not name: the new channel (public, seen by all).
    assert body["added"] == [{**fresh, "role": None}]
    by_id = {c["channel_id"]: c for c in body["channels"]}
    assert list(by_id) == [room["id"] for room in rooms] + [dm["id"]]
    for room in rooms:
        caught = by_id[room["id"]]
        assert set(caught) == {"channel_id", "messages", "more", "deleted", "deleted_more"}
        # Exactly what history pages after the client's last message.
        assert caught["messages"] == await history(client, room["id"], member, seen[room["id"]])
        assert [m["id"] for m in caught["messages"]] == missed[room["id"]]
        assert caught["more"] is False
        assert caught["deleted"] == await deletions(client, room["id"], member, last_deletion_at)
        assert caught["deleted_more"] is False
    # Room 0's earlier deletion is the mark itself (deletions from that instant on).
    assert [d["message_id"] for d in by_id[rooms[0]["id"]]["deleted"]][1:] == [
        d["message_id"] for d in (await deletions(client, rooms[0]["id"], member, last_deletion_at))
    ][1:]
    assert len(by_id[rooms[2]["id"]]["deleted"]) == 0
    assert by_id[dm["id"]] == {
        "channel_id": dm["id"],
        "messages": [],
        "more": False,
        "deleted": [],
        "deleted_more": False,
    }

    # A client with nothing (a new device) learns every room it sees, DMs with its view.
    everything = await sync(client, member, {"channels": []})
    assert everything["channels"] == []
    assert everything["gone"] == []
    listed = {c["id"]: c for c in everything["added"]}
    assert set(listed) == {room["id"] for room in rooms} | {fresh["id"], dm["id"]}
    assert listed[dm["id"]] == dm
    assert listed[dm["id"]]["peer_user_id"] == carol.user_id
    for_carol = await sync(client, carol, {"channels": []})
    carol_dm = next(c for c in for_carol["added"] if c["id"] == dm["id"])
    assert carol_dm["peer_user_id"] == member.user_id
    assert carol_dm["role"] == "owner"


async def test_sync_pages_with_more_and_starts_from_the_beginning(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    db: async_sessionmaker[AsyncSession],
) -> None:
    room = await new_channel(client, admin, "cm9vbQ==")
    ids = [await store_message(db, room["id"], admin, f"bXNn{i}") for i in range(7)]
    first = await sync(client, member, {"channels": [{"channel_id": room["id"]}], "limit": 3})
    [caught] = first["channels"]
    assert [m["id"] for m in caught["messages"]] == ids[:3]
    assert caught["more"] is True
    cursor = caught["messages"][-1]["id"]
    second = await sync(
        client,
        member,
        {"channels": [{"channel_id": room["id"], "last_message_id": cursor}], "limit": 4},
    )
    assert [m["id"] for m in second["channels"][0]["messages"]] == ids[3:]
    assert second["channels"][0]["more"] is False
    default = await sync(
        client, member, {"channels": [{"channel_id": room["id"], "last_message_id": None}]}
    )
    assert [m["id"] for m in default["channels"][0]["messages"]] == ids
    for message in ids[:3]:
        await client.delete(f"/channels/messages?message_id={message}", headers=admin.auth)
    deleted = await sync(
        client,
        member,
        {
            "channels": [{"channel_id": room["id"], "last_deletion_at": "2000-01-01T00:00:00Z"}],
            "limit": 2,
        },
    )
    [caught] = deleted["channels"]
    assert [d["message_id"] for d in caught["deleted"]] == ids[:2]
    assert caught["deleted_more"] is True
    assert [m["id"] for m in caught["messages"]] == ids[3:5]


async def test_sync_refuses_bad_input(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    db: async_sessionmaker[AsyncSession],
) -> None:
    room = await new_channel(client, admin, "cm9vbQ==")
    other = await new_channel(client, admin, "b3RoZXI=")
    elsewhere = await store_message(db, other["id"], admin, "bXNn")
    cases: list[tuple[Any, int, str]] = [
        (
            {"channels": [{"channel_id": room["id"], "last_message_id": "nope"}]},
            400,
            "invalid_cursor",
        ),
        (
            {"channels": [{"channel_id": room["id"], "last_message_id": elsewhere}]},
            400,
            "invalid_cursor",
        ),
        (
            {"channels": [{"channel_id": room["id"], "last_deletion_at": "yesterday"}]},
            400,
            "invalid_time",
        ),
        ({"channels": [{"channel_id": room["id"]}] * 2}, 400, "invalid_input"),
        ({"channels": [{"channel_id": f"c{i}"} for i in range(201)]}, 400, "invalid_input"),
        ({"channels": [], "limit": 0}, 400, "invalid_input"),
        ({"channels": [], "limit": 201}, 400, "invalid_input"),
        ({"channels": [{"channel_id": ""}]}, 400, "invalid_input"),
        ({"channels": [{"channel_id": room["id"], "x": 1}]}, 400, "invalid_input"),
        ({}, 400, "invalid_input"),
        ({"channels": "all"}, 400, "invalid_input"),
    ]
    for body, status, code in cases:
        response = await client.post("/sync", json=body, headers=member.auth)
        assert assert_error(response, status)["code"] == code, body
    # 200 channels, all unknown: every one gone, nothing else read.
    many = await sync(client, member, {"channels": [{"channel_id": f"c{i}"} for i in range(200)]})
    assert len(many["gone"]) == 200
    assert_error(await client.post("/sync", json={"channels": []}), 401)
