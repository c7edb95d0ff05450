"""Several devices of one user write the key backup with the same version at once."""

from __future__ import annotations

import base64
import os

from tests.concurrency.conftest import CLIENTS, ROUNDS, Target, assert_only, burst


def blob() -> str:
    return base64.b64encode(os.urandom(48)).decode("ascii")


async def test_simultaneous_backup_writes_of_one_version(target: Target) -> None:
    admin = await target.register("admin")
    member = await target.register("member")
    clients = await target.pool(CLIENTS)
    for version in range(ROUNDS):
        bodies = [blob() for _ in clients]
        responses = await burst(
            http.put("/keys/backup", json={"backup": body, "version": version}, headers=member.auth)
            for http, body in zip(clients, bodies, strict=True)
        )
        assert_only(responses, {200, 409})
        winners = [(r, b) for r, b in zip(responses, bodies, strict=True) if r.status_code == 200]
        assert len(winners) == 1, [r.status_code for r in responses]
        assert winners[0][0].json() == {"version": version + 1}
        for r in responses:
            if r.status_code == 409:
                assert r.json()["code"] == "backup_conflict"
                assert r.json()["version"] == version + 1
        rows = await target.rows(
            "SELECT backup, version FROM key_backups WHERE user_id = :u", u=member.user_id
        )
        assert [tuple(row) for row in rows] == [(winners[0][1], version + 1)]
    await target.healthy(admin)
