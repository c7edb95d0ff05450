"""Surrounding whitespace is trimmed from ciphertext names; a value empty after trimming is
refused with 400, as the reference server does."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import Member
from tests.http.conftest import assert_error

BLANK = ["   ", "\t\n", " \u00a0 "]


async def test_channel_names_are_trimmed(client: AsyncTestClient[Any], admin: Member) -> None:
    created = await client.post("/channels", json={"name_enc": "  Y2g=\n"}, headers=admin.auth)
    assert created.status_code == 201, created.text
    channel = created.json()["channel"]
    assert channel["name_enc"] == "Y2g="
    renamed = await client.patch(
        "/channels", json={"channel_id": channel["id"], "name_enc": "\tbmV3 "}, headers=admin.auth
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["channel"]["name_enc"] == "bmV3"
    listed = (await client.get("/channels", headers=admin.auth)).json()["channels"]
    assert [c["name_enc"] for c in listed] == ["bmV3"]


@pytest.mark.parametrize("blank", BLANK)
async def test_blank_channel_names_are_refused(
    client: AsyncTestClient[Any], admin: Member, blank: str
) -> None:
    body = assert_error(
        await client.post("/channels", json={"name_enc": blank}, headers=admin.auth), 400
    )
    assert body["code"] == "invalid_input"
    created = await client.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
    channel_id = created.json()["channel"]["id"]
    assert_error(
        await client.patch(
            "/channels", json={"channel_id": channel_id, "name_enc": blank}, headers=admin.auth
        ),
        400,
    )
    listed = (await client.get("/channels", headers=admin.auth)).json()["channels"]
    assert [c["name_enc"] for c in listed] == ["Y2g="]


async def test_profile_names_are_trimmed_and_blank_ones_refused(
    client: AsyncTestClient[Any], member: Member
) -> None:
    stored = await client.post(
        "/users/profiles", json={"name_enc": " bmFtZQ== "}, headers=member.auth
    )
    assert stored.status_code == 201, stored.text
    for blank in BLANK:
        assert_error(
            await client.post("/users/profiles", json={"name_enc": blank}, headers=member.auth),
            400,
        )
    profiles = (await client.get("/users/profiles", headers=member.auth)).json()["profiles"]
    assert [p["name_enc"] for p in profiles if p["user_id"] == member.user_id] == ["bmFtZQ=="]
