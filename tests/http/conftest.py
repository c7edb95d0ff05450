"""HTTP fixtures: direct database access for set-up, role fixtures beyond admin/member."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from dialtone.db.models import User
from tests.conftest import Member, Register

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def is_uuid(value: Any) -> bool:
    return isinstance(value, str) and UUID_RE.match(value) is not None


def is_time(value: Any) -> bool:
    return isinstance(value, str) and TIME_RE.match(value) is not None


def assert_error(response: Any, status: int) -> dict[str, Any]:
    """A JSON error body with a readable message, and the expected status."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str)
    assert body["error"]
    return body


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the test database, for set-up and checks a client cannot do."""
    engine = create_async_engine(db_url)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


@pytest.fixture
async def untrusted(
    admin: Member, register: Register, db: async_sessionmaker[AsyncSession]
) -> Member:
    """A registered user whose trust an operator has withdrawn."""
    person = await register("mallory")
    async with db.begin() as session:
        await session.execute(
            update(User).where(User.id == person.user_id).values(is_trusted=False)
        )
    return person


@pytest.fixture
async def channel_id(client: AsyncTestClient[Any], admin: Member) -> str:
    response = await client.post("/channels", json={"name_enc": "Z2VuZXJhbA=="}, headers=admin.auth)
    assert response.status_code == 201, response.text
    value: str = response.json()["channel"]["id"]
    return value


async def store_message(
    db: async_sessionmaker[AsyncSession],
    channel: str,
    sender: Member,
    body: str,
    sender_name_enc: str = "bmFtZQ==",
) -> str:
    """Persist a message through the service, as the WebSocket gateway does."""
    from dialtone.db.unit_of_work import UnitOfWork
    from dialtone.services.context import Caller, ServerContext
    from dialtone.services.messages import MessageService
    from tests.conftest import make_settings

    async def no_events(_: object) -> None:
        return None

    caller = Caller(
        user_id=sender.user_id,
        device_id=sender.device_id,
        is_admin=sender.is_admin,
        is_trusted=True,
        token_hash="",
    )
    ctx = ServerContext.from_settings(make_settings(Path("."), "sqlite://"))
    async with UnitOfWork(db, no_events) as uow:
        message = await MessageService(uow, ctx).post(caller, channel, body, sender_name_enc)
    return message.message_id
