"""Direct rooms, blocks and preferences when the same request arrives several times at once."""

from __future__ import annotations

from tests.concurrency.conftest import ROUNDS, Target, assert_only, burst, statuses


async def test_simultaneous_direct_opens_from_both_sides_make_one_room(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for round_ in range(ROUNDS):
        alice = await target.register(f"alice{round_}")
        bob = await target.register(f"bob{round_}")
        # Half the clients open it as alice, half as bob: every one of them at once.
        responses = await burst(
            http.post(
                "/channels/direct",
                json={"user_id": (bob if i % 2 == 0 else alice).user_id},
                headers=(alice if i % 2 == 0 else bob).auth,
            )
            for i, http in enumerate(clients)
        )
        assert_only(responses, {200, 201})
        assert statuses(responses).count(201) == 1
        ids = {r.json()["channel"]["id"] for r in responses}
        assert len(ids) == 1
        [channel_id] = ids
        for i, response in enumerate(responses):
            peer = bob if i % 2 == 0 else alice
            assert response.json()["channel"]["peer_user_id"] == peer.user_id
            assert response.json()["channel"]["role"] == "owner"
        key = ":".join(sorted([alice.user_id, bob.user_id]))
        assert await target.count("SELECT count(*) FROM channels WHERE direct_key = :k", k=key) == 1
        members = await target.rows(
            "SELECT user_id, role FROM channel_members WHERE channel_id = :c", c=channel_id
        )
        assert sorted(members) == sorted([(alice.user_id, "owner"), (bob.user_id, "owner")])
    await target.healthy(admin)


async def test_simultaneous_blocks_and_unblocks(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for round_ in range(ROUNDS):
        blocker = await target.register(f"blocker{round_}")
        pest = await target.register(f"pest{round_}")
        responses = await burst(
            http.post("/users/blocks", json={"user_id": pest.user_id}, headers=blocker.auth)
            for http in clients
        )
        assert_only(responses, {200, 201})
        assert statuses(responses).count(201) == 1
        assert len({r.json()["created_at"] for r in responses}) == 1
        rows = await target.rows(
            "SELECT blocked_id FROM user_blocks WHERE blocker_id = :u", u=blocker.user_id
        )
        assert rows == [(pest.user_id,)]
        # Blocks and unblocks at once: every answer a success, one row or none left.
        mixed = await burst(
            http.post("/users/blocks", json={"user_id": pest.user_id}, headers=blocker.auth)
            if i % 2
            else http.delete(f"/users/blocks?user_id={pest.user_id}", headers=blocker.auth)
            for i, http in enumerate(clients)
        )
        assert_only(mixed, {200, 201, 204})
        left = await target.count(
            "SELECT count(*) FROM user_blocks WHERE blocker_id = :u", u=blocker.user_id
        )
        assert left in (0, 1)
    await target.healthy(admin)


async def test_simultaneous_preference_puts(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    values = ["anyone", "trusted", "nobody", "trusted"]
    for round_ in range(ROUNDS):
        member = await target.register(f"dnd{round_}")
        responses = await burst(
            http.put("/users/preferences", json={"direct_messages": value}, headers=member.auth)
            for http, value in zip(clients, values, strict=True)
        )
        assert_only(responses, {200})
        rows = await target.rows(
            "SELECT direct_messages FROM user_preferences WHERE user_id = :u", u=member.user_id
        )
        assert len(rows) == 1
        assert rows[0][0] in values
    await target.healthy(admin)
