"""Accounts and devices: one name registered at once, one login from many tabs."""

from __future__ import annotations

import secrets

from tests.concurrency.conftest import ROUNDS, Target, assert_only, burst, statuses
from tests.conftest import ADMIN_TOKEN
from tests.e2ee import DeviceKeys


def register_body(name: str, invite: str) -> dict[str, str]:
    return {
        "username": name,
        "password": "password1",
        "public_key": DeviceKeys().public_b64,
        "invite_token": invite,
    }


async def test_one_name_registered_from_several_clients(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for _ in range(ROUNDS):
        name = f"n{secrets.token_hex(4)}"
        invites = [await target.invite() for _ in clients]
        responses = await burst(
            http.post("/auth/register", json=register_body(name, invite))
            for http, invite in zip(clients, invites, strict=True)
        )
        assert_only(responses, {201, 409})
        assert statuses(responses).count(201) == 1
        assert all(r.json()["code"] == "username_taken" for r in responses if r.status_code == 409)
        # The losers' invites were not spent: their transactions rolled back.
        spent = await target.count("SELECT count(*) FROM invites WHERE consumed_at IS NOT NULL")
        unspent = [i for i, r in zip(invites, responses, strict=True) if r.status_code == 409]
        retry = await clients[0].post(
            "/auth/register", json=register_body(f"n{secrets.token_hex(4)}", unspent[0])
        )
        assert retry.status_code == 201, retry.text
        assert (
            await target.count("SELECT count(*) FROM invites WHERE consumed_at IS NOT NULL")
            == spent + 1
        )
    assert await target.count("SELECT count(*) FROM users WHERE is_admin") == 1
    await target.healthy(admin)


async def test_one_invite_redeemed_from_several_clients(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for _ in range(ROUNDS):
        invite = await target.invite()
        before = await target.count("SELECT count(*) FROM users")
        responses = await burst(
            http.post("/auth/register", json=register_body(f"n{secrets.token_hex(4)}", invite))
            for http in clients
        )
        assert_only(responses, {201, 410})
        assert statuses(responses).count(201) == 1
        assert await target.count("SELECT count(*) FROM users") == before + 1
    await target.healthy(admin)


async def test_one_name_reserved_from_several_clients(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for _ in range(ROUNDS):
        name = f"r{secrets.token_hex(4)}"
        responses = await burst(
            http.post("/users", json={"username": name}, headers={"X-Admin-Token": ADMIN_TOKEN})
            for http in clients
        )
        assert_only(responses, {201, 409})
        assert statuses(responses).count(201) == 1
    await target.healthy(admin)


async def test_first_login_of_a_new_key_from_several_tabs(target: Target) -> None:
    """Every tab gets 200 and the same new device; one device row."""
    admin = await target.register("admin")
    member = await target.register("bob")
    clients = await target.pool()
    for _ in range(ROUNDS):
        key = DeviceKeys().public_b64
        body = {"username": "bob", "password": member.password, "public_key": key}
        responses = await burst(http.post("/auth/login", json=body) for http in clients)
        assert_only(responses, {200})
        assert len({r.json()["device_id"] for r in responses}) == 1
        count = await target.count(
            "SELECT count(*) FROM devices WHERE user_id = :u AND public_key = :k",
            u=member.user_id,
            k=key,
        )
        assert count == 1
    await target.healthy(admin)


async def test_one_device_added_from_several_clients(target: Target) -> None:
    admin = await target.register("admin")
    member = await target.register("bob")
    clients = await target.pool()
    for _ in range(ROUNDS):
        key = DeviceKeys().public_b64
        body = {"user_id": member.user_id, "public_key": key}
        responses = await burst(
            http.post("/devices", json=body, headers=member.auth) for http in clients
        )
        assert_only(responses, {201})
        assert len({r.json()["id"] for r in responses}) == 1
        count = await target.count(
            "SELECT count(*) FROM devices WHERE user_id = :u AND public_key = :k",
            u=member.user_id,
            k=key,
        )
        assert count == 1
    await target.healthy(admin)


async def test_one_device_revoked_from_several_clients(target: Target) -> None:
    admin = await target.register("admin")
    member = await target.register("bob")
    clients = await target.pool()
    for _ in range(ROUNDS):
        body = {"user_id": member.user_id, "public_key": DeviceKeys().public_b64}
        added = await target.http.post("/devices", json=body, headers=member.auth)
        device_id = added.json()["id"]
        responses = await burst(
            http.delete(f"/devices/{device_id}", headers=member.auth) for http in clients
        )
        assert_only(responses, {204, 404})
        assert statuses(responses).count(204) == 1
        assert await target.count("SELECT count(*) FROM devices WHERE id = :d", d=device_id) == 0
    await target.healthy(admin)


async def test_logout_from_several_clients_at_once(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for _ in range(ROUNDS):
        member = await target.register(f"l{secrets.token_hex(4)}")
        responses = await burst(http.post("/auth/logout", headers=member.auth) for http in clients)
        # Came second: the token is gone by then.
        assert_only(responses, {200, 401})
        assert statuses(responses).count(200) >= 1
        assert (
            await target.count("SELECT count(*) FROM sessions WHERE user_id = :u", u=member.user_id)
            == 0
        )
    await target.healthy(admin)


async def test_new_devices_at_once_stop_at_the_cap(target: Target) -> None:
    """Fifteen new keys for one user at the same instant: exactly the cap (10) survive."""
    admin = await target.register("admin")
    clients = await target.pool(15)
    for round_ in range(2):
        member = await target.register(f"cap{round_}")
        responses = await burst(
            http.post(
                "/devices",
                json={"user_id": member.user_id, "public_key": DeviceKeys().public_b64},
                headers=member.auth,
            )
            for http in clients
        )
        assert_only(responses, {201, 409})
        assert statuses(responses).count(201) == 9  # plus the one it registered with
        assert all(r.json()["code"] == "device_limit" for r in responses if r.status_code == 409)
        count = await target.count(
            "SELECT count(*) FROM devices WHERE user_id = :u", u=member.user_id
        )
        assert count == 10
    await target.healthy(admin)


async def test_invites_created_at_once_are_all_distinct(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for _ in range(ROUNDS):
        responses = await burst(
            http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN}) for http in clients
        )
        assert_only(responses, {201})
        assert len({r.json()["token"] for r in responses}) == len(clients)
    await target.healthy(admin)
