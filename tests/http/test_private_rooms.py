"""Private rooms over HTTP: creation, members, and a room that does not exist for anyone
outside it (issue 16)."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.errors import DialtoneError
from tests.conftest import ADMIN_TOKEN, Member, Register
from tests.e2ee import commitment
from tests.http.conftest import assert_error as error_body
from tests.http.conftest import store_message

Db = async_sessionmaker[AsyncSession]

OP = {"X-Admin-Token": ADMIN_TOKEN}


def assert_error(response: Any, status: int, code: str) -> None:
    assert error_body(response, status)["code"] == code, response.text


async def private_room(client: AsyncTestClient[Any], owner: Member, name: str = "cm9vbQ==") -> str:
    response = await client.post(
        "/channels", json={"name_enc": name, "private": True}, headers=owner.auth
    )
    assert response.status_code == 201, response.text
    channel_id: str = response.json()["channel"]["id"]
    return channel_id


async def add(
    client: AsyncTestClient[Any], by: Member, channel_id: str, user_id: str, **extra: Any
) -> Any:
    return await client.post(
        "/channels/members",
        json={"channel_id": channel_id, "user_id": user_id, **extra},
        headers=by.auth,
    )


async def remove(client: AsyncTestClient[Any], by: Member, channel_id: str, user_id: str) -> Any:
    return await client.delete(
        "/channels/members", params={"channel_id": channel_id, "user_id": user_id}, headers=by.auth
    )


async def members_of(client: AsyncTestClient[Any], by: Member, channel_id: str) -> Any:
    response = await client.get(
        "/channels/members", params={"channel_id": channel_id}, headers=by.auth
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_any_member_creates_a_private_room_and_owns_it(
    client: AsyncTestClient[Any], admin: Member, member: Member, register: Register
) -> None:
    response = await client.post(
        "/channels", json={"name_enc": "cm9vbQ==", "private": True}, headers=member.auth
    )
    assert response.status_code == 201, response.text
    room = response.json()["channel"]
    assert room["private"] is True
    assert room["direct"] is False
    assert room["role"] == "owner"
    assert room["peer_user_id"] is None
    assert room["rekey_required"] is False
    assert room["created_by"] == member.user_id
    # Listed for its member, with the role; for nobody else (admins included).
    listing = (await client.get("/channels", headers=member.auth)).json()["channels"]
    assert listing == [room]
    assert (await client.get("/channels", headers=admin.auth)).json() == {"channels": []}
    carol = await register("carol")
    assert (await client.get("/channels", headers=carol.auth)).json() == {"channels": []}
    assert await members_of(client, member, room["id"]) == {
        "members": [{"user_id": member.user_id, "role": "owner"}],
        "member_count": 1,
    }
    # Public channels stay admins' to create.
    refused = await client.post("/channels", json={"name_enc": "cHVi"}, headers=member.auth)
    assert_error(refused, 403, "not_admin")


@pytest.mark.parametrize(
    ("who", "admin_ok", "trusted_ok", "member_ok"),
    [
        ("everyone", True, True, True),
        ("trusted", True, True, False),
        ("admins", True, False, False),
    ],
)
async def test_the_private_rooms_setting_says_who_may_create_them(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    register: Register,
    who: str,
    admin_ok: bool,
    trusted_ok: bool,
    member_ok: bool,
) -> None:
    trusted = await register("trusty")  # accounts are trusted when made
    made = await client.patch(
        f"/admin/users/{member.user_id}", json={"is_trusted": False}, headers=OP
    )
    assert made.status_code == 200, made.text
    changed = await client.put("/admin/settings", json={"private_rooms": who}, headers=OP)
    assert changed.status_code == 200, changed.text
    assert changed.json()["settings"]["private_rooms"] == who
    for caller, allowed in ((admin, admin_ok), (trusted, trusted_ok), (member, member_ok)):
        response = await client.post(
            "/channels", json={"name_enc": "cm9vbQ==", "private": True}, headers=caller.auth
        )
        if allowed:
            assert response.status_code == 201, response.text
        else:
            assert_error(response, 403, "private_rooms_restricted")


async def test_the_private_rooms_setting_takes_only_its_words(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    assert (await client.get("/admin/settings", headers=OP)).json()["settings"][
        "private_rooms"
    ] == "everyone"
    for value in ("nobody", "", "Everyone", 1, True):
        response = await client.put("/admin/settings", json={"private_rooms": value}, headers=OP)
        assert_error(response, 400, "invalid_setting")


async def test_a_non_member_cannot_tell_a_private_room_from_a_missing_one(
    client: AsyncTestClient[Any], admin: Member, member: Member, register: Register
) -> None:
    room = await private_room(client, member)
    sent = await client.get("/channels/messages", params={"channel_id": room}, headers=member.auth)
    assert sent.status_code == 200
    carol = await register("carol")
    missing = "0" * 32
    for outsider in (carol, admin):
        for channel_id in (room, missing):
            checks = [
                await client.get(
                    "/channels/messages", params={"channel_id": channel_id}, headers=outsider.auth
                ),
                await client.get(
                    "/channels/messages",
                    params={"channel_id": channel_id, "after_seq": 0},
                    headers=outsider.auth,
                ),
                await client.get(
                    "/channels/messages/deleted",
                    params={"channel_id": channel_id},
                    headers=outsider.auth,
                ),
                await client.put(
                    "/channels/commitment",
                    json={"channel_id": channel_id, "key_commitment": commitment(b"k" * 32)},
                    headers=outsider.auth,
                ),
                await client.get(
                    "/channels/keys", params={"channel_id": channel_id}, headers=outsider.auth
                ),
                await client.post(
                    "/channels/keys",
                    json={
                        "channel_id": channel_id,
                        "envelopes": [
                            {
                                "device_id": outsider.device_id,
                                "sender_device_id": outsider.device_id,
                                "sender_public_key": outsider.keys.public_b64,
                                "envelope": outsider.keys.wrap_for(
                                    outsider.keys.public_b64, b"k" * 32
                                ),
                            }
                        ],
                    },
                    headers=outsider.auth,
                ),
            ]
            if outsider is carol:
                checks += [
                    await client.patch(
                        "/channels",
                        json={"channel_id": channel_id, "name_enc": "bmV3"},
                        headers=outsider.auth,
                    ),
                    await client.delete(
                        "/channels", params={"channel_id": channel_id}, headers=outsider.auth
                    ),
                    await client.get(
                        "/channels/members", params={"channel_id": channel_id}, headers=carol.auth
                    ),
                    await add(client, carol, channel_id, carol.user_id),
                    await remove(client, carol, channel_id, member.user_id),
                ]
            for response in checks:
                assert_error(response, 404, "channel_not_found")
    # The room is untouched.
    assert [
        c["id"] for c in (await client.get("/channels", headers=member.auth)).json()["channels"]
    ] == [room]


async def test_messages_of_a_private_room_are_its_members_to_read_and_delete(
    client: AsyncTestClient[Any], db: Db, admin: Member, member: Member, register: Register
) -> None:
    room = await private_room(client, member)
    carol = await register("carol")
    made = await client.patch(
        f"/admin/users/{carol.user_id}", json={"is_moderator": True}, headers=OP
    )
    assert made.status_code == 200, made.text
    first = await store_message(db, room, member, "Ym9keQ==")
    second = await store_message(db, room, member, "Ym9keTI=")
    # Staff outside the room: the message is not there for them (admins included).
    for outsider in (carol, admin):
        refused = await client.delete(
            "/channels/messages", params={"message_id": first}, headers=outsider.auth
        )
        assert_error(refused, 404, "message_not_found")
    # The sender deletes it; the deletion feed is the members'.
    deleted = await client.delete(
        "/channels/messages", params={"message_id": first}, headers=member.auth
    )
    assert deleted.status_code == 204
    feed = await client.get(
        "/channels/messages/deleted", params={"channel_id": room}, headers=member.auth
    )
    assert [d["message_id"] for d in feed.json()["deletions"]] == [first]
    page = await client.get("/channels/messages", params={"channel_id": room}, headers=member.auth)
    assert [m["id"] for m in page.json()["messages"]] == [second]
    # A member added later reads the whole history.
    assert (await add(client, member, room, carol.user_id)).status_code == 201
    page = await client.get("/channels/messages", params={"channel_id": room}, headers=carol.auth)
    assert [m["id"] for m in page.json()["messages"]] == [second]
    # Sending as a non-member: refused as for a missing channel (the gateway's answer).
    with pytest.raises(DialtoneError) as refused_send:
        await store_message(db, room, admin, "eA==")
    assert refused_send.value.code == "channel_not_found"


async def test_owners_add_and_remove_members(
    client: AsyncTestClient[Any], admin: Member, member: Member, register: Register
) -> None:
    carol = await register("carol")
    dave = await register("dave")
    room = await private_room(client, member)
    added = await add(client, member, room, carol.user_id)
    assert added.status_code == 201, added.text
    assert added.json() == {"member": {"user_id": carol.user_id, "role": "member"}}
    # Again: 200, role unchanged (even when asked for another).
    again = await add(client, member, room, carol.user_id, role="owner")
    assert again.status_code == 200, again.text
    assert again.json() == {"member": {"user_id": carol.user_id, "role": "member"}}
    # carol now sees it, as a member.
    listing = (await client.get("/channels", headers=carol.auth)).json()["channels"]
    assert [(c["id"], c["role"]) for c in listing] == [(room, "member")]
    # A member is not an owner.
    assert_error(await add(client, carol, room, dave.user_id), 403, "not_owner")
    assert_error(await remove(client, carol, room, member.user_id), 403, "not_owner")
    # Unknown users, non-members, bad roles.
    assert_error(await add(client, member, room, "0" * 32), 404, "user_not_found")
    assert_error(await remove(client, member, room, dave.user_id), 404, "not_a_member")
    bad = await add(client, member, room, dave.user_id, role="admin")
    assert bad.status_code == 400
    # An owner may add another owner; an admin may add to any room, member or not.
    owner = await add(client, member, room, dave.user_id, role="owner")
    assert owner.status_code == 201
    assert owner.json()["member"]["role"] == "owner"
    eve = await register("eve")
    by_admin = await add(client, admin, room, eve.user_id)
    assert by_admin.status_code == 201, by_admin.text
    listed = await members_of(client, carol, room)
    assert listed["member_count"] == 4
    assert {m["user_id"]: m["role"] for m in listed["members"]} == {
        member.user_id: "owner",
        carol.user_id: "member",
        dave.user_id: "owner",
        eve.user_id: "member",
    }
    # Removal: by an owner, by an admin, by oneself; each marks the room for rotation.
    removed = await remove(client, member, room, carol.user_id)
    assert removed.status_code == 204
    assert (await client.get("/channels", headers=carol.auth)).json() == {"channels": []}
    assert_error(
        await client.get("/channels/messages", params={"channel_id": room}, headers=carol.auth),
        404,
        "channel_not_found",
    )
    room_seen = (await client.get("/channels", headers=member.auth)).json()["channels"][0]
    assert room_seen["rekey_required"] is True
    assert (await remove(client, admin, room, eve.user_id)).status_code == 204
    assert (await remove(client, dave, room, dave.user_id)).status_code == 204
    assert (await members_of(client, member, room))["member_count"] == 1


async def test_public_channels_and_their_member_list(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    created = await client.post("/channels", json={"name_enc": "cHVi"}, headers=admin.auth)
    channel = created.json()["channel"]["id"]
    listed = await members_of(client, member, channel)
    assert listed == {
        "members": [
            {"user_id": admin.user_id, "role": "member"},
            {"user_id": member.user_id, "role": "member"},
        ],
        "member_count": 2,
    }
    assert_error(await add(client, admin, channel, member.user_id), 409, "public_channel")
    assert_error(await remove(client, admin, channel, member.user_id), 409, "public_channel")


async def test_the_last_owner_leaving_hands_the_room_on_and_the_last_member_ends_it(
    client: AsyncTestClient[Any], admin: Member, member: Member, register: Register
) -> None:
    carol = await register("carol")
    dave = await register("dave")
    room = await private_room(client, member)
    for user in (carol, dave):
        assert (await add(client, member, room, user.user_id)).status_code == 201
    assert (await remove(client, member, room, member.user_id)).status_code == 204
    # carol was added first: she owns it now.
    assert {m["user_id"]: m["role"] for m in (await members_of(client, dave, room))["members"]} == {
        carol.user_id: "owner",
        dave.user_id: "member",
    }
    assert (await remove(client, carol, room, dave.user_id)).status_code == 204
    assert (await remove(client, carol, room, carol.user_id)).status_code == 204
    # Nobody left: the room is gone, for admins too.
    assert_error(
        await client.delete("/channels", params={"channel_id": room}, headers=admin.auth),
        404,
        "channel_not_found",
    )


async def test_owners_rename_and_delete_their_room_members_do_not(
    client: AsyncTestClient[Any], admin: Member, member: Member, register: Register
) -> None:
    carol = await register("carol")
    room = await private_room(client, member)
    assert (await add(client, member, room, carol.user_id)).status_code == 201
    renamed = await client.patch(
        "/channels", json={"channel_id": room, "name_enc": "bmV3"}, headers=member.auth
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["channel"]["name_enc"] == "bmV3"
    assert renamed.json()["channel"]["role"] == "owner"
    assert_error(
        await client.patch(
            "/channels", json={"channel_id": room, "name_enc": "eA=="}, headers=carol.auth
        ),
        403,
        "not_admin",
    )
    assert_error(
        await client.delete("/channels", params={"channel_id": room}, headers=carol.auth),
        403,
        "not_owner",
    )
    assert (
        await client.delete("/channels", params={"channel_id": room}, headers=member.auth)
    ).status_code == 204
    # Admins delete any room by id (moderation), member or not.
    other = await private_room(client, carol)
    assert (
        await client.delete("/channels", params={"channel_id": other}, headers=admin.auth)
    ).status_code == 204


async def test_history_fast_path_answers_a_non_member_as_litestar_does(
    client: AsyncTestClient[Any], admin: Member, member: Member, register: Register
) -> None:
    carol = await register("carol")
    room = await private_room(client, member)
    routes = client.app.fast_routes
    answers = []
    for _ in range(2):  # the second: every token is in the session cache by now
        for who in (carol, member):
            response = await client.get(
                "/channels/messages", params={"channel_id": room}, headers=who.auth
            )
            answers.append((response.status_code, response.content))
    routes.clear()
    slow = []
    for _ in range(2):
        for who in (carol, member):
            response = await client.get(
                "/channels/messages", params={"channel_id": room}, headers=who.auth
            )
            slow.append((response.status_code, response.content))
    assert answers == slow
    assert answers[2][0] == 404
    assert b"channel_not_found" in answers[2][1]
    assert answers[3][0] == 200


async def test_a_direct_message_room_keeps_its_two_users(
    client: AsyncTestClient[Any], db: Db, admin: Member, member: Member, register: Register
) -> None:
    carol = await register("carol")
    room = await private_room(client, member)
    assert (await add(client, member, room, carol.user_id)).status_code == 201
    # Made a DM room in place (POST /channels/direct is another change's).
    pair = ":".join(sorted([member.user_id, carol.user_id]))
    async with db() as session, session.begin():
        await session.execute(
            text("UPDATE channels SET direct_key = :k WHERE id = :c"), {"k": pair, "c": room}
        )
    seen = (await client.get("/channels", headers=carol.auth)).json()["channels"]
    assert [(c["direct"], c["peer_user_id"]) for c in seen] == [(True, member.user_id)]
    seen = (await client.get("/channels", headers=member.auth)).json()["channels"]
    assert [(c["direct"], c["peer_user_id"]) for c in seen] == [(True, carol.user_id)]
    dave = await register("dave")
    assert_error(await add(client, member, room, dave.user_id), 409, "direct_channel")
    assert_error(await add(client, admin, room, dave.user_id), 409, "direct_channel")
    assert_error(await remove(client, carol, room, carol.user_id), 409, "direct_channel")
    assert_error(await remove(client, admin, room, carol.user_id), 409, "direct_channel")
