"""Issue 15's live side: commitments reach every socket (channel.updated,
server.info.updated), presence changes arrive as events (presence.updated), and a user
whose roles change hears it (user.role.updated)."""

from __future__ import annotations

import os

from tests.conftest import ADMIN_TOKEN, Member
from tests.e2ee import commitment
from tests.realtime.conftest import LiveServer, next_of, only, quiet

OP = {"X-Admin-Token": ADMIN_TOKEN}


async def test_commitments_reach_every_socket(
    live: LiveServer, admin: Member, member: Member
) -> None:
    bob = await live.connect(member)
    value = commitment(os.urandom(32))
    created = await live.http.post(
        "/channels", json={"name_enc": "Y2g=", "key_commitment": value}, headers=admin.auth
    )
    channel = created.json()["channel"]["id"]
    assert await next_of(bob, "channel.updated") == {
        "type": "channel.updated",
        "channel_id": channel,
        "channel_name_enc": "Y2g=",
        "key_commitment": value,
        "key_version": 1,
    }
    older = await live.create_channel(admin, "b2xk")
    await next_of(bob, "channel.updated")
    later = commitment(os.urandom(32))
    put = await live.http.put(
        "/channels/commitment",
        json={"channel_id": older, "key_commitment": later},
        headers=admin.auth,
    )
    assert put.status_code == 200, put.text
    assert await next_of(bob, "channel.updated") == {
        "type": "channel.updated",
        "channel_id": older,
        "channel_name_enc": "b2xk",
        "key_commitment": later,
        "key_version": 1,
    }
    # A refused PUT (already set) announces nothing.
    again = await live.http.put(
        "/channels/commitment",
        json={"channel_id": older, "key_commitment": later},
        headers=admin.auth,
    )
    assert again.status_code == 409
    assert only(await quiet(bob), "channel.updated") == []

    directory = commitment(os.urandom(32))
    set_ = await live.http.put(
        "/directory/commitment", json={"key_commitment": directory}, headers=admin.auth
    )
    assert set_.status_code == 200, set_.text
    assert await next_of(bob, "server.info.updated") == {
        "type": "server.info.updated",
        "server_title": "Dialtone",
        "welcome_message": "",
        "registration_open": True,
        "directory_key_commitment": directory,
    }
    # Later settings changes carry it too.
    await live.http.put("/admin/settings", json={"server_title": "Den"}, headers=OP)
    updated = await next_of(bob, "server.info.updated")
    assert (updated["server_title"], updated["directory_key_commitment"]) == ("Den", directory)
