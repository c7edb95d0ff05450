"""Key rotation: several owner devices rotate one room at once; exactly one wins."""

from __future__ import annotations

import os

from tests.concurrency.conftest import ROUNDS, Target, assert_only, burst
from tests.e2ee import commitment


async def test_racing_rotations_give_one_winner(target: Target) -> None:
    admin = await target.register("admin")
    owners = [await target.register(f"owner{i}") for i in range(3)]
    # The first owner makes the room; the other owners and the admin (role member) are
    # added through the endpoint.
    created = await target.http.post(
        "/channels",
        json={
            "name_enc": "cm9vbQ==",
            "key_commitment": commitment(os.urandom(32)),
            "private": True,
        },
        headers=owners[0].auth,
    )
    assert created.status_code == 201, created.text
    room = created.json()["channel"]["id"]
    roles = [(o, "owner") for o in owners[1:]] + [(admin, "member")]
    for member, role in roles:
        added = await target.http.post(
            "/channels/members",
            json={"channel_id": room, "user_id": member.user_id, "role": role},
            headers=owners[0].auth,
        )
        assert added.status_code == 201, added.text
    devices = [admin, *owners]  # an admin member and three owners
    clients = await target.pool(len(devices))
    for round_ in range(ROUNDS):
        version = round_ + 2
        bodies = [
            {
                "channel_id": room,
                "key_version": version,
                "key_commitment": commitment(os.urandom(32)),
            }
            for _ in devices
        ]
        responses = await burst(
            http.post("/channels/rotate", json=body, headers=device.auth)
            for http, body, device in zip(clients, bodies, devices, strict=True)
        )
        assert_only(responses, {200, 409})
        winners = [i for i, r in enumerate(responses) if r.status_code == 200]
        assert len(winners) == 1, [r.text for r in responses]
        assert all(
            r.json()["code"] == "key_version_conflict" for r in responses if r.status_code == 409
        )
        [row] = await target.rows(
            "SELECT key_version, key_commitment, rekey_required FROM channels WHERE id = :c",
            c=room,
        )
        assert (row[0], row[1], bool(row[2])) == (
            version,
            bodies[winners[0]]["key_commitment"],
            False,
        )
        # The replaced version's commitment was kept, once.
        kept = await target.count(
            "SELECT count(*) FROM channel_key_versions WHERE channel_id = :c AND key_version = :v",
            c=room,
            v=version - 1,
        )
        assert kept == 1
    await target.healthy(admin)
