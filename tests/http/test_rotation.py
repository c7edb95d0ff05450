"""POST /channels/rotate, the rotation mark, and envelopes of private rooms (issue 16 item 4)."""

from __future__ import annotations

import os
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.models import Channel
from tests.conftest import ADMIN_TOKEN, Member, Register
from tests.e2ee import commitment
from tests.http.conftest import assert_error

Db = async_sessionmaker[AsyncSession]
OP = {"X-Admin-Token": ADMIN_TOKEN}


async def new_room(client: AsyncTestClient[Any], owner: Member, *others: tuple[Member, str]) -> str:
    """A private room made by ``owner`` (its first owner) with ``others`` added by them,
    each with its role ("owner" | "member"), through the endpoints."""
    created = await client.post(
        "/channels",
        json={
            "name_enc": "cm9vbQ==",
            "key_commitment": commitment(os.urandom(32)),
            "private": True,
        },
        headers=owner.auth,
    )
    assert created.status_code == 201, created.text
    room: str = created.json()["channel"]["id"]
    for member, role in others:
        added = await client.post(
            "/channels/members",
            json={"channel_id": room, "user_id": member.user_id, "role": role},
            headers=owner.auth,
        )
        assert added.status_code == 201, added.text
    return room


def rotation(room: str, version: int) -> dict[str, Any]:
    return {
        "channel_id": room,
        "key_version": version,
        "key_commitment": commitment(os.urandom(32)),
    }


async def state(db: Db, room: str) -> tuple[int, str | None, bool]:
    async with db() as session:
        channel = (await session.execute(select(Channel).where(Channel.id == room))).scalar_one()
        return channel.key_version, channel.key_commitment, channel.rekey_required


async def test_who_may_rotate(
    client: AsyncTestClient[Any], db: Db, admin: Member, register: Register
) -> None:
    owner = await register("olivia")
    plain = await register("bob")
    outsider = await register("eve")
    other_admin = await register("root")
    async with db.begin() as session:
        from sqlalchemy import update

        from dialtone.db.models import User

        await session.execute(
            update(User).where(User.id == other_admin.user_id).values(is_admin=True)
        )
    # Olivia makes the room (its first owner); the admin is in it with role member.
    room = await new_room(client, owner, (plain, "member"), (admin, "member"))
    # Not visible: a non-member, even an admin, gets the room's 404.
    for caller in (outsider, other_admin):
        refused = assert_error(
            await client.post("/channels/rotate", json=rotation(room, 2), headers=caller.auth), 404
        )
        assert refused["code"] == "channel_not_found"
    missing = await client.post(
        "/channels/rotate", json=rotation("no-such-room", 2), headers=owner.auth
    )
    assert assert_error(missing, 404)["code"] == "channel_not_found"
    # A plain member may not.
    refused = assert_error(
        await client.post("/channels/rotate", json=rotation(room, 2), headers=plain.auth), 403
    )
    assert refused["code"] == "not_owner"
    # An owner may; then an admin who is a member (role member).
    body = rotation(room, 2)
    done = await client.post("/channels/rotate", json=body, headers=owner.auth)
    assert done.status_code == 200, done.text
    channel = done.json()["channel"]
    assert channel["key_version"] == 2
    assert channel["key_commitment"] == body["key_commitment"]
    assert channel["rekey_required"] is False
    assert channel["role"] == "owner"
    assert channel["private"] is True
    again = await client.post("/channels/rotate", json=rotation(room, 3), headers=admin.auth)
    assert again.status_code == 200, again.text
    assert again.json()["channel"]["role"] == "member"
    assert (await state(db, room))[0] == 3


async def test_versions_must_follow_and_public_channels_do_not_rotate(
    client: AsyncTestClient[Any], db: Db, admin: Member, channel_id: str
) -> None:
    public = assert_error(
        await client.post("/channels/rotate", json=rotation(channel_id, 2), headers=admin.auth),
        409,
    )
    assert public["code"] == "public_channel"
    room = await new_room(client, admin)
    for version in (1, 3, 100):
        conflict = assert_error(
            await client.post("/channels/rotate", json=rotation(room, version), headers=admin.auth),
            409,
        )
        assert conflict["code"] == "key_version_conflict", version
    for bad in (0, -1, 2**31, "x", None):
        body = {**rotation(room, 2), "key_version": bad}
        assert_error(await client.post("/channels/rotate", json=body, headers=admin.auth), 400)
    wrong = {**rotation(room, 2), "key_commitment": "bm90IDMyIGJ5dGVz"}
    assert_error(await client.post("/channels/rotate", json=wrong, headers=admin.auth), 400)
    extra = {**rotation(room, 2), "extra": 1}
    assert_error(await client.post("/channels/rotate", json=extra, headers=admin.auth), 400)
    assert (await state(db, room))[0] == 1


def envelope(sender: Member, to: Member, version: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "device_id": to.device_id,
        "sender_device_id": sender.device_id,
        "sender_public_key": sender.keys.public_b64,
        "envelope": sender.keys.wrap_for(to.keys.public_b64, os.urandom(32)),
    }
    if version is not None:
        item["key_version"] = version
    return item


