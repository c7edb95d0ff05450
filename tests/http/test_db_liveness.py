"""Pooled PostgreSQL connections that the server ended are replaced before use.

The pool no longer pings on every checkout (three round trips with asyncpg); a
connection whose socket PostgreSQL closed is recognised by asyncpg and replaced at
checkout (db/engine.py). A client must not see an error for it: neither on the
history fast path nor on an ordinary Litestar request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import Member

pytestmark = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


async def end_other_connections(db_url: str) -> int:
    """pg_terminate_backend every other connection to this database, waiting until each
    backend has exited (so its socket is closed before this returns)."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
                    "FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def test_ended_connections_are_replaced_without_an_error(
    client: AsyncTestClient[Any], admin: Member, channel_id: str, db_url: str
) -> None:
    history = f"/channels/messages?channel_id={channel_id}&limit=5"
    # Several requests at once, so the pool holds several connections.
    warm = await asyncio.gather(*(client.get(history, headers=admin.auth) for _ in range(6)))
    assert {r.status_code for r in warm} == {200}
    assert await end_other_connections(db_url) >= 2
    for _ in range(3):
        page = await client.get(history, headers=admin.auth)
        assert page.status_code == 200, page.text
        channels = await client.get("/channels", headers=admin.auth)
        assert channels.status_code == 200, channels.text
    # And again after connections were replaced while requests run at once.
    assert await end_other_connections(db_url) >= 1
    again = await asyncio.gather(
        *(client.get(p, headers=admin.auth) for p in [history, "/channels"] * 4)
    )
    assert [r.status_code for r in again] == [200] * 8
