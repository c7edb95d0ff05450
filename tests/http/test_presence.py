"""POST /presence: online flags (nobody has a socket here) and admin flags."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import Member
from tests.http.conftest import assert_error


async def test_presence(client: AsyncTestClient[Any], admin: Member, member: Member) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    body = {"user_ids": [admin.user_id, member.user_id, unknown, member.user_id]}
    response = await client.post("/presence", json=body, headers=member.auth)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "statuses": {admin.user_id: False, member.user_id: False, unknown: False},
        "admins": {admin.user_id: True, member.user_id: False, unknown: False},
    }
    empty = await client.post("/presence", json={"user_ids": []}, headers=member.auth)
    assert empty.json() == {"statuses": {}, "admins": {}}


async def test_presence_failures(client: AsyncTestClient[Any], member: Member) -> None:
    assert_error(await client.post("/presence", json={"user_ids": []}), 401)
    for body in (
        {},
        {"user_ids": "abc"},
        {"user_ids": [1]},
        {"user_ids": ["a\u0000b"]},
        {"user_ids": ["x"] * 5001},
        {"user_ids": [], "more": 1},
    ):
        assert_error(await client.post("/presence", json=body, headers=member.auth), 400)
