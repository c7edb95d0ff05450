from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import Member


async def test_health(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.text == "ok"


async def test_register_then_list_channels(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    response = await client.post("/channels", json={"name_enc": "abc"}, headers=admin.auth)
    assert response.status_code == 201
    response = await client.get("/channels", headers=member.auth)
    assert response.status_code == 200
    assert [c["name_enc"] for c in response.json()["channels"]] == ["abc"]
