"""POST /server/invites: operator token or an admin's bearer token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.models import Invite
from dialtone.security import tokens
from tests.conftest import ADMIN_TOKEN, Member
from tests.e2ee import DeviceKeys
from tests.http.conftest import assert_error, is_time


def registration(invite: str, name: str) -> dict[str, str]:
    return {
        "username": name,
        "password": "password1",
        "public_key": DeviceKeys().public_b64,
        "invite_token": invite,
    }


async def test_invite_with_admin_token(
    client: AsyncTestClient[Any], db: async_sessionmaker[AsyncSession]
) -> None:
    response = await client.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})
    assert response.status_code == 201, response.text
    body = response.json()
    # id and max_uses are additive (administration); the reference's two fields stay.
    assert set(body) == {"token", "expires_at", "id", "max_uses"}
    assert body["max_uses"] == 1
    assert is_time(body["expires_at"])
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(expires - datetime.now(UTC) - timedelta(hours=24)) < timedelta(minutes=1)
    # Stored hashed only.
    async with db() as session:
        stored = (await session.execute(select(Invite.token_hash))).scalars().all()
    assert stored == [tokens.token_hash(body["token"])]
    assert body["token"] not in stored


async def test_invite_with_admin_bearer(client: AsyncTestClient[Any], admin: Member) -> None:
    response = await client.post("/server/invites", headers=admin.auth)
    assert response.status_code == 201
    token = response.json()["token"]
    assert (await client.post("/auth/register", json=registration(token, "erin"))).is_success
    # Single use.
    assert_error(await client.post("/auth/register", json=registration(token, "frank")), 410)


async def test_invite_refusals(client: AsyncTestClient[Any], member: Member) -> None:
    assert_error(await client.post("/server/invites"), 401)
    assert_error(await client.post("/server/invites", headers={"X-Admin-Token": "wrong"}), 401)
    assert_error(await client.post("/server/invites", headers={"X-Admin-Token": ""}), 401)
    # A valid bearer does not rescue a wrong admin token.
    bad_token = {"X-Admin-Token": "wrong", **member.auth}
    assert_error(await client.post("/server/invites", headers=bad_token), 401)
    assert_error(await client.post("/server/invites", headers=member.auth), 403)
    bogus = {"Authorization": "Bearer nonsense"}
    assert_error(await client.post("/server/invites", headers=bogus), 401)


async def test_expired_invite(client: AsyncTestClient[Any], admin: Member) -> None:
    token = (await client.post("/server/invites", headers=admin.auth)).json()["token"]
    ctx = client.app.state.ctx
    real_clock = ctx.clock
    ctx.clock = lambda: real_clock() + timedelta(hours=24, seconds=1)
    try:
        response = await client.post("/auth/register", json=registration(token, "late"))
    finally:
        ctx.clock = real_clock
    assert_error(response, 410)
