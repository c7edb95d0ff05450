"""Requests give their pooled connection back, including the ones refused with 401."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import Member


async def test_unauthorized_requests_return_their_connection(
    client: AsyncTestClient[Any], member: Member
) -> None:
    pool = client.app.state.engine.pool
    for _ in range(3):
        response = await client.get("/channels", headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401
        assert pool.checkedout() == 0
    response = await client.get("/channels", headers=member.auth)
    assert response.status_code == 200
    assert pool.checkedout() == 0
