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
        "private": False,
        "direct": False,
        "image_file_id": None,
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
        "private": False,
        "direct": False,
        "image_file_id": None,
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


async def test_presence_changes_arrive_as_events(
    live: LiveServer, admin: Member, member: Member
) -> None:
    watcher = await live.connect(admin)
    phone = await live.connect(member)
    assert await next_of(watcher, "presence.updated") == {
        "type": "presence.updated",
        "sender": member.user_id,
        "online": True,
    }
    # A further socket, or device, of a user already online changes nothing; carol's
    # arrival after it is the next presence event the watcher hears.
    laptop = await live.connect(await live.second_device(member))
    carol = await live.register("carol")
    carol_ws = await live.connect(carol)
    assert await next_of(watcher, "presence.updated") == {
        "type": "presence.updated",
        "sender": carol.user_id,
        "online": True,
    }
    # carol heard of nobody coming online (everyone was before her); bob's sockets heard
    # of carol but never of bob himself.
    await laptop.close()
    await phone.close()
    assert await next_of(watcher, "presence.updated") == {
        "type": "presence.updated",
        "sender": member.user_id,
        "online": False,
    }
    assert await next_of(carol_ws, "presence.updated") == {
        "type": "presence.updated",
        "sender": member.user_id,
        "online": False,
    }
    await carol_ws.close()
    gone = await next_of(watcher, "presence.updated")
    assert (gone["sender"], gone["online"]) == (carol.user_id, False)
    # What the events said is what POST /presence answers.
    statuses = await live.http.post(
        "/presence",
        json={"user_ids": [member.user_id, carol.user_id, admin.user_id]},
        headers=admin.auth,
    )
    assert statuses.json()["statuses"] == {
        member.user_id: False,
        carol.user_id: False,
        admin.user_id: True,
    }


async def test_a_user_does_not_hear_of_their_own_presence(
    live: LiveServer, admin: Member, member: Member
) -> None:
    phone = await live.connect(member)
    second = await live.connect(member)
    await live.connect(admin)  # the next presence event bob's sockets hear
    for ws in (phone, second):
        event = await next_of(ws, "presence.updated")
        assert (event["sender"], event["online"]) == (admin.user_id, True)


async def test_role_changes_arrive_as_events(
    live: LiveServer, admin: Member, member: Member
) -> None:
    bob = await live.connect(member)
    watcher = await live.connect(admin)
    url = f"/admin/users/{member.user_id}"
    promoted = await live.http.patch(url, json={"is_moderator": True}, headers=admin.auth)
    assert promoted.status_code == 200, promoted.text
    expected = {
        "type": "user.role.updated",
        "sender": member.user_id,
        "is_admin": False,
        "is_moderator": True,
    }
    assert await next_of(bob, "user.role.updated") == expected
    assert await next_of(watcher, "user.role.updated") == expected
    # No change of role (the same flag again, or trust only): no event. The next one
    # heard is the admin flag given by the operator.
    for unchanged in ({"is_moderator": True}, {"is_trusted": False}, {"is_trusted": True}):
        answer = await live.http.patch(url, json=unchanged, headers=OP)
        assert answer.status_code == 200, answer.text
    refused = await live.http.patch(url, json={"is_admin": True}, headers=member.auth)
    assert refused.status_code == 403
    made_admin = await live.http.patch(
        url, json={"is_admin": True, "is_moderator": False}, headers=OP
    )
    assert made_admin.status_code == 200, made_admin.text
    assert await next_of(bob, "user.role.updated") == {
        **expected,
        "is_admin": True,
        "is_moderator": False,
    }
    # With bob an admin, the first admin may be demoted; demoting bob then would leave
    # no admin: refused (409), and announced to nobody (bob hears the demotion, then the
    # promotion that follows the refusal, nothing between).
    demoted = await live.http.patch(
        f"/admin/users/{admin.user_id}", json={"is_admin": False}, headers=OP
    )
    assert demoted.status_code == 200, demoted.text
    event = await next_of(watcher, "user.role.updated")
    assert (event["sender"], event["is_admin"]) == (member.user_id, True)
    event = await next_of(watcher, "user.role.updated")
    assert (event["sender"], event["is_admin"]) == (admin.user_id, False)
    refused_last = await live.http.patch(url, json={"is_admin": False}, headers=OP)
    assert refused_last.status_code == 409
    back = await live.http.patch(
        f"/admin/users/{admin.user_id}", json={"is_admin": True}, headers=OP
    )
    assert back.status_code == 200
    event = await next_of(bob, "user.role.updated")
    assert (event["sender"], event["is_admin"]) == (admin.user_id, False)
    event = await next_of(bob, "user.role.updated")
    assert (event["sender"], event["is_admin"]) == (admin.user_id, True)
