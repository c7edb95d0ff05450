"""POST /users (admin-only name reservation) and the trusted-only profiles."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import ADMIN_TOKEN, Member, new_invite
from tests.e2ee import DeviceKeys
from tests.http.conftest import assert_error, is_time, is_uuid


async def test_reserve_with_admin_token(client: AsyncTestClient[Any]) -> None:
    response = await client.post(
        "/users", json={"username": " Reserved "}, headers={"X-Admin-Token": ADMIN_TOKEN}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "username", "created_at"}
    assert is_uuid(body["id"])
    assert body["username"] == "reserved"
    assert is_time(body["created_at"])
    # The name is now taken for registration; the invite is not spent by the refusal.
    invite = await new_invite(client)
    register = {
        "username": "reserved",
        "password": "password1",
        "public_key": DeviceKeys().public_b64,
        "invite_token": invite,
    }
    assert_error(await client.post("/auth/register", json=register), 409)
    register["username"] = "someone"
    assert (await client.post("/auth/register", json=register)).status_code == 201


async def test_reserve_with_admin_bearer(client: AsyncTestClient[Any], admin: Member) -> None:
    response = await client.post("/users", json={"username": "carol"}, headers=admin.auth)
    assert response.status_code == 201
    assert_error(await client.post("/users", json={"username": "carol"}, headers=admin.auth), 409)


async def test_reserve_needs_admin(client: AsyncTestClient[Any], member: Member) -> None:
    body = {"username": "squatter"}
    assert_error(await client.post("/users", json=body), 401)
    assert_error(await client.post("/users", json=body, headers={"X-Admin-Token": "wrong"}), 401)
    assert_error(await client.post("/users", json=body, headers=member.auth), 403)


async def test_reserve_invalid(client: AsyncTestClient[Any]) -> None:
    headers = {"X-Admin-Token": ADMIN_TOKEN}
    for body in ({"username": "x"}, {}, {"username": 3}, {"username": "ok", "extra": True}):
        assert_error(await client.post("/users", json=body, headers=headers), 400)


async def test_profiles(client: AsyncTestClient[Any], admin: Member, member: Member) -> None:
    response = await client.get("/users/profiles", headers=member.auth)
    assert response.status_code == 200
    assert response.json() == {"profiles": []}

    response = await client.post("/users/profiles", json={"name_enc": "Qm9i"}, headers=member.auth)
    assert response.status_code == 201
    assert response.json() == {"status": "ok"}
    # Setting it again replaces it.
    await client.post("/users/profiles", json={"name_enc": "Qm9iIDI="}, headers=member.auth)
    await client.post("/users/profiles", json={"name_enc": "QWRh"}, headers=admin.auth)

    profiles = (await client.get("/users/profiles", headers=admin.auth)).json()["profiles"]
    by_user = {p["user_id"]: p for p in profiles}
    assert set(by_user) == {admin.user_id, member.user_id}
    assert by_user[member.user_id]["name_enc"] == "Qm9iIDI="
    assert set(by_user[member.user_id]) == {"user_id", "name_enc", "updated_at"}
    assert is_time(by_user[member.user_id]["updated_at"])


async def test_profiles_invalid(client: AsyncTestClient[Any], member: Member) -> None:
    for body in ({}, {"name_enc": ""}, {"name_enc": 1}, {"name_enc": "a", "x": 1}):
        assert_error(await client.post("/users/profiles", json=body, headers=member.auth), 400)
    assert_error(await client.get("/users/profiles"), 401)
    assert_error(await client.post("/users/profiles", json={"name_enc": "a"}), 401)


async def test_profiles_refuse_untrusted(client: AsyncTestClient[Any], untrusted: Member) -> None:
    assert_error(await client.get("/users/profiles", headers=untrusted.auth), 401)
    body = {"name_enc": "TWFs"}
    assert_error(await client.post("/users/profiles", json=body, headers=untrusted.auth), 401)
