"""Direct messages, the do-not-disturb preference and blocks, over HTTP."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.models import Channel, ChannelMember
from tests.conftest import ADMIN_TOKEN, Member, Register
from tests.http.conftest import assert_error, is_time, is_uuid

OP = {"X-Admin-Token": ADMIN_TOKEN}


async def open_dm(client: AsyncTestClient[Any], caller: Member, user_id: str) -> Any:
    return await client.post("/channels/direct", json={"user_id": user_id}, headers=caller.auth)


async def dm_status(client: AsyncTestClient[Any], caller: Member, user_id: str) -> Any:
    response = await client.get(f"/channels/direct?user_id={user_id}", headers=caller.auth)
    assert response.status_code == 200, response.text
    return response.json()


async def set_dnd(client: AsyncTestClient[Any], who: Member, value: str) -> None:
    response = await client.put(
        "/users/preferences", json={"direct_messages": value}, headers=who.auth
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"direct_messages": value}


async def test_a_direct_room_is_made_once_and_found_from_either_side(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    db: async_sessionmaker[AsyncSession],
) -> None:
    assert await dm_status(client, admin, member.user_id) == {"allowed": True, "channel_id": None}
    made = await open_dm(client, admin, member.user_id)
    assert made.status_code == 201, made.text
    channel = made.json()["channel"]
    assert is_uuid(channel["id"])
    assert is_time(channel["created_at"])
    assert channel == {
        "id": channel["id"],
        "name_enc": "",
        "created_by": admin.user_id,
        "created_at": channel["created_at"],
        "key_commitment": None,
        "key_version": 1,
        "private": True,
        "direct": True,
        "role": "owner",
        "peer_user_id": member.user_id,
        "rekey_required": False,
        "image_file_id": None,
    }
    again = await open_dm(client, admin, member.user_id)
    assert again.status_code == 200
    assert again.json() == {"channel": channel}
    other_side = await open_dm(client, member, admin.user_id)
    assert other_side.status_code == 200
    assert other_side.json() == {"channel": {**channel, "peer_user_id": admin.user_id}}
    assert await dm_status(client, member, admin.user_id) == {
        "allowed": True,
        "channel_id": channel["id"],
    }
    async with db() as session:
        rows = (
            await session.execute(
                select(ChannelMember.user_id, ChannelMember.role).where(
                    ChannelMember.channel_id == channel["id"]
                )
            )
        ).all()
        key = await session.scalar(select(Channel.direct_key).where(Channel.id == channel["id"]))
    assert sorted(rows) == sorted([(admin.user_id, "owner"), (member.user_id, "owner")])
    assert key == ":".join(sorted([admin.user_id, member.user_id]))


async def test_direct_room_refusals(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    own = await open_dm(client, member, member.user_id)
    assert assert_error(own, 400)["code"] == "direct_self"
    missing = await open_dm(client, member, "no-such-user")
    assert assert_error(missing, 404)["code"] == "user_not_found"
    status = await client.get("/channels/direct?user_id=no-such-user", headers=member.auth)
    assert assert_error(status, 404)["code"] == "user_not_found"
    assert_error(await client.post("/channels/direct", json={}, headers=member.auth), 400)
    extra = await client.post(
        "/channels/direct", json={"user_id": admin.user_id, "x": 1}, headers=member.auth
    )
    assert_error(extra, 400)
    assert_error(await client.get("/channels/direct", headers=member.auth), 400)
    unauthenticated = await client.post("/channels/direct", json={"user_id": admin.user_id})
    assert_error(unauthenticated, 401)


async def test_preferences_default_and_validation(
    client: AsyncTestClient[Any], member: Member
) -> None:
    read = await client.get("/users/preferences", headers=member.auth)
    assert read.status_code == 200
    assert read.json() == {"direct_messages": "anyone"}
    for value in ("nobody", "trusted", "anyone", "trusted"):
        await set_dnd(client, member, value)
    read = await client.get("/users/preferences", headers=member.auth)
    assert read.json() == {"direct_messages": "trusted"}
    for body in ({"direct_messages": "friends"}, {"direct_messages": None}, {}, {"x": "anyone"}):
        bad = await client.put("/users/preferences", json=body, headers=member.auth)
        assert assert_error(bad, 400)["code"] == "invalid_input"
    assert_error(await client.get("/users/preferences"), 401)


async def test_do_not_disturb_refuses_new_rooms_but_not_existing_ones(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    untrusted: Member,
    register: Register,
) -> None:
    carol = await register("carol")
    mod = await register("mod")
    await client.patch(f"/admin/users/{mod.user_id}", json={"is_moderator": True}, headers=OP)
    existing = await open_dm(client, carol, member.user_id)
    assert existing.status_code == 201

    await set_dnd(client, member, "trusted")
    refused = await open_dm(client, untrusted, member.user_id)
    assert assert_error(refused, 403)["code"] == "direct_messages_refused"
    assert await dm_status(client, untrusted, member.user_id) == {
        "allowed": False,
        "channel_id": None,
    }
    for who in (mod, admin):
        assert await dm_status(client, who, member.user_id) == {
            "allowed": True,
            "channel_id": None,
        }
    # A moderator who is not trusted still may (staff), an untrusted member may not.
    await client.patch(f"/admin/users/{mod.user_id}", json={"is_trusted": False}, headers=OP)
    assert (await open_dm(client, mod, member.user_id)).status_code == 201

    await set_dnd(client, member, "nobody")
    for who in (admin, untrusted):
        refused = await open_dm(client, who, member.user_id)
        assert assert_error(refused, 403)["code"] == "direct_messages_refused"
    # Rooms that exist stay open, from either side.
    assert (await open_dm(client, carol, member.user_id)).status_code == 200
    assert (await open_dm(client, mod, member.user_id)).status_code == 200
    assert (await open_dm(client, member, carol.user_id)).status_code == 200
    # The refusing user may still open rooms with others.
    assert (await open_dm(client, member, admin.user_id)).status_code == 201

    await set_dnd(client, member, "anyone")
    assert (await open_dm(client, untrusted, member.user_id)).status_code == 201


async def test_blocks_lifecycle(
    client: AsyncTestClient[Any], admin: Member, member: Member, register: Register
) -> None:
    carol = await register("carol")
    assert (await client.get("/users/blocks", headers=member.auth)).json() == {"blocks": []}
    first = await client.post("/users/blocks", json={"user_id": carol.user_id}, headers=member.auth)
    assert first.status_code == 201, first.text
    block = first.json()
    assert set(block) == {"user_id", "created_at"}
    assert block["user_id"] == carol.user_id
    assert is_time(block["created_at"])
    again = await client.post("/users/blocks", json={"user_id": carol.user_id}, headers=member.auth)
    assert again.status_code == 200
    assert again.json() == block
    second = await client.post(
        "/users/blocks", json={"user_id": admin.user_id}, headers=member.auth
    )
    assert second.status_code == 201
    listed = await client.get("/users/blocks", headers=member.auth)
    assert listed.json() == {"blocks": [block, second.json()]}
    # Never visible to anyone else, the blocked user included.
    assert (await client.get("/users/blocks", headers=carol.auth)).json() == {"blocks": []}

    gone = await client.delete(f"/users/blocks?user_id={carol.user_id}", headers=member.auth)
    assert gone.status_code == 204
    again_gone = await client.delete(f"/users/blocks?user_id={carol.user_id}", headers=member.auth)
    assert again_gone.status_code == 204
    unknown = await client.delete("/users/blocks?user_id=nobody", headers=member.auth)
    assert unknown.status_code == 204
    assert (await client.get("/users/blocks", headers=member.auth)).json() == {
        "blocks": [second.json()]
    }

    own = await client.post("/users/blocks", json={"user_id": member.user_id}, headers=member.auth)
    assert assert_error(own, 400)["code"] == "block_self"
    missing = await client.post("/users/blocks", json={"user_id": "nope"}, headers=member.auth)
    assert assert_error(missing, 404)["code"] == "user_not_found"
    assert_error(await client.post("/users/blocks", json={}, headers=member.auth), 400)
    assert_error(await client.delete("/users/blocks", headers=member.auth), 400)
    assert_error(await client.get("/users/blocks"), 401)


async def test_a_block_refuses_direct_rooms_with_the_do_not_disturb_code(
    client: AsyncTestClient[Any], admin: Member, member: Member, register: Register
) -> None:
    carol = await register("carol")
    existing = await open_dm(client, carol, member.user_id)
    assert existing.status_code == 201
    channel_id = existing.json()["channel"]["id"]
    blocked = await client.post(
        "/users/blocks", json={"user_id": carol.user_id}, headers=member.auth
    )
    assert blocked.status_code == 201
    # Carol can neither open a new room nor get the existing one; the answer is the
    # same as a do-not-disturb refusal, so she cannot tell she is blocked.
    refused = await open_dm(client, carol, member.user_id)
    body = assert_error(refused, 403)
    assert body["code"] == "direct_messages_refused"
    await set_dnd(client, admin, "nobody")
    dnd = assert_error(await open_dm(client, carol, admin.user_id), 403)
    assert dnd == body
    assert await dm_status(client, carol, member.user_id) == {
        "allowed": False,
        "channel_id": channel_id,
    }
    # The blocker still reaches the room; the block is one way.
    assert (await open_dm(client, member, carol.user_id)).status_code == 200
    lifted = await client.delete(f"/users/blocks?user_id={carol.user_id}", headers=member.auth)
    assert lifted.status_code == 204
    assert (await open_dm(client, carol, member.user_id)).status_code == 200
