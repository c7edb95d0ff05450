"""Channels CRUD: anyone signed in reads, only admins write."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import Member
from tests.http.conftest import assert_error, is_time, is_uuid


async def test_channel_lifecycle(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    response = await client.post("/channels", json={"name_enc": "Z2VuZXJhbA=="}, headers=admin.auth)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"channel"}
    channel = body["channel"]
    # key_commitment and key_version: added by issue 15; image_file_id by issue 17; the
    # rest by issue 16 (additive).
    assert set(channel) == {
        "id",
        "name_enc",
        "created_by",
        "created_at",
        "key_commitment",
        "key_version",
        "private",
        "direct",
        "role",
        "peer_user_id",
        "rekey_required",
        "image_file_id",
    }
    assert channel["image_file_id"] is None
    assert channel["private"] is False
    assert channel["direct"] is False
    assert channel["key_commitment"] is None
    assert channel["key_version"] == 1
    assert is_uuid(channel["id"])
    assert channel["name_enc"] == "Z2VuZXJhbA=="
    assert channel["created_by"] == admin.user_id
    assert is_time(channel["created_at"])

    listing = await client.get("/channels", headers=member.auth)
    assert listing.status_code == 200
    assert listing.json() == {"channels": [channel]}

    patch = {"channel_id": channel["id"], "name_enc": "cmFuZG9t"}
    response = await client.patch("/channels", json=patch, headers=admin.auth)
    assert response.status_code == 200
    assert response.json() == {"channel": {**channel, "name_enc": "cmFuZG9t"}}

    response = await client.delete(f"/channels?channel_id={channel['id']}", headers=admin.auth)
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get("/channels", headers=member.auth)).json() == {"channels": []}


async def test_channel_list_oldest_first(client: AsyncTestClient[Any], admin: Member) -> None:
    names = [f"bmFtZS{i}" for i in range(3)]
    for name in names:
        await client.post("/channels", json={"name_enc": name}, headers=admin.auth)
    listing = (await client.get("/channels", headers=admin.auth)).json()["channels"]
    assert [c["name_enc"] for c in listing] == names


async def test_channel_writes_need_admin(
    client: AsyncTestClient[Any], member: Member, channel_id: str
) -> None:
    assert_error(await client.get("/channels"), 401)
    assert_error(await client.post("/channels", json={"name_enc": "eA=="}), 401)
    assert_error(
        await client.post("/channels", json={"name_enc": "eA=="}, headers=member.auth), 403
    )
    patch = {"channel_id": channel_id, "name_enc": "eQ=="}
    assert_error(await client.patch("/channels", json=patch, headers=member.auth), 403)
    url = f"/channels?channel_id={channel_id}"
    assert_error(await client.delete(url, headers=member.auth), 403)
    assert_error(await client.delete(url), 401)


async def test_channel_unknown_and_invalid(
    client: AsyncTestClient[Any], admin: Member, channel_id: str
) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    patch = {"channel_id": missing, "name_enc": "eQ=="}
    assert_error(await client.patch("/channels", json=patch, headers=admin.auth), 404)
    assert_error(await client.delete(f"/channels?channel_id={missing}", headers=admin.auth), 404)
    assert_error(await client.delete("/channels", headers=admin.auth), 400)
    assert_error(await client.delete("/channels?channel_id=", headers=admin.auth), 400)
    for body in ({}, {"name_enc": ""}, {"name_enc": None}, {"name_enc": "a", "topic": "b"}):
        assert_error(await client.post("/channels", json=body, headers=admin.auth), 400)
    for body in ({"channel_id": channel_id}, {"name_enc": "eA=="}):
        assert_error(await client.patch("/channels", json=body, headers=admin.auth), 400)
    # A deleted channel is gone for every verb.
    await client.delete(f"/channels?channel_id={channel_id}", headers=admin.auth)
    assert_error(await client.delete(f"/channels?channel_id={channel_id}", headers=admin.auth), 404)
