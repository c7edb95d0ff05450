"""Administration against a real server and real sockets: bans, kicks, locks, deletion
events, announcements, the welcome message, drain."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from dialtone.config import Settings
from dialtone.services.context import ServerContext
from tests.conftest import ADMIN_TOKEN, Member
from tests.e2ee import DeviceKeys
from tests.realtime.conftest import (
    LiveServer,
    chat_frame,
    closed_with,
    next_of,
    recv,
    running_server,
    with_settings,
)

OP = {"X-Admin-Token": ADMIN_TOKEN}


def ctx_of(live: LiveServer) -> ServerContext:
    ctx: ServerContext = live.server.config.app.state.ctx  # type: ignore[attr-defined]
    return ctx


async def refused_handshake(live: LiveServer, headers: dict[str, str]) -> tuple[int, Any]:
    with pytest.raises(InvalidStatus) as refused:
        await connect(live.ws_url, additional_headers=headers, open_timeout=5)
    response = refused.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def test_user_ban_disconnects_and_refuses_everywhere(
    live: LiveServer, admin: Member, member: Member
) -> None:
    ws = await live.connect(member)
    response = await live.http.post(
        "/admin/bans",
        json={"user_id": member.user_id, "comment": "spam", "duration_seconds": 3600},
        headers=admin.auth,
    )
    assert response.status_code == 201, response.text
    ban = response.json()
    assert ban["user_id"] == member.user_id
    assert ban["active"] is True
    assert ban["created_by"] == admin.user_id
    code, reason, _ = await closed_with(ws)
    assert (code, reason) == (1008, "banned")

    assert await refused_handshake(live, member.auth) == (
        403,
        {"error": "banned from this server", "code": "banned"},
    )
    for method, url, body in [
        ("GET", "/channels", None),
        ("POST", "/devices", {"user_id": member.user_id, "public_key": DeviceKeys().public_b64}),
    ]:
        refused = await live.http.request(method, url, json=body, headers=member.auth)
        assert refused.status_code == 403
        assert refused.json()["code"] == "banned"
    login = await live.http.post(
        "/auth/login",
        json={"username": "bob", "password": "password1", "public_key": member.keys.public_b64},
    )
    assert login.status_code == 403
    assert login.json()["code"] == "banned"

    # Lifted: everything works again.
    lifted = await live.http.delete(f"/admin/bans/{ban['id']}", headers=OP)
    assert lifted.status_code == 200
    assert (await live.http.get("/channels", headers=member.auth)).status_code == 200
    await live.connect(member)


async def test_expired_ban_stops_applying_by_itself(
    live: LiveServer, admin: Member, member: Member
) -> None:
    response = await live.http.post(
        "/admin/bans", json={"user_id": member.user_id, "duration_seconds": 60}, headers=OP
    )
    ban_id = response.json()["id"]
    assert (await live.http.get("/channels", headers=member.auth)).status_code == 403
    ctx = ctx_of(live)
    real = ctx.clock
    ctx.clock = lambda: real() + timedelta(seconds=61)
    try:
        assert (await live.http.get("/channels", headers=member.auth)).status_code == 200
        listed = (await live.http.get("/admin/bans", headers=OP)).json()["bans"]
        assert [(b["id"], b["active"]) for b in listed] == [(ban_id, False)]
        assert (await live.http.get("/admin/bans?active=true", headers=OP)).json()["bans"] == []
    finally:
        ctx.clock = real


async def test_address_ban_behind_a_trusted_proxy(settings: Settings) -> None:
    proxied = with_settings(settings, trusted_proxies=("127.0.0.1",))
    async with running_server(proxied) as live:
        admin = await live.register("admin")
        member = await live.register("bob")
        spammer = {"X-Forwarded-For": "203.0.113.7"}
        ws = await live.connect(member, additional_headers={**member.auth, **spammer})
        # A /32 is wider than the default minimum IPv6 ban prefix (/48): allow it.
        wider = await live.http.put("/admin/settings", json={"ban_min_prefix_ipv6": 32}, headers=OP)
        assert wider.status_code == 200, wider.text
        for address in ("203.0.113.0/24", "2001:db8::/32"):
            response = await live.http.post(
                "/admin/bans", json={"address": address, "comment": "botnet"}, headers=admin.auth
            )
            assert response.status_code == 201, response.text
            assert response.json()["address"] == address
        code, reason, _ = await closed_with(ws)
        assert (code, reason) == (1008, "banned")
        for hop in ("203.0.113.99", "2001:db8:77::5", "198.51.100.1, 203.0.113.8"):
            refused = await live.http.get("/server/info", headers={"X-Forwarded-For": hop})
            assert refused.status_code == 403, hop
            assert refused.json() == {"error": "banned from this server", "code": "banned"}
        status, body = await refused_handshake(live, {**member.auth, **spammer})
        assert (status, body["code"]) == (403, "banned")
        # Other addresses, and the operator's token from a banned one, still get through.
        elsewhere = {**member.auth, "X-Forwarded-For": "192.0.2.1"}
        fine = await live.http.get("/channels", headers=elsewhere)
        assert fine.status_code == 200
        operator = await live.http.get("/admin/bans", headers={**OP, **spammer})
        assert operator.status_code == 200
        assert len(operator.json()["bans"]) == 2


async def test_address_ban_ignores_an_untrusted_forwarded_for(
    live: LiveServer, admin: Member, member: Member
) -> None:
    await live.http.post("/admin/bans", json={"address": "203.0.113.0/24"}, headers=OP)
    forging = {**member.auth, "X-Forwarded-For": "203.0.113.7"}
    forged = await live.http.get("/channels", headers=forging)
    assert forged.status_code == 200  # no trusted proxy: the header is not believed
    # The real peer (127.0.0.1) banned: refused, IPv4-mapped or not, but never the operator.
    mapped = await live.http.post("/admin/bans", json={"address": "::ffff:127.0.0.1"}, headers=OP)
    assert mapped.json()["address"] == "127.0.0.1/32"
    assert (await live.http.get("/health")).status_code == 403
    assert (await live.http.get("/channels", headers=admin.auth)).status_code == 403
    listed = await live.http.get("/admin/bans", headers=OP)
    assert listed.status_code == 200
    lifted = await live.http.delete(f"/admin/bans/{mapped.json()['id']}", headers=OP)
    assert lifted.status_code == 200
    assert (await live.http.get("/health")).status_code == 200


async def test_ban_input_is_checked(live: LiveServer, admin: Member, member: Member) -> None:
    far = "2999-01-01T00:00:00Z"
    for body, code in [
        ({}, "invalid_ban"),
        ({"user_id": member.user_id, "address": "10.0.0.1"}, "invalid_ban"),
        ({"address": "not-an-address"}, "invalid_address"),
        ({"address": "10.0.0.0/99"}, "invalid_address"),
        ({"user_id": member.user_id, "expires_at": "2000-01-01T00:00:00Z"}, "invalid_ban"),
        ({"user_id": member.user_id, "expires_at": "tomorrow"}, "invalid_time"),
        (
            {"user_id": member.user_id, "expires_at": far, "duration_seconds": 9},
            "invalid_ban",
        ),
        ({"user_id": member.user_id, "comment": "x" * 501}, "invalid_input"),
        ({"user_id": "no-such-user"}, "user_not_found"),
    ]:
        response = await live.http.post("/admin/bans", json=body, headers=OP)
        assert response.status_code in (400, 404), (body, response.text)
        assert response.json()["code"] == code, body


async def test_kick_and_lock_close_sockets(live: LiveServer, admin: Member, member: Member) -> None:
    ws = await live.connect(member)
    kicked = await live.http.post(f"/admin/users/{member.user_id}/kick", headers=OP)
    assert kicked.status_code == 200
    assert (await closed_with(ws))[:2] == (1008, "kicked")
    again = await live.connect(member)  # a kick is not a ban
    await live.http.patch(f"/admin/users/{member.user_id}", json={"is_locked": True}, headers=OP)
    assert (await closed_with(again))[:2] == (1008, "revoked")
    status, _ = await refused_handshake(live, member.auth)
    assert status == 401


async def test_deletion_events_reach_every_client_and_the_feed_the_absent(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    alice = await live.connect(admin)
    bob = await live.connect(member)
    await bob.send(chat_frame(channel, "c3BhbQ=="))
    sent = await next_of(alice, "channel.message.new")
    await next_of(bob, "channel.message.new")
    await bob.close()
    response = await live.http.delete(
        f"/channels/messages?message_id={sent['message_id']}", headers=admin.auth
    )
    assert response.status_code == 204
    assert await next_of(alice, "channel.message.deleted") == {
        "type": "channel.message.deleted",
        "channel_id": channel,
        "message_ids": [sent["message_id"]],
    }
    # Bob was away: the feed tells him on his return.
    feed = await live.http.get(
        f"/channels/messages/deleted?channel_id={channel}&since={sent['sent_at']}",
        headers=member.auth,
    )
    assert [d["message_id"] for d in feed.json()["deletions"]] == [sent["message_id"]]


async def test_announcement_welcome_and_info_events(
    live: LiveServer, admin: Member, member: Member
) -> None:
    bob = await live.connect(member)
    response = await live.http.post(
        "/admin/announce", json={"text": "Restart at 22:00", "alert": True}, headers=OP
    )
    assert response.status_code == 200
    event = await next_of(bob, "server.announcement")
    assert event["text"] == "Restart at 22:00"
    assert event["alert"] is True
    assert event["plaintext"] is True
    assert_bad = await live.http.post("/admin/announce", json={"text": ""}, headers=OP)
    assert assert_bad.status_code == 400

    await live.http.put(
        "/admin/settings",
        json={"welcome_message": "Hello there", "server_title": "Den"},
        headers=OP,
    )
    assert await next_of(bob, "server.info.updated") == {
        "type": "server.info.updated",
        "server_title": "Den",
        "welcome_message": "Hello there",
        "registration_open": True,
    }
    fresh = await live.connect_raw(admin)
    assert (await recv(fresh))["type"] == "voice.presence.snapshot"
    hello = await recv(fresh)
    assert hello["type"] == "server.hello"
    assert hello["welcome_message"] == "Hello there"
    assert hello["server_title"] == "Den"
    assert hello["is_admin"] is True


async def test_drain_moves_clients_away_and_reports_not_ready(
    live: LiveServer, admin: Member, member: Member
) -> None:
    ready = await live.http.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}
    bob = await live.connect(member)
    response = await live.http.post("/admin/drain", headers=OP)
    assert response.json() == {"status": "draining", "closed_sockets": 1}
    assert (await closed_with(bob))[:2] == (1012, "draining")
    assert (await live.http.get("/health/ready")).status_code == 503
    status, _ = await refused_handshake(live, member.auth)
    assert status == 503
    assert (await live.http.get("/health")).status_code == 200  # alive, just not ready


async def test_stats_count_sockets_and_voice(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    bob = await live.connect(member)
    await bob.send(json.dumps({"type": "voice_join", "channel_id": channel}))
    await next_of(bob, "voice_roster")
    stats = (await live.http.get("/admin/stats", headers=OP)).json()
    assert stats["online_users"] == 1
    assert stats["sockets"] == 1
    assert stats["voice_rooms"] == [{"channel_id": channel, "members": 1}]
    online = (await live.http.get("/admin/users?online=true", headers=OP)).json()["users"]
    assert [u["id"] for u in online] == [member.user_id]
