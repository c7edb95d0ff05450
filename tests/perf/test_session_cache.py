"""The bearer-token cache: a revoked or changed session is never served from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import delete, update

from dialtone.app import create_app
from dialtone.db.models import Session, User
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.security.tokens import token_hash
from dialtone.services.context import Caller, ServerContext
from dialtone.services.session_cache import SessionCache
from tests.conftest import Member, make_settings


async def no_events(_: object) -> None:
    return None


def cache_of(client: AsyncTestClient[Any]) -> SessionCache:
    cache = client.app.state.ctx.session_cache
    assert isinstance(cache, SessionCache)
    return cache


def ctx_of(client: AsyncTestClient[Any]) -> ServerContext:
    ctx: ServerContext = client.app.state.ctx
    return ctx


def in_app(client: AsyncTestClient[Any], action: Callable[[UnitOfWork], Awaitable[None]]) -> None:
    """Run ``action`` in one transaction on the app's own engine, on the app's event loop."""

    async def run() -> None:
        async with UnitOfWork(client.app.state.sessionmaker, no_events) as uow:
            await action(uow)

    client.blocking_portal.call(run)


async def channels_status(client: AsyncTestClient[Any], member: Member) -> int:
    response = await client.get("/channels", headers=member.auth)
    return response.status_code


async def test_cached_token_is_served_without_query(
    client: AsyncTestClient[Any], member: Member
) -> None:
    assert await channels_status(client, member) == 200
    assert token_hash(member.token) in cache_of(client)._entries
    assert await channels_status(client, member) == 200


async def test_logout_revokes_a_cached_token_at_once(
    client: AsyncTestClient[Any], member: Member
) -> None:
    assert await channels_status(client, member) == 200
    assert len(cache_of(client)) >= 1
    response = await client.post("/auth/logout", headers=member.auth)
    assert response.status_code == 200
    assert await channels_status(client, member) == 401


async def test_logout_everywhere_revokes_every_cached_token(
    client: AsyncTestClient[Any], member: Member
) -> None:
    response = await client.post(
        "/auth/login",
        json={
            "username": member.username,
            "password": member.password,
            "public_key": member.keys.public_b64,
        },
    )
    assert response.status_code == 200
    second = {"Authorization": f"Bearer {response.json()['token']}"}
    assert await channels_status(client, member) == 200
    assert (await client.get("/channels", headers=second)).status_code == 200
    response = await client.post("/auth/logout?all=1", headers=member.auth)
    assert response.status_code == 200
    assert await channels_status(client, member) == 401
    assert (await client.get("/channels", headers=second)).status_code == 401


async def test_revoking_a_device_ends_its_cached_token_at_once(
    client: AsyncTestClient[Any], member: Member
) -> None:
    """The device revocation path emits no SessionsRevoked: DeviceService tells the cache."""
    assert await channels_status(client, member) == 200
    response = await client.delete(f"/devices/{member.device_id}", headers=member.auth)
    assert response.status_code == 204
    assert await channels_status(client, member) == 401


async def test_changed_flags_are_seen_at_once(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    def make_admin(flag: bool) -> Callable[[UnitOfWork], Awaitable[None]]:
        async def change(uow: UnitOfWork) -> None:
            # What a service that changes flags does: tell the cache, then write.
            ctx_of(client).sessions_changing(uow)
            await uow.session.execute(
                update(User).where(User.id == member.user_id).values(is_admin=flag)
            )

        return change

    response = await client.post("/server/invites", headers=member.auth)
    assert response.status_code == 403
    in_app(client, make_admin(True))
    response = await client.post("/server/invites", headers=member.auth)
    assert response.status_code == 201
    in_app(client, make_admin(False))
    response = await client.post("/server/invites", headers=member.auth)
    assert response.status_code == 403


async def test_no_entry_is_stored_while_a_revocation_is_uncommitted(
    client: AsyncTestClient[Any], member: Member
) -> None:
    cache = cache_of(client)
    assert await channels_status(client, member) == 200
    epochs: list[int] = []

    async def revoke(uow: UnitOfWork) -> None:
        ctx_of(client).sessions_changing(uow)
        await uow.session.execute(delete(Session).where(Session.user_id == member.user_id))
        assert len(cache) == 0
        # A lookup meanwhile reads the old, still committed row: it must not be kept.
        caller = Caller(member.user_id, member.device_id, False, True, token_hash(member.token))
        far = datetime.now(UTC) + timedelta(days=1)
        cache.put(caller.token_hash, caller, far, cache.epoch)
        assert len(cache) == 0
        epochs.append(cache.epoch)

    in_app(client, revoke)
    assert cache.epoch > epochs[0]
    assert await channels_status(client, member) == 401


async def test_a_rolled_back_revocation_reopens_the_cache(
    client: AsyncTestClient[Any], member: Member
) -> None:
    cache = cache_of(client)

    async def revoke_then_fail(uow: UnitOfWork) -> None:
        ctx_of(client).sessions_changing(uow)
        await uow.session.execute(delete(Session).where(Session.user_id == member.user_id))
        raise LookupError("abandon the transaction")

    with pytest.raises(LookupError):
        in_app(client, revoke_then_fail)
    assert await channels_status(client, member) == 200
    assert token_hash(member.token) in cache._entries


def test_lookup_read_under_an_older_epoch_is_not_stored() -> None:
    cache = SessionCache()
    caller = Caller("u", "d", False, True, "h")
    far = datetime.now(UTC) + timedelta(days=1)
    epoch = cache.epoch
    cache.invalidate()
    cache.put("h", caller, far, epoch)
    assert cache.get("h", datetime.now(UTC)) is None
    cache.put("h", caller, far, cache.epoch)
    assert cache.get("h", datetime.now(UTC)) is caller


def test_entries_end_with_the_session_or_the_ttl() -> None:
    clock = [100.0]
    cache = SessionCache(ttl=5.0, monotonic=lambda: clock[0])
    caller = Caller("u", "d", False, True, "h")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cache.put("h", caller, now + timedelta(seconds=60), cache.epoch)
    assert cache.get("h", now) is caller
    assert cache.get("h", now + timedelta(seconds=60)) is None  # the session expired
    cache.put("h", caller, now + timedelta(seconds=60), cache.epoch)
    clock[0] += 5.0
    assert cache.get("h", now) is None  # the entry is too old


def test_cache_is_bounded() -> None:
    cache = SessionCache(max_entries=3)
    far = datetime.now(UTC) + timedelta(days=1)
    for index in range(10):
        cache.put(str(index), Caller("u", "d", False, True, str(index)), far, cache.epoch)
        assert len(cache) <= 3


def test_no_cache_with_several_nodes(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, redis_url="redis://127.0.0.1:6379/15")
    assert create_app(settings).state.ctx.session_cache is None
