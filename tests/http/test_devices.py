"""POST /devices and GET /devices/keys."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import Member
from tests.e2ee import DeviceKeys
from tests.http.conftest import assert_error, is_time, is_uuid


async def test_add_device(client: AsyncTestClient[Any], member: Member) -> None:
    keys = DeviceKeys()
    body = {"user_id": member.user_id, "public_key": keys.public_b64}
    response = await client.post("/devices", json=body, headers=member.auth)
    assert response.status_code == 201, response.text
    out = response.json()
    assert set(out) == {"id", "user_id", "public_key", "created_at"}
    assert is_uuid(out["id"])
    assert out["id"] != member.device_id
    assert out["user_id"] == member.user_id
    assert out["public_key"] == keys.public_b64
    assert is_time(out["created_at"])
    # The same key again is the same device.
    again = await client.post("/devices", json=body, headers=member.auth)
    assert again.status_code == 201
    assert again.json()["id"] == out["id"]


async def test_add_device_failures(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    key = DeviceKeys().public_b64
    other = {"user_id": admin.user_id, "public_key": key}
    assert_error(await client.post("/devices", json=other, headers=member.auth), 403)
    assert_error(await client.post("/devices", json=other), 401)
    for body in (
        {"user_id": member.user_id, "public_key": "bad"},
        {"user_id": member.user_id},
        {"user_id": member.user_id, "public_key": key, "name": "phone"},
        {"user_id": "", "public_key": key},
    ):
        assert_error(await client.post("/devices", json=body, headers=member.auth), 400)


async def test_device_keys(client: AsyncTestClient[Any], admin: Member, member: Member) -> None:
    response = await client.get(f"/devices/keys?user_id={member.user_id}", headers=member.auth)
    assert response.status_code == 200
    assert response.json() == {
        "user_id": member.user_id,
        "keys": [{"device_id": member.device_id, "public_key": member.keys.public_b64}],
    }
    response = await client.get("/devices/keys?all=1", headers=member.auth)
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert {(k["user_id"], k["device_id"], k["public_key"]) for k in keys} == {
        (admin.user_id, admin.device_id, admin.keys.public_b64),
        (member.user_id, member.device_id, member.keys.public_b64),
    }
    assert set(response.json()) == {"keys"}


async def test_device_keys_failures(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    assert_error(await client.get("/devices/keys", headers=member.auth), 400)
    assert_error(await client.get("/devices/keys?all=0", headers=member.auth), 400)
    assert_error(
        await client.get(f"/devices/keys?user_id={admin.user_id}", headers=member.auth), 403
    )
    assert_error(await client.get("/devices/keys?all=1"), 401)
    assert_error(await client.get("/devices/keys?user_id=%00", headers=member.auth), 400)
    assert_error(await client.get("/devices/keys?user_id=" + "a" * 100, headers=member.auth), 400)
