"""Device list and revocation, logout (one session or all), expiry purge, last-seen."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.engine import create_engine, create_sessionmaker
from dialtone.db.models import ChannelKeyEnvelope, Device, DirectoryKeyEnvelope, Invite, Session
from dialtone.schemas.events import DeviceRevoked, SessionsRevoked
from dialtone.services.maintenance import purge_expired
from tests.conftest import Member, Register, app_client, make_settings, new_invite
from tests.e2ee import DeviceKeys
from tests.security.conftest import record_events


async def second_device(client: AsyncTestClient[Any], member: Member) -> tuple[str, str]:
    """Log the member in from a new key pair: (token, device_id)."""
    keys = DeviceKeys()
    response = await client.post(
        "/auth/login",
        json={
            "username": member.username,
            "password": member.password,
            "public_key": keys.public_b64,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["token"], body["device_id"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def db_session(client: AsyncTestClient[Any]) -> AsyncIterator[AsyncSession]:
    """A session of the test's own: the app's engine lives on the test client's loop."""
    engine = create_engine(client.app.state.ctx.settings)
    try:
        async with create_sessionmaker(engine)() as session:
            yield session
    finally:
        await engine.dispose()


async def count(client: AsyncTestClient[Any], model: Any, *where: Any) -> int:
    async with db_session(client) as session:
        result = await session.execute(select(func.count()).select_from(model).where(*where))
        return int(result.scalar_one())


async def test_list_own_devices(client: AsyncTestClient[Any], member: Member) -> None:
    token, device_id = await second_device(client, member)
    response = await client.get("/devices", headers=member.auth)
    assert response.status_code == 200
    devices = response.json()["devices"]
    assert {d["id"] for d in devices} == {member.device_id, device_id}
    current = [d for d in devices if d["current"]]
    assert [d["id"] for d in current] == [member.device_id]
    for device in devices:
        assert set(device) == {"id", "public_key", "created_at", "last_seen_at", "current"}
        assert device["last_seen_at"].endswith("Z")
    other = await client.get("/devices", headers=bearer(token))
    assert [d["id"] for d in other.json()["devices"] if d["current"]] == [device_id]
    assert (await client.get("/devices")).status_code == 401


