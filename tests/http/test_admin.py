"""/admin/*: credentials for every endpoint, users, flags, invites, settings, the log."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.models import Device, Session, User, UserProfile
from dialtone.services.context import ServerContext
from tests.conftest import ADMIN_TOKEN, Member, Register
from tests.e2ee import DeviceKeys
from tests.http.conftest import assert_error, is_time, is_uuid

OP = {"X-Admin-Token": ADMIN_TOKEN}


@pytest.fixture
async def moderator(client: AsyncTestClient[Any], admin: Member, register: Register) -> Member:
    person = await register("mod")
    response = await client.patch(
        f"/admin/users/{person.user_id}", json={"is_moderator": True}, headers=OP
    )
    assert response.status_code == 200, response.text
    return person


@pytest.fixture
async def carol(member: Member, register: Register) -> Member:
    """An ordinary member the staff act on (``member`` is the one refused)."""
    return await register("carol")


async def make_ban(client: AsyncTestClient[Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/admin/bans", json=body, headers=OP)
    assert response.status_code == 201, response.text
    value: dict[str, Any] = response.json()
    return value


async def make_invite(client: AsyncTestClient[Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/server/invites", json=body or None, headers=OP)
    assert response.status_code == 201, response.text
    value: dict[str, Any] = response.json()
    return value


# ---------------------------------------------------------------- credentials

ENDPOINTS: list[tuple[str, str, Any, str, int]] = [
    ("GET", "/admin/stats", None, "admin", 200),
    ("GET", "/admin/users", None, "staff", 200),
    ("PATCH", "/admin/users/{target}", {"is_trusted": False}, "admin", 200),
    ("POST", "/admin/users/{target}/kick", None, "staff", 200),
    ("DELETE", "/admin/users/{target}/sessions", None, "admin", 200),
    ("DELETE", "/admin/users/{target}", None, "admin", 200),
    ("DELETE", "/admin/users/{target}/messages", None, "staff", 200),
    ("POST", "/admin/bans", {"user_id": "{target}"}, "staff", 201),
    ("GET", "/admin/bans", None, "staff", 200),
    ("DELETE", "/admin/bans/{ban}", None, "staff", 200),
    ("GET", "/admin/invites", None, "admin", 200),
    ("DELETE", "/admin/invites/{invite}", None, "admin", 200),
    ("GET", "/admin/log", None, "admin", 200),
    ("GET", "/admin/settings", None, "admin", 200),
    ("PUT", "/admin/settings", {"server_title": "Ours"}, "admin", 200),
    ("POST", "/admin/announce", {"text": "maintenance at noon"}, "admin", 200),
    ("POST", "/admin/drain", None, "admin", 200),
    ("POST", "/server/invites", None, "admin", 201),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "level", "ok"), ENDPOINTS, ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS]
)
async def test_credentials(
    client: AsyncTestClient[Any],
    admin: Member,
    moderator: Member,
    member: Member,
    carol: Member,
    method: str,
    path: str,
    body: Any,
    level: str,
    ok: int,
) -> None:
    """401 without or with wrong credentials, 403 for a member (and for a moderator on
    admin-only endpoints); the least-privileged allowed role succeeds."""
    ban = await make_ban(client, address="198.51.100.0/24")
    invite = await make_invite(client)
    url = path.format(target=carol.user_id, ban=ban["id"], invite=invite["id"])
    if isinstance(body, dict):
        body = {
            key: value.format(target=carol.user_id) if isinstance(value, str) else value
            for key, value in body.items()
        }

    async def call(headers: dict[str, str]) -> Any:
        return await client.request(method, url, json=body, headers=headers)

    assert assert_error(await call({}), 401)["code"] == "unauthorized"
    wrong = await call({"X-Admin-Token": "not-the-admin-token-at-all"})
    assert assert_error(wrong, 401)["code"] == "invalid_admin_token"
    assert assert_error(await call({"Authorization": "Bearer nonsense"}), 401)
    assert assert_error(await call(member.auth), 403)["code"] in {"not_admin", "not_moderator"}
    if level == "admin":
        assert assert_error(await call(moderator.auth), 403)["code"] == "not_admin"
        response = await call(admin.auth)
    else:
        response = await call(moderator.auth)
    assert response.status_code == ok, response.text


async def test_member_endpoints_need_a_session(client: AsyncTestClient[Any], admin: Member) -> None:
    for method, url in [
        ("DELETE", "/channels/messages?message_id=x"),
        ("GET", "/channels/messages/deleted?channel_id=x"),
        ("GET", "/moderators"),
    ]:
        assert_error(await client.request(method, url), 401)
    info = await client.get("/server/info")
    assert info.status_code == 200
    assert info.json() == {
        "server_title": "Dialtone",
        "welcome_message": "",
        "registration_open": True,
        "version": info.json()["version"],
        "directory_key_commitment": None,  # added by issue 15 (additive)
    }


# ---------------------------------------------------------------- roles


async def test_flags_in_auth_responses_and_moderators_list(
    client: AsyncTestClient[Any], admin: Member, moderator: Member, member: Member
) -> None:
    login = await client.post(
        "/auth/login",
        json={"username": "mod", "password": "password1", "public_key": moderator.keys.public_b64},
    )
    assert login.status_code == 200
    assert login.json()["is_moderator"] is True
    assert login.json()["is_admin"] is False
    listed = await client.get("/moderators", headers=member.auth)
    assert listed.status_code == 200
    assert listed.json() == {
        "moderators": [
            {"user_id": admin.user_id, "is_admin": True, "is_moderator": False},
            {"user_id": moderator.user_id, "is_admin": False, "is_moderator": True},
        ]
    }


async def test_last_unlocked_admin_stays(
    client: AsyncTestClient[Any], admin: Member, register: Register
) -> None:
    for change in ({"is_admin": False}, {"is_locked": True}):
        response = await client.patch(f"/admin/users/{admin.user_id}", json=change, headers=OP)
        assert assert_error(response, 409)["code"] == "last_admin"
    assert (
        assert_error(await client.delete(f"/admin/users/{admin.user_id}", headers=OP), 409)["code"]
        == "last_admin"
    )
    assert (
        assert_error(
            await client.post("/admin/bans", json={"user_id": admin.user_id}, headers=OP), 409
        )["code"]
        == "last_admin"
    )
    # With a second admin, one may step down.
    second = await register("second")
    promoted = await client.patch(
        f"/admin/users/{second.user_id}", json={"is_admin": True}, headers=admin.auth
    )
    assert promoted.status_code == 200
    assert promoted.json()["is_admin"] is True
    demoted = await client.patch(
        f"/admin/users/{admin.user_id}", json={"is_admin": False}, headers=second.auth
    )
    assert demoted.status_code == 200, demoted.text


async def test_two_admins_demoting_each_other_at_once_leave_one(
    client: AsyncTestClient[Any],
    admin: Member,
    register: Register,
    db: async_sessionmaker[AsyncSession],
) -> None:
    second = await register("second")
    await client.patch(f"/admin/users/{second.user_id}", json={"is_admin": True}, headers=OP)
    first, other = await asyncio.gather(
        client.patch(f"/admin/users/{admin.user_id}", json={"is_admin": False}, headers=OP),
        client.patch(f"/admin/users/{second.user_id}", json={"is_admin": False}, headers=OP),
    )
    assert sorted([first.status_code, other.status_code]) == [200, 409]
    async with db() as session:
        admins = await session.scalar(
            select(func.count()).select_from(User).where(User.is_admin.is_(True))
        )
    assert admins == 1


async def test_moderator_cannot_touch_admins_or_moderators(
    client: AsyncTestClient[Any], admin: Member, moderator: Member, register: Register
) -> None:
    other_mod = await register("othermod")
    await client.patch(f"/admin/users/{other_mod.user_id}", json={"is_moderator": True}, headers=OP)
    for target in (admin.user_id, other_mod.user_id):
        for method, url, body in [
            ("POST", f"/admin/users/{target}/kick", None),
            ("POST", "/admin/bans", {"user_id": target}),
        ]:
            response = await client.request(method, url, json=body, headers=moderator.auth)
            assert assert_error(response, 403)["code"] == "not_admin"
    # Another admin may.
    assert (
        await client.post(f"/admin/users/{other_mod.user_id}/kick", headers=admin.auth)
    ).status_code == 200


async def test_unknown_user_is_404_and_bad_body_400(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for method, url, body in [
        ("PATCH", f"/admin/users/{missing}", {"is_locked": True}),
        ("POST", f"/admin/users/{missing}/kick", None),
        ("DELETE", f"/admin/users/{missing}/sessions", None),
        ("DELETE", f"/admin/users/{missing}", None),
        ("DELETE", f"/admin/bans/{missing}", None),
        ("DELETE", f"/admin/invites/{missing}", None),
    ]:
        assert_error(await client.request(method, url, json=body, headers=OP), 404)
    for body in ({}, {"is_admin": "yes"}, {"username": "x"}):
        response = await client.patch(f"/admin/users/{admin.user_id}", json=body, headers=OP)
        assert_error(response, 400)


# ---------------------------------------------------------------- users


async def test_user_list_filters_and_pages(
    client: AsyncTestClient[Any], admin: Member, moderator: Member, member: Member, carol: Member
) -> None:
    await client.patch(f"/admin/users/{carol.user_id}", json={"is_locked": True}, headers=OP)
    response = await client.get("/admin/users", headers=OP)
    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    users = {u["id"]: u for u in body["users"]}
    assert set(users) == {admin.user_id, moderator.user_id, member.user_id, carol.user_id}
    row = users[member.user_id]
    assert set(row) == {
        "id",
        "created_at",
        "is_admin",
        "is_moderator",
        "is_trusted",
        "is_locked",
        "device_count",
        "online",
        "last_seen_at",
        "storage_bytes",  # issue 17
    }
    assert row["storage_bytes"] == 0
    assert "username" not in str(body)
    assert "bob" not in str(body)
    assert row["device_count"] == 1
    assert row["online"] is False
    assert is_time(row["last_seen_at"])

    async def ids(query: str) -> set[str]:
        got = await client.get(f"/admin/users?{query}", headers=OP)
        assert got.status_code == 200, got.text
        return {u["id"] for u in got.json()["users"]}

    assert await ids("locked=true") == {carol.user_id}
    assert await ids("role=admin") == {admin.user_id}
    assert await ids("role=moderator") == {moderator.user_id}
    assert await ids("role=member") == {member.user_id, carol.user_id}
    assert await ids("online=true") == set()
    assert len(await ids("online=false")) == 4
    assert_error(await client.get("/admin/users?role=king", headers=OP), 400)
    assert_error(await client.get("/admin/users?locked=maybe", headers=OP), 400)
    assert_error(await client.get("/admin/users?cursor=garbage!", headers=OP), 400)
    assert_error(await client.get("/admin/users?limit=0", headers=OP), 400)

    # Pages of two cover everyone exactly once, in the same order.
    seen: list[str] = []
    cursor = None
    while True:
        url = "/admin/users?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=OP)).json()
        seen += [u["id"] for u in page["users"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [u["id"] for u in body["users"]]


async def test_lock_ends_sessions_and_refuses_login(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    response = await client.patch(
        f"/admin/users/{member.user_id}", json={"is_locked": True}, headers=admin.auth
    )
    assert response.status_code == 200
    assert response.json()["is_locked"] is True
    assert_error(await client.get("/channels", headers=member.auth), 401)
    login = await client.post(
        "/auth/login",
        json={"username": "bob", "password": "password1", "public_key": member.keys.public_b64},
    )
    assert assert_error(login, 403)["code"] == "account_locked"
    wrong = await client.post(
        "/auth/login",
        json={"username": "bob", "password": "wrong-pass1", "public_key": member.keys.public_b64},
    )
    assert_error(wrong, 401)  # the lock is told only to whoever knows the password
    await client.patch(f"/admin/users/{member.user_id}", json={"is_locked": False}, headers=OP)
    again = await client.post(
        "/auth/login",
        json={"username": "bob", "password": "password1", "public_key": member.keys.public_b64},
    )
    assert again.status_code == 200


async def test_end_sessions_logs_every_device_out(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    second = await client.post(
        "/auth/login",
        json={"username": "bob", "password": "password1", "public_key": DeviceKeys().public_b64},
    )
    token = second.json()["token"]
    assert (await client.delete(f"/admin/users/{member.user_id}/sessions", headers=OP)).json() == {
        "status": "ok"
    }
    for auth in (member.auth, {"Authorization": f"Bearer {token}"}):
        assert_error(await client.get("/channels", headers=auth), 401)


async def test_delete_user_removes_account_keeps_messages_unless_asked(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    carol: Member,
    channel_id: str,
    db: async_sessionmaker[AsyncSession],
) -> None:
    from tests.http.conftest import store_message

    await client.post("/users/profiles", json={"name_enc": "Ym9i"}, headers=member.auth)
    kept = await store_message(db, channel_id, member, "Ym9iIHNheXM=")
    gone = await store_message(db, channel_id, carol, "Y2Fyb2wgc2F5cw==")
    response = await client.delete(f"/admin/users/{member.user_id}", headers=OP)
    assert response.status_code == 200
    assert response.json() == {"deleted": 0}
    response = await client.delete(f"/admin/users/{carol.user_id}?messages=delete", headers=OP)
    assert response.json() == {"deleted": 1}
    assert_error(await client.delete(f"/admin/users/{carol.user_id}?messages=all", headers=OP), 400)
    async with db() as session:
        for model in (User, Device, Session, UserProfile):
            owner = model.id if model is User else model.user_id  # type: ignore[attr-defined]
            rows = await session.scalar(
                select(func.count())
                .select_from(model)
                .where(owner.in_([member.user_id, carol.user_id]))
            )
            assert rows == 0, model
    history = await client.get(f"/channels/messages?channel_id={channel_id}", headers=admin.auth)
    assert [m["id"] for m in history.json()["messages"]] == [kept]
    assert gone not in history.text


async def test_stats(
    client: AsyncTestClient[Any], admin: Member, member: Member, channel_id: str
) -> None:
    response = await client.get("/admin/stats", headers=OP)
    body = response.json()
    assert body["users"] == 2
    assert body["channels"] == 1
    assert body["messages"] == 0
    assert body["online_users"] == 0
    assert body["sockets"] == 0
    assert body["voice_rooms"] == []
    assert body["uptime_seconds"] >= 0
    assert body["version"]
    assert len(body["nodes"]) == 1
    assert body["bans"] == 0
    assert body["messages_last_minute"] == 0


async def test_stats_count_the_last_minutes_messages(
    client: AsyncTestClient[Any],
    admin: Member,
    channel_id: str,
    db: async_sessionmaker[AsyncSession],
) -> None:
    from tests.http.conftest import store_message

    for body in ("b25l", "dHdv", "dGhyZWU="):
        await store_message(db, channel_id, admin, body)
    assert (await client.get("/admin/stats", headers=OP)).json()["messages_last_minute"] == 3
    ctx: ServerContext = client.app.state.ctx
    real = ctx.clock
    ctx.clock = lambda: real() + timedelta(minutes=2)
    try:
        stats = (await client.get("/admin/stats", headers=OP)).json()
    finally:
        ctx.clock = real
    assert stats["messages_last_minute"] == 0
    assert stats["messages"] == 3


# ---------------------------------------------------------------- invites


async def test_invite_options_states_and_revocation(
    client: AsyncTestClient[Any], admin: Member, register: Register
) -> None:
    plain = await make_invite(client)
    assert plain["max_uses"] == 1
    assert is_uuid(plain["id"])
    shared = await make_invite(client, ttl_seconds=3600, max_uses=2)
    revoked = await make_invite(client)
    assert shared["max_uses"] == 2
    for bad in ({"ttl_seconds": 5}, {"max_uses": 0}, {"uses": 3}, {"max_uses": "two"}):
        response = await client.post("/server/invites", json=bad, headers=OP)
        assert assert_error(response, 400)["code"] == "invalid_invite"
    assert (await client.delete(f"/admin/invites/{revoked['id']}", headers=OP)).status_code == 200

    keys = DeviceKeys()
    for name in ("dave", "erin"):
        body = {
            "username": name,
            "password": "password1",
            "public_key": keys.public_b64,
            "invite_token": shared["token"],
        }
        assert (await client.post("/auth/register", json=body)).status_code == 201
    body["username"], body["invite_token"] = "frank", shared["token"]
    spent = await client.post("/auth/register", json=body)
    assert assert_error(spent, 410)["code"] == "invite_gone"
    body["invite_token"] = revoked["token"]
    assert_error(await client.post("/auth/register", json=body), 410)

    listed = (await client.get("/admin/invites", headers=OP)).json()
    states = {i["id"]: i for i in listed["invites"]}
    assert states[shared["id"]]["state"] == "consumed"
    assert states[shared["id"]]["uses"] == 2
    assert states[revoked["id"]]["state"] == "revoked"
    assert states[plain["id"]]["state"] == "active"
    assert all("token" not in i for i in listed["invites"])
    assert plain["token"] not in str(listed)
    assert shared["token"] not in str(listed)
    only = (await client.get("/admin/invites?state=active", headers=OP)).json()["invites"]
    assert plain["id"] in {i["id"] for i in only}
    assert revoked["id"] not in {i["id"] for i in only}
    assert_error(await client.get("/admin/invites?state=weird", headers=OP), 400)


async def test_concurrent_registrations_never_overspend_an_invite(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    shared = await make_invite(client, max_uses=2)

    async def join(name: str) -> int:
        body = {
            "username": name,
            "password": "password1",
            "public_key": DeviceKeys().public_b64,
            "invite_token": shared["token"],
        }
        return (await client.post("/auth/register", json=body)).status_code

    statuses = await asyncio.gather(*(join(f"racer{i}") for i in range(5)))
    assert sorted(statuses) == [201, 201, 410, 410, 410]


# ---------------------------------------------------------------- settings


async def test_settings_partial_update_and_validation(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    before = (await client.get("/admin/settings", headers=OP)).json()["settings"]
    assert before["registration_open"] is True
    assert before["log_retention_days"] == 90
    response = await client.put(
        "/admin/settings",
        json={"server_title": "Night Shift", "welcome_message": "Be kind."},
        headers=admin.auth,
    )
    assert response.status_code == 200, response.text
    after = response.json()["settings"]
    assert after == {**before, "server_title": "Night Shift", "welcome_message": "Be kind."}
    info = (await client.get("/server/info")).json()
    assert info["server_title"] == "Night Shift"
    assert info["welcome_message"] == "Be kind."
    for bad, code in [
        ({"no_such_setting": 1}, "unknown_setting"),
        ({"registration_open": "no"}, "invalid_setting"),
        ({"log_retention_days": 0}, "invalid_setting"),
        ({"login_burst": 1.5}, "invalid_setting"),
        ({}, "invalid_setting"),
    ]:
        assert (
            assert_error(await client.put("/admin/settings", json=bad, headers=OP), 400)["code"]
            == code
        )
    assert_error(await client.put("/admin/settings", json=[1, 2], headers=OP), 400)
    # Nothing of a refused update was stored.
    assert (await client.get("/admin/settings", headers=OP)).json()["settings"] == after


async def test_closed_registration_refuses_even_a_valid_invite(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    invite = await make_invite(client)
    await client.put("/admin/settings", json={"registration_open": False}, headers=OP)
    body = {
        "username": "late",
        "password": "password1",
        "public_key": DeviceKeys().public_b64,
        "invite_token": invite["token"],
    }
    response = await client.post("/auth/register", json=body)
    assert assert_error(response, 403)["code"] == "registration_closed"
    assert (await client.get("/server/info")).json()["registration_open"] is False
    await client.put("/admin/settings", json={"registration_open": True}, headers=OP)
    assert (await client.post("/auth/register", json=body)).status_code == 201


async def test_rate_limit_settings_apply_live(client: AsyncTestClient[Any], admin: Member) -> None:
    ctx: ServerContext = client.app.state.ctx
    await client.put(
        "/admin/settings", json={"login_burst": 2, "invite_ttl_seconds": 7200}, headers=OP
    )
    assert ctx.limiter.policies["login_user"].capacity == 2
    assert ctx.settings.invite_ttl == 7200
    invite = await make_invite(client)
    from datetime import UTC, datetime

    expires = datetime.fromisoformat(invite["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - datetime.now(UTC) - timedelta(hours=2)) < timedelta(minutes=1)


# ---------------------------------------------------------------- log


async def test_log_records_actions_by_id_and_pages(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    await client.post(
        "/auth/login",
        json={"username": "bob", "password": "wrong-pass1", "public_key": member.keys.public_b64},
    )
    await client.post(f"/admin/users/{member.user_id}/kick", headers=admin.auth)
    await client.patch(f"/admin/users/{member.user_id}", json={"is_trusted": False}, headers=OP)
    response = await client.get("/admin/log", headers=OP)
    assert response.status_code == 200
    entries = response.json()["entries"]
    topics = [e["topic"] for e in entries]
    assert topics[:3] == ["flags", "kick", "login_failed"]
    assert {"register", "invite_created"} <= set(topics)
    kick = entries[1]
    assert set(kick) == {
        "id",
        "at",
        "level",
        "topic",
        "user_id",
        "device_id",
        "actor_id",
        "address",
        "message",
    }
    assert kick["user_id"] == member.user_id
    assert kick["actor_id"] == admin.user_id
    assert entries[0]["actor_id"] == "operator"
    assert entries[0]["message"] == "is_trusted=false"
    assert entries[2]["user_id"] == member.user_id

    only = (await client.get("/admin/log?topic=kick", headers=OP)).json()["entries"]
    assert [e["topic"] for e in only] == ["kick"]
    mine = (await client.get(f"/admin/log?user_id={member.user_id}", headers=OP)).json()
    assert all(member.user_id in (e["user_id"], e["actor_id"]) for e in mine["entries"])
    future = "2999-01-01T00:00:00Z"
    assert (await client.get(f"/admin/log?after={future}", headers=OP)).json()["entries"] == []
    assert_error(await client.get("/admin/log?topic=gossip", headers=OP), 400)
    assert_error(await client.get("/admin/log?after=yesterday", headers=OP), 400)

    seen: list[int] = []
    cursor = None
    while True:
        url = "/admin/log?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=OP)).json()
        seen += [e["id"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in entries]


async def test_log_retention_purges_old_entries(
    client: AsyncTestClient[Any], admin: Member, db: async_sessionmaker[AsyncSession]
) -> None:
    from dialtone.services.maintenance import purge_expired

    ctx: ServerContext = client.app.state.ctx
    await client.put("/admin/settings", json={"log_retention_days": 1}, headers=OP)
    assert (await client.get("/admin/log", headers=OP)).json()["entries"]
    real = ctx.clock
    ctx.clock = lambda: real() + timedelta(days=2)
    try:
        await purge_expired(db, ctx)  # the app's own loop runs in the test client's thread
    finally:
        ctx.clock = real
    assert (await client.get("/admin/log", headers=OP)).json()["entries"] == []


async def test_concurrent_settings_updates_all_land(
    client: AsyncTestClient[Any], admin: Member, db: async_sessionmaker[AsyncSession]
) -> None:
    changes = [
        {"server_title": "One"},
        {"welcome_message": "Two"},
        {"invite_max_uses": 3},
        {"server_title": "One"},
        {"log_retention_days": 30},
    ]
    responses = await asyncio.gather(
        *(client.put("/admin/settings", json=body, headers=OP) for body in changes)
    )
    assert [r.status_code for r in responses] == [200] * len(changes)
    expected = {
        "server_title": "One",
        "welcome_message": "Two",
        "invite_max_uses": 3,
        "log_retention_days": 30,
    }
    values = (await client.get("/admin/settings", headers=OP)).json()["settings"]
    assert {k: values[k] for k in expected} == expected
    # And what is stored agrees (what every node loads).
    from dialtone.services.maintenance import refresh_admin_state

    ctx: ServerContext = client.app.state.ctx
    fresh = ServerContext.from_settings(ctx.settings)
    await refresh_admin_state(db, fresh)
    assert {k: fresh.live_settings.values[k] for k in expected} == expected


async def test_message_retention_prunes_old_messages(
    client: AsyncTestClient[Any],
    admin: Member,
    channel_id: str,
    db: async_sessionmaker[AsyncSession],
) -> None:
    from dialtone.services.maintenance import purge_expired
    from tests.http.conftest import store_message

    await store_message(db, channel_id, admin, "b2xk")
    ctx: ServerContext = client.app.state.ctx
    real = ctx.clock
    ctx.clock = lambda: real() + timedelta(days=3)
    try:
        await purge_expired(db, ctx)  # retention 0 = forever: nothing goes
        assert (await client.get("/admin/stats", headers=OP)).json()["messages"] == 1
        await client.put("/admin/settings", json={"message_retention_days": 2}, headers=OP)
        await purge_expired(db, ctx)
    finally:
        ctx.clock = real
    assert (await client.get("/admin/stats", headers=OP)).json()["messages"] == 0


async def test_device_revocation_is_logged(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    await client.delete(f"/devices/{member.device_id}", headers=member.auth)
    entries = (await client.get("/admin/log?topic=device_revoked", headers=OP)).json()["entries"]
    assert [(e["user_id"], e["device_id"]) for e in entries] == [(member.user_id, member.device_id)]


async def test_concurrent_unban_and_delete_answer_404_to_the_loser(
    client: AsyncTestClient[Any], admin: Member, member: Member, carol: Member
) -> None:
    ban = await make_ban(client, user_id=member.user_id)
    lifted = await asyncio.gather(
        *(client.delete(f"/admin/bans/{ban['id']}", headers=OP) for _ in range(3))
    )
    assert sorted(r.status_code for r in lifted) == [200, 404, 404]
    deleted = await asyncio.gather(
        *(client.delete(f"/admin/users/{carol.user_id}", headers=OP) for _ in range(3))
    )
    assert sorted(r.status_code for r in deleted) == [200, 404, 404]
    assert all(r.json()["code"] == "user_not_found" for r in deleted if r.status_code == 404)