async def test_envelopes_of_a_private_room(
    client: AsyncTestClient[Any], admin: Member, register: Register
) -> None:
    bob = await register("bob")
    eve = await register("eve")
    room = await new_room(client, admin, (bob, "member"))

    async def post(items: list[dict[str, Any]], by: Member = admin) -> Any:
        return await client.post(
            "/channels/keys", json={"channel_id": room, "envelopes": items}, headers=by.auth
        )

    assert (await post([envelope(admin, bob), envelope(admin, admin)])).status_code == 201
    # A device of someone outside the room: refused, the whole batch with it.
    refused = assert_error(await post([envelope(admin, bob), envelope(admin, eve)]), 403)
    assert refused["code"] == "not_a_member_device"
    # An outsider cannot post at all: the room does not exist for eve.
    hidden = assert_error(await post([envelope(eve, eve)], by=eve), 404)
    assert hidden["code"] == "channel_not_found"
    # Above the current version: a conflict (a rotation that did not happen).
    ahead = assert_error(await post([envelope(admin, bob, 2)]), 409)
    assert ahead["code"] == "key_version_conflict"
    assert assert_error(await post([envelope(admin, bob, 0)]), 400)["code"] == (
        "invalid_key_version"
    )
    # After a rotation both versions are stored and each is read by its version.
    rotated = await client.post("/channels/rotate", json=rotation(room, 2), headers=admin.auth)
    assert rotated.status_code == 200, rotated.text
    assert (await post([envelope(admin, bob, 2)])).status_code == 201
    for version in (1, 2):
        got = await client.get(
            f"/channels/keys?channel_id={room}&all=1&key_version={version}", headers=bob.auth
        )
        assert got.status_code == 200, got.text
        assert [e["key_version"] for e in got.json()["envelopes"]] == [version]
        assert got.json()["key_version"] == version
        one = await client.get(
            f"/channels/keys?channel_id={room}&key_version={version}", headers=bob.auth
        )
        assert one.json()["key_version"] == version
    current = await client.get(f"/channels/keys?channel_id={room}&all=1", headers=bob.auth)
    assert set(current.json()) == {"channel_id", "device_id", "envelopes"}  # as before
    assert [e["key_version"] for e in current.json()["envelopes"]] == [2]
    for bad in (0, 3):
        refused = assert_error(
            await client.get(
                f"/channels/keys?channel_id={room}&key_version={bad}", headers=bob.auth
            ),
            400,
        )
        assert refused["code"] == "invalid_key_version"
    # Eve asks what bob's device holds: nothing of a room she cannot see.
    await post([envelope(bob, bob, 2)], by=bob)
    mine = await client.get(f"/keys/held?device_id={bob.device_id}", headers=bob.auth)
    assert mine.json()["channels"] == [room]
    theirs = await client.get(f"/keys/held?device_id={bob.device_id}", headers=eve.auth)
    assert theirs.json()["channels"] == []


async def test_old_versions_keep_their_commitments(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    room = await new_room(client, admin)
    first = (await client.get("/channels", headers=admin.auth)).json()["channels"]
    [channel] = [c for c in first if c["id"] == room]
    commitments = {1: channel["key_commitment"]}
    for version in (2, 3):
        body = rotation(room, version)
        assert (
            await client.post("/channels/rotate", json=body, headers=admin.auth)
        ).status_code == 200
        commitments[version] = body["key_commitment"]
    for version, expected in commitments.items():
        got = await client.get(
            f"/channels/keys?channel_id={room}&all=1&key_version={version}", headers=admin.auth
        )
        assert got.json()["key_commitment"] == expected, version


async def rooms_marked(db: Db, *rooms: str) -> list[bool]:
    return [(await state(db, room))[2] for room in rooms]


async def test_rooms_are_marked_when_a_member_can_no_longer_be_trusted(
    client: AsyncTestClient[Any], db: Db, admin: Member, register: Register
) -> None:
    bob = await register("bob")
    carol = await register("carol")
    dave = await register("dave")
    erin = await register("erin")
    rooms = {}
    for person in (bob, carol, dave, erin):
        rooms[person.username] = await new_room(client, admin, (person, "member"))
    untouched = await new_room(client, admin)

    # Bob revokes a second device of his.
    login = await client.post(
        "/auth/login",
        json={
            "username": "bob",
            "password": bob.password,
            "public_key": commitment(os.urandom(32)),  # any 32 bytes in base64
        },
    )
    assert login.status_code == 200, login.text
    revoked = await client.delete(f"/devices/{login.json()['device_id']}", headers=bob.auth)
    assert revoked.status_code == 204, revoked.text
    assert await rooms_marked(db, rooms["bob"], rooms["carol"], untouched) == [True, False, False]

    # Carol is locked, dave banned, erin deleted.
    locked = await client.patch(
        f"/admin/users/{carol.user_id}", json={"is_locked": True}, headers=OP
    )
    assert locked.status_code == 200, locked.text
    banned = await client.post("/admin/bans", json={"user_id": dave.user_id}, headers=OP)
    assert banned.status_code == 201, banned.text
    deleted = await client.delete(f"/admin/users/{erin.user_id}", headers=OP)
    assert deleted.status_code in (200, 204), deleted.text
    marked = await rooms_marked(db, rooms["carol"], rooms["dave"], rooms["erin"], untouched)
    assert marked == [True, True, True, False]

    # The rotation clears the mark.
    done = await client.post("/channels/rotate", json=rotation(rooms["bob"], 2), headers=admin.auth)
    assert done.status_code == 200, done.text
    assert await rooms_marked(db, rooms["bob"]) == [False]