async def test_revoke_device_cuts_sessions_and_envelopes(
    client: AsyncTestClient[Any], admin: Member, member: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = record_events(client.app, monkeypatch)
    lost_token, lost_device = await second_device(client, member)
    channel = (
        await client.post("/channels", json={"name_enc": "c2VjcmV0"}, headers=admin.auth)
    ).json()["channel"]["id"]
    envelopes = [
        {
            "device_id": device,
            "sender_device_id": member.device_id,
            "sender_public_key": member.keys.public_b64,
            "envelope": "c2VhbGVk",
        }
        for device in (member.device_id, lost_device)
    ]
    ok = await client.post(
        "/channels/keys", json={"channel_id": channel, "envelopes": envelopes}, headers=member.auth
    )
    assert ok.status_code == 201, ok.text
    ok = await client.post("/directory/keys", json={"envelopes": envelopes}, headers=member.auth)
    assert ok.status_code == 201, ok.text
    assert (await client.get("/channels", headers=bearer(lost_token))).status_code == 200

    response = await client.delete(f"/devices/{lost_device}", headers=member.auth)
    assert response.status_code == 204
    assert response.content == b""

    assert (await client.get("/channels", headers=bearer(lost_token))).status_code == 401
    assert await count(client, Session, Session.device_id == lost_device) == 0
    assert await count(client, ChannelKeyEnvelope, ChannelKeyEnvelope.device_id == lost_device) == 0
    assert (
        await count(client, DirectoryKeyEnvelope, DirectoryKeyEnvelope.device_id == lost_device)
        == 0
    )
    assert await count(client, Device, Device.id == lost_device) == 0
    # The remaining device is untouched.
    assert (
        await client.get("/channels/keys", params={"channel_id": channel}, headers=member.auth)
    ).status_code == 200
    assert events.of(DeviceRevoked) == [DeviceRevoked(sender=member.user_id, device_id=lost_device)]
    keys = (
        await client.get("/devices/keys", params={"user_id": member.user_id}, headers=member.auth)
    ).json()
    assert [k["device_id"] for k in keys["keys"]] == [member.device_id]


async def test_revoke_someone_elses_or_unknown_device_is_404(
    client: AsyncTestClient[Any], admin: Member, member: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = record_events(client.app, monkeypatch)
    response = await client.delete(f"/devices/{admin.device_id}", headers=member.auth)
    assert response.status_code == 404
    assert response.json()["error"]
    assert (await client.delete("/devices/no-such-device", headers=member.auth)).status_code == 404
    assert (await client.delete(f"/devices/{member.device_id}")).status_code == 401
    assert (await client.get("/channels", headers=admin.auth)).status_code == 200
    assert events.of(DeviceRevoked) == []


async def test_revoke_own_current_device(client: AsyncTestClient[Any], member: Member) -> None:
    response = await client.delete(f"/devices/{member.device_id}", headers=member.auth)
    assert response.status_code == 204
    assert (await client.get("/devices", headers=member.auth)).status_code == 401


async def test_logout_one_session(
    client: AsyncTestClient[Any], member: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = record_events(client.app, monkeypatch)
    other_token, _ = await second_device(client, member)
    response = await client.post("/auth/logout", headers=member.auth)
    assert response.status_code == 200
    assert (await client.get("/channels", headers=member.auth)).status_code == 401
    assert (await client.get("/channels", headers=bearer(other_token))).status_code == 200
    [event] = events.of(SessionsRevoked)
    assert event.user_id == member.user_id
    assert event.token_hash is not None


async def test_logout_everywhere(
    client: AsyncTestClient[Any], admin: Member, member: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = record_events(client.app, monkeypatch)
    other_token, _ = await second_device(client, member)
    response = await client.post("/auth/logout", params={"all": "1"}, headers=bearer(other_token))
    assert response.status_code == 200
    for token in (member.token, other_token):
        assert (await client.get("/channels", headers=bearer(token))).status_code == 401
    assert await count(client, Session, Session.user_id == member.user_id) == 0
    assert (await client.get("/channels", headers=admin.auth)).status_code == 200
    assert events.of(SessionsRevoked) == [SessionsRevoked(user_id=member.user_id, token_hash=None)]


async def test_purge_removes_expired_sessions_and_invites(
    client: AsyncTestClient[Any], member: Member
) -> None:
    unused = await new_invite(client)
    assert unused
    ctx = client.app.state.ctx
    later = dataclasses.replace(ctx, clock=lambda: datetime.now(UTC) + timedelta(days=2))
    engine = create_engine(ctx.settings)
    try:
        removed = await purge_expired(create_sessionmaker(engine), later)
    finally:
        await engine.dispose()
    assert removed >= 3  # admin's and member's sessions, the unused invite
    assert await count(client, Session) == 0
    # Spent invites stay (they record who joined); only the unused one went.
    assert await count(client, Invite, Invite.consumed_at.is_(None)) == 0
    assert await count(client, Invite, Invite.consumed_at.is_not(None)) == 2
    assert (await client.get("/channels", headers=member.auth)).status_code == 401


async def test_purge_task_runs_in_the_lifespan(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, session_ttl=1, invite_ttl=1, purge_interval=0.1)
    async with app_client(settings) as client:
        await new_invite(client)
        assert await count(client, Invite) == 1
        deadline = asyncio.get_running_loop().time() + 60  # generous: only a bug fails
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            if await count(client, Invite) == 0:
                break
        assert await count(client, Invite) == 0


async def test_last_seen_is_written_at_most_once_a_minute(
    client: AsyncTestClient[Any], register: Register
) -> None:
    member = await register("erin")
    old = datetime(2020, 1, 1, tzinfo=UTC)

    async def age_device() -> None:
        async with db_session(client) as session:
            await session.execute(
                update(Device).where(Device.id == member.device_id).values(last_seen_at=old)
            )
            await session.commit()

    async def last_seen() -> str:
        devices = (await client.get("/devices", headers=member.auth)).json()["devices"]
        return str(devices[0]["last_seen_at"])

    client.app.state.ctx.seen.pop(member.device_id, None)
    await age_device()
    first = await last_seen()
    assert not first.startswith("2020")
    await age_device()
    # Within the minute: no write, so the aged value shows.
    assert (await last_seen()).startswith("2020")
    client.app.state.ctx.seen[member.device_id] -= 61
    await last_seen()
    assert not (await last_seen()).startswith("2020")


async def test_first_request_after_login_does_not_rewrite_last_seen(
    client: AsyncTestClient[Any], register: Register
) -> None:
    """Login has just written last_seen_at, so the token's first requests skip the write."""
    member = await register("frank")
    old = datetime(2020, 1, 1, tzinfo=UTC)
    async with db_session(client) as session:
        await session.execute(
            update(Device).where(Device.id == member.device_id).values(last_seen_at=old)
        )
        await session.commit()
    devices = (await client.get("/devices", headers=member.auth)).json()["devices"]
    assert str(devices[0]["last_seen_at"]).startswith("2020")
