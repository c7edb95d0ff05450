"""Private-room members (issue 16): the same add at once, owners leaving at once."""

from __future__ import annotations

from tests.concurrency.conftest import ROUNDS, Target, assert_only, burst
from tests.conftest import Member


async def private_room(target: Target, owner: Member) -> str:
    made = await target.http.post(
        "/channels", json={"name_enc": "cm9vbQ==", "private": True}, headers=owner.auth
    )
    assert made.status_code == 201, made.text
    channel_id: str = made.json()["channel"]["id"]
    return channel_id


async def test_the_same_member_added_at_once_is_one_row(target: Target) -> None:
    owner = await target.register("owner")
    clients = await target.pool()
    for _ in range(ROUNDS):
        guest = await target.register()
        room = await private_room(target, owner)
        added = await burst(
            http.post(
                "/channels/members",
                json={"channel_id": room, "user_id": guest.user_id},
                headers=owner.auth,
            )
            for http in clients
        )
        assert_only(added, {200, 201})
        assert sorted(r.status_code for r in added) == [200] * (len(clients) - 1) + [201]
        assert all(
            r.json() == {"member": {"user_id": guest.user_id, "role": "member"}} for r in added
        )
        rows = await target.count(
            "SELECT count(*) FROM channel_members WHERE channel_id = :c AND user_id = :u",
            c=room,
            u=guest.user_id,
        )
        assert rows == 1
    await target.healthy(owner)


async def test_owners_leaving_at_once_leave_an_owner_or_no_room(target: Target) -> None:
    """Each leave runs after the others of its room (the room's row lock): the last owner
    out hands the room on, the last member out ends it."""
    founder = await target.register("founder")
    clients = await target.pool()
    others = [await target.register() for _ in clients]
    for _ in range(ROUNDS):
        room = await private_room(target, founder)
        for user in others[1:]:
            joined = await target.http.post(
                "/channels/members",
                json={"channel_id": room, "user_id": user.user_id, "role": "owner"},
                headers=founder.auth,
            )
            assert joined.status_code == 201, joined.text
        stay = others[0]
        joined = await target.http.post(
            "/channels/members",
            json={"channel_id": room, "user_id": stay.user_id},
            headers=founder.auth,
        )
        assert joined.status_code == 201
        leaving = [founder, *others[1:]]
        left = await burst(
            http.delete(
                "/channels/members",
                params={"channel_id": room, "user_id": user.user_id},
                headers=user.auth,
            )
            for http, user in zip(clients, leaving, strict=False)
        )
        assert_only(left, {204})
        roles = await target.rows(
            "SELECT user_id, role FROM channel_members WHERE channel_id = :c", c=room
        )
        assert [tuple(r) for r in roles] == [(stay.user_id, "owner")]
    await target.healthy(founder)
