"""POST /auth/register, /auth/login, /auth/logout and the bearer token."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.config import Settings
from dialtone.db.models import Device, Invite, User
from dialtone.security import tokens
from dialtone.security.passwords import DEFAULT_MEMORY_KIB, DEFAULT_TIME_COST
from tests.conftest import ADMIN_TOKEN, Member, app_client, make_settings, new_invite
from tests.e2ee import DeviceKeys
from tests.http.conftest import assert_error, is_time, is_uuid

AUTH_FIELDS = {
    "token",
    "user_id",
    "device_id",
    "expires_at",
    "username",
    "device_public_key",
    "is_admin",
    "is_trusted",
    "is_moderator",  # additive (administration)
}


def register_body(invite: str, username: str = "alice", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "username": username,
        "password": "password1",
        "public_key": DeviceKeys().public_b64,
        "invite_token": invite,
    }
    body.update(overrides)
    return body


async def count(db: async_sessionmaker[AsyncSession], model: Any) -> int:
    async with db() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def invite_spent(db: async_sessionmaker[AsyncSession], invite: str) -> bool:
    async with db() as session:
        row = await session.get(Invite, tokens.token_hash(invite))
        assert row is not None
        return row.consumed_at is not None


async def test_register_shape_and_first_user_is_admin(client: AsyncTestClient[Any]) -> None:
    keys = DeviceKeys()
    invite = await new_invite(client)
    response = await client.post(
        "/auth/register", json=register_body(invite, "  Alice ", public_key=keys.public_b64)
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == AUTH_FIELDS
    assert is_uuid(body["user_id"])
    assert is_uuid(body["device_id"])
    assert is_time(body["expires_at"])
    assert body["username"] == "alice"
    assert body["device_public_key"] == keys.public_b64
    assert body["is_admin"] is True
    assert body["is_trusted"] is True
    assert len(body["token"]) >= 32

    second = await client.post(
        "/auth/register", json=register_body(await new_invite(client), "b0b")
    )
    assert second.status_code == 201
    assert second.json()["is_admin"] is False
    assert second.json()["is_trusted"] is True


async def test_username_is_stored_only_as_hash(
    client: AsyncTestClient[Any], db: async_sessionmaker[AsyncSession]
) -> None:
    invite = await new_invite(client)
    assert (
        await client.post("/auth/register", json=register_body(invite, "SecretName"))
    ).is_success
    async with db() as session:
        users = (await session.execute(select(User))).scalars().all()
    assert len(users) == 1
    assert "secretname" not in users[0].username_hash
    assert users[0].password_hash is not None
    assert users[0].password_hash.startswith("$argon2id$")


async def test_register_invalid_inputs(
    client: AsyncTestClient[Any], db: async_sessionmaker[AsyncSession]
) -> None:
    invite = await new_invite(client)
    bad = [
        {"username": "a"},  # too short
        {"username": "x" * 21},  # too long
        {"password": "short1"},
        {"password": "onlyletters"},
        {"password": "123456789"},
        {"public_key": "not base64!"},
        {"public_key": "AAAA"},  # base64 but not 32 bytes
        {"public_key": "A" * 43 + "="},  # the all-zero point
        {"public_key": DeviceKeys().public_b64.rstrip("=")},  # unpadded
        {"public_key": base64.urlsafe_b64encode(b"\xfb" * 32).decode()},  # not standard
    ]
    for overrides in bad:
        response = await client.post("/auth/register", json=register_body(invite, **overrides))
        assert_error(response, 400)
    assert await count(db, User) == 0
    assert not await invite_spent(db, invite)
    for missing in ("username", "password", "public_key", "invite_token"):
        body = register_body(invite)
        del body[missing]
        assert_error(await client.post("/auth/register", json=body), 400)
    assert_error(await client.post("/auth/register", json=register_body(invite, extra=1)), 400)
    assert_error(await client.post("/auth/register", json=register_body(invite, username=5)), 400)
    # The invite survived every failure and still works.
    response = await client.post("/auth/register", json=register_body(invite))
    assert response.status_code == 201, response.text


async def test_register_unknown_expired_and_used_invites(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    assert_error(await client.post("/auth/register", json=register_body("nope" * 8)), 404)
    assert_error(await client.post("/auth/register", json=register_body("")), 400)
    invite = await new_invite(client)
    assert (await client.post("/auth/register", json=register_body(invite))).status_code == 201
    assert_error(await client.post("/auth/register", json=register_body(invite, "carol")), 410)


async def test_register_expired_invite_is_gone(
    client: AsyncTestClient[Any], db: async_sessionmaker[AsyncSession]
) -> None:
    from datetime import timedelta

    from dialtone.services.context import ServerContext

    app_ctx: ServerContext = client.app.state.ctx
    invite = await new_invite(client)
    real_clock = app_ctx.clock
    app_ctx.clock = lambda: real_clock() + timedelta(hours=25)
    try:
        response = await client.post("/auth/register", json=register_body(invite))
    finally:
        app_ctx.clock = real_clock
    assert_error(response, 410)
    assert await count(db, User) == 0


async def test_tiny_invite_ttl(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, invite_ttl=1)
    async with app_client(settings) as client:
        invite = await new_invite(client)
        # Two seconds later, on the server's injected clock (no sleeping).
        ctx = client.app.state.ctx
        real_clock = ctx.clock
        ctx.clock = lambda: real_clock() + timedelta(seconds=2)
        assert_error(await client.post("/auth/register", json=register_body(invite)), 410)


async def test_duplicate_username_keeps_invite(
    client: AsyncTestClient[Any], admin: Member, db: async_sessionmaker[AsyncSession]
) -> None:
    invite = await new_invite(client)
    before = await count(db, User)
    body = assert_error(
        await client.post("/auth/register", json=register_body(invite, " ADMIN ")), 409
    )
    assert "taken" in body["error"]
    assert await count(db, User) == before
    assert not await invite_spent(db, invite)
    assert (await client.post("/auth/register", json=register_body(invite, "dave"))).is_success
    assert await invite_spent(db, invite)


async def test_concurrent_registrations_one_invite(
    client: AsyncTestClient[Any], db: async_sessionmaker[AsyncSession]
) -> None:
    invite = await new_invite(client)
    responses = await asyncio.gather(
        *(client.post("/auth/register", json=register_body(invite, f"racer{i}")) for i in range(4))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, [r.text for r in responses]
    assert all(s in (409, 410) for s in statuses if s != 201), statuses
    assert await count(db, User) == 1
    assert await count(db, Device) == 1


async def test_login_devices_new_and_reused(
    client: AsyncTestClient[Any], member: Member, db: async_sessionmaker[AsyncSession]
) -> None:
    body = {"username": " BOB ", "password": member.password, "public_key": member.keys.public_b64}
    response = await client.post("/auth/login", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert set(out) == AUTH_FIELDS
    assert out["device_id"] == member.device_id
    assert out["user_id"] == member.user_id
    assert out["username"] == "bob"
    assert out["token"] != member.token
    assert is_time(out["expires_at"])

    laptop = DeviceKeys()
    response = await client.post("/auth/login", json={**body, "public_key": laptop.public_b64})
    assert response.status_code == 200
    assert response.json()["device_id"] != member.device_id
    assert response.json()["device_public_key"] == laptop.public_b64
    keys = await client.get(f"/devices/keys?user_id={member.user_id}", headers=member.auth)
    assert len(keys.json()["keys"]) == 2


async def test_login_failures(client: AsyncTestClient[Any], member: Member) -> None:
    key = member.keys.public_b64
    wrong = {"username": "bob", "password": "password2", "public_key": key}
    assert_error(await client.post("/auth/login", json=wrong), 401)
    nobody = {"username": "nobody", "password": "password1", "public_key": key}
    assert_error(await client.post("/auth/login", json=nobody), 401)
    invalid_name = {"username": "x", "password": "password1", "public_key": key}
    assert_error(await client.post("/auth/login", json=invalid_name), 401)
    bad_key = {"username": "bob", "password": "password1", "public_key": "abc"}
    assert_error(await client.post("/auth/login", json=bad_key), 400)
    assert_error(await client.post("/auth/login", json={"username": "bob"}), 400)
    extra = {"username": "bob", "password": "password1", "public_key": key, "x": 1}
    assert_error(await client.post("/auth/login", json=extra), 400)


async def test_reserved_name_cannot_log_in(client: AsyncTestClient[Any], admin: Member) -> None:
    response = await client.post("/users", json={"username": "ghost"}, headers=admin.auth)
    assert response.status_code == 201
    body = {"username": "ghost", "password": "password1", "public_key": DeviceKeys().public_b64}
    assert_error(await client.post("/auth/login", json=body), 401)


async def test_rehash_on_login_when_parameters_change(
    tmp_path: Path, db_url: str, db: async_sessionmaker[AsyncSession]
) -> None:
    # The production cost (the suite's default is a cheap one), then a stronger one.
    settings = make_settings(
        tmp_path, db_url, argon2_memory_kib=DEFAULT_MEMORY_KIB, argon2_time_cost=DEFAULT_TIME_COST
    )
    keys = DeviceKeys()
    async with app_client(settings) as client:
        invite = await new_invite(client)
        body = register_body(invite, "alice", public_key=keys.public_b64)
        assert (await client.post("/auth/register", json=body)).status_code == 201
    async with db() as session:
        old = (await session.execute(select(User.password_hash))).scalar_one()
    assert old is not None
    assert f"m={DEFAULT_MEMORY_KIB},t={DEFAULT_TIME_COST}," in old

    stronger = make_settings(
        tmp_path, db_url, argon2_memory_kib=DEFAULT_MEMORY_KIB, argon2_time_cost=3
    )
    login = {"username": "alice", "password": "password1", "public_key": keys.public_b64}
    async with app_client(stronger) as client:
        assert (await client.post("/auth/login", json=login)).status_code == 200
        async with db() as session:
            new = (await session.execute(select(User.password_hash))).scalar_one()
        assert new is not None
        assert new != old
        assert f"m={DEFAULT_MEMORY_KIB},t=3," in new
        # The new hash still verifies, and is not rehashed again.
        assert (await client.post("/auth/login", json=login)).status_code == 200
        async with db() as session:
            again = (await session.execute(select(User.password_hash))).scalar_one()
        assert again == new


async def test_session_survives_restart(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url)
    async with app_client(settings) as client:
        invite = await new_invite(client)
        response = await client.post("/auth/register", json=register_body(invite))
        token = response.json()["token"]
    async with app_client(settings) as client:
        response = await client.get("/channels", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text


async def test_session_expires(client: AsyncTestClient[Any], member: Member) -> None:
    from datetime import timedelta

    ctx = client.app.state.ctx
    real_clock = ctx.clock
    ctx.clock = lambda: real_clock() + timedelta(hours=24, seconds=1)
    try:
        assert_error(await client.get("/channels", headers=member.auth), 401)
    finally:
        ctx.clock = real_clock
    assert (await client.get("/channels", headers=member.auth)).status_code == 200


async def test_bearer_scheme_is_case_insensitive(
    client: AsyncTestClient[Any], member: Member
) -> None:
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        headers = {"Authorization": f"{scheme} {member.token}"}
        assert (await client.get("/channels", headers=headers)).status_code == 200
    for header in ("Basic abc", f"Token {member.token}", "Bearer", "Bearer ", member.token):
        assert_error(await client.get("/channels", headers={"Authorization": header}), 401)
    assert_error(await client.get("/channels"), 401)
    long = {"Authorization": "Bearer " + "x" * 5000}
    assert_error(await client.get("/channels", headers=long), 401)


async def test_logout_revokes_only_that_token(client: AsyncTestClient[Any], member: Member) -> None:
    login = {"username": "bob", "password": "password1", "public_key": member.keys.public_b64}
    other = (await client.post("/auth/login", json=login)).json()["token"]
    response = await client.post("/auth/logout", headers=member.auth)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert_error(await client.get("/channels", headers=member.auth), 401)
    assert_error(await client.post("/auth/logout", headers=member.auth), 401)
    other_auth = {"Authorization": f"Bearer {other}"}
    assert (await client.get("/channels", headers=other_auth)).status_code == 200


async def test_logout_everywhere(client: AsyncTestClient[Any], member: Member) -> None:
    login = {"username": "bob", "password": "password1", "public_key": member.keys.public_b64}
    other = (await client.post("/auth/login", json=login)).json()["token"]
    response = await client.post("/auth/logout?all=1", headers=member.auth)
    assert response.status_code == 200
    assert_error(await client.get("/channels", headers=member.auth), 401)
    other_auth = {"Authorization": f"Bearer {other}"}
    assert_error(await client.get("/channels", headers=other_auth), 401)


async def test_concurrent_same_name_different_invites(
    client: AsyncTestClient[Any], admin: Member, db: async_sessionmaker[AsyncSession]
) -> None:
    invites = [await new_invite(client) for _ in range(3)]
    responses = await asyncio.gather(
        *(client.post("/auth/register", json=register_body(i, "samename")) for i in invites)
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409], [r.text for r in responses]
    spent = [await invite_spent(db, i) for i in invites]
    assert spent.count(True) == 1


async def test_concurrent_first_registrations_make_one_admin(
    client: AsyncTestClient[Any], db: async_sessionmaker[AsyncSession]
) -> None:
    invites = [await new_invite(client) for _ in range(4)]
    responses = await asyncio.gather(
        *(
            client.post("/auth/register", json=register_body(invite, f"first{n}"))
            for n, invite in enumerate(invites)
        )
    )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    assert [r.json()["is_admin"] for r in responses].count(True) == 1
    async with db() as session:
        admins = (await session.execute(select(func.count()).where(User.is_admin))).scalar_one()
    assert admins == 1


async def test_first_registration_is_admin_after_reserved_names(
    client: AsyncTestClient[Any], db: async_sessionmaker[AsyncSession]
) -> None:
    """Names reserved with POST /users are not accounts: the first to register is admin,
    and with several first registrations at once exactly one is."""
    for name in ("reserved1", "reserved2"):
        reserved = await client.post(
            "/users", json={"username": name}, headers={"X-Admin-Token": ADMIN_TOKEN}
        )
        assert reserved.status_code == 201, reserved.text
    invites = [await new_invite(client) for _ in range(4)]
    responses = await asyncio.gather(
        *(
            client.post("/auth/register", json=register_body(invite, f"first{n}"))
            for n, invite in enumerate(invites)
        )
    )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    assert [r.json()["is_admin"] for r in responses].count(True) == 1
    later = await client.post("/auth/register", json=register_body(await new_invite(client), "z1"))
    assert later.json()["is_admin"] is False
    async with db() as session:
        admins = (await session.execute(select(func.count()).where(User.is_admin))).scalar_one()
    assert admins == 1
