"""Key commitments: a channel carries one (set at creation, or once later by its creator or
an admin), and the server keeps the string it was given, nothing more."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from litestar.testing import AsyncTestClient

from dialtone.config import Settings
from tests.conftest import ADMIN_TOKEN, Member, Register, app_client
from tests.e2ee import commitment
from tests.http.conftest import assert_error

OP = {"X-Admin-Token": ADMIN_TOKEN}
MISSING = "00000000-0000-4000-8000-000000000000"
# Not a commitment: not base64, wrong length, 31 or 33 bytes, non-canonical padding bits.
MALFORMED = [
    "",
    "not base64 at all",
    "A" * 43,
    commitment(os.urandom(32))[:-2] + "==",
    "QUFB" * 11,
    commitment(os.urandom(32)).replace("=", "A"),
    "/PTRZkqtWGItRx574igqRJ5wvBFBv0ytpEGP0OtvMHt=",
]


def test_commitment_known_vector() -> None:
    """The derivation docs/API.md gives (computed independently with openssl)."""
    assert commitment(bytes(range(32))) == "/PTRZkqtWGItRx574igqRJ5wvBFBv0ytpEGP0OtvMHs="


async def create(client: AsyncTestClient[Any], admin: Member, **extra: Any) -> dict[str, Any]:
    response = await client.post(
        "/channels", json={"name_enc": "Y2g=", **extra}, headers=admin.auth
    )
    assert response.status_code == 201, response.text
    channel: dict[str, Any] = response.json()["channel"]
    return channel


async def put(client: AsyncTestClient[Any], who: Member, channel_id: str, value: str) -> Any:
    return await client.put(
        "/channels/commitment",
        json={"channel_id": channel_id, "key_commitment": value},
        headers=who.auth,
    )


async def test_a_channel_made_with_a_commitment_carries_it(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    value = commitment(os.urandom(32))
    channel = await create(client, admin, key_commitment=value)
    assert channel["key_commitment"] == value
    assert channel["key_version"] == 1
    [listed] = (await client.get("/channels", headers=member.auth)).json()["channels"]
    assert listed == channel
    # Once set at creation it cannot be set again, even by an admin, even to the same value.
    refused = assert_error(await put(client, admin, channel["id"], value), 409)
    assert refused["code"] == "commitment_set"


async def test_a_channel_without_one_gets_it_once(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    channel = await create(client, admin)
    assert channel["key_commitment"] is None
    assert channel["key_version"] == 1
    absent = await create(client, admin, key_commitment=None)
    assert absent["key_commitment"] is None
    value = commitment(os.urandom(32))
    answer = await put(client, admin, channel["id"], value)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"channel": {**channel, "key_commitment": value}}
    listed = (await client.get("/channels", headers=member.auth)).json()["channels"]
    assert [c["key_commitment"] for c in listed] == [value, None]
    for again in (value, commitment(os.urandom(32))):
        assert assert_error(await put(client, admin, channel["id"], again), 409)["code"] == (
            "commitment_set"
        )
    # Renaming keeps it.
    renamed = await client.patch(
        "/channels", json={"channel_id": channel["id"], "name_enc": "bmV3"}, headers=admin.auth
    )
    assert renamed.json()["channel"]["key_commitment"] == value


async def test_who_may_set_a_commitment(
    client: AsyncTestClient[Any], admin: Member, register: Register
) -> None:
    bob = await register("bob")
    carol = await register("carol")
    # bob, an admin for a while, makes a channel and is demoted: still its creator.
    roles = f"/admin/users/{bob.user_id}"
    promoted = await client.patch(roles, json={"is_admin": True}, headers=OP)
    assert promoted.status_code == 200, promoted.text
    channel = await create(client, bob)
    other = await create(client, admin)
    demoted = await client.patch(roles, json={"is_admin": False}, headers=OP)
    assert demoted.status_code == 200, demoted.text
    value = commitment(os.urandom(32))
    refused = assert_error(await put(client, carol, channel["id"], value), 403)
    assert refused["code"] == "forbidden"
    assert assert_error(await put(client, bob, other["id"], value), 403)["code"] == "forbidden"
    assert (await put(client, bob, channel["id"], value)).status_code == 200
    assert (await put(client, admin, other["id"], value)).status_code == 200


async def test_commitment_input_errors(
    client: AsyncTestClient[Any], admin: Member, channel_id: str
) -> None:
    for bad in MALFORMED:
        refused = assert_error(await put(client, admin, channel_id, bad), 400)
        assert refused["code"] == "invalid_commitment", bad
        made = await client.post(
            "/channels", json={"name_enc": "Y2g=", "key_commitment": bad}, headers=admin.auth
        )
        assert assert_error(made, 400)["code"] == "invalid_commitment", bad
    good = commitment(os.urandom(32))
    assert assert_error(await put(client, admin, MISSING, good), 404)["code"] == (
        "channel_not_found"
    )
    for body in (
        {"channel_id": channel_id},
        {"key_commitment": good},
        {"channel_id": channel_id, "key_commitment": good, "extra": 1},
        {"channel_id": channel_id, "key_commitment": 5},
        {"channel_id": channel_id, "key_commitment": "a\u0000b"},
    ):
        assert_error(await client.put("/channels/commitment", json=body, headers=admin.auth), 400)
    assert_error(
        await client.put(
            "/channels/commitment", json={"channel_id": channel_id, "key_commitment": good}
        ),
        401,
    )
    # Nothing above set it.
    [listed] = (await client.get("/channels", headers=admin.auth)).json()["channels"]
    assert listed["key_commitment"] is None


async def test_simultaneous_puts_one_wins(
    client: AsyncTestClient[Any], admin: Member, channel_id: str
) -> None:
    values = [commitment(os.urandom(32)) for _ in range(6)]
    answers = await asyncio.gather(*(put(client, admin, channel_id, v) for v in values))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [409] * 5, [a.text for a in answers]
    [winner] = [a.json()["channel"]["key_commitment"] for a in answers if a.status_code == 200]
    [listed] = (await client.get("/channels", headers=admin.auth)).json()["channels"]
    assert listed["key_commitment"] == winner


# ---------------------------------------------------------------- the directory key


async def put_directory(client: AsyncTestClient[Any], who: Member | None, value: Any) -> Any:
    headers = who.auth if who is not None else {}
    return await client.put(
        "/directory/commitment", json={"key_commitment": value}, headers=headers
    )


async def test_the_directory_commitment_is_set_once_by_an_admin(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    info = (await client.get("/server/info")).json()
    assert info["directory_key_commitment"] is None
    value = commitment(os.urandom(32))
    refused = assert_error(await put_directory(client, member, value), 403)
    assert refused["code"] == "not_admin"
    assert_error(await put_directory(client, None, value), 401)
    # The operator's token is no client: it holds no key to commit to.
    operator = await client.put("/directory/commitment", json={"key_commitment": value}, headers=OP)
    assert_error(operator, 401)
    for bad in MALFORMED:
        invalid = assert_error(await put_directory(client, admin, bad), 400)
        assert invalid["code"] == "invalid_commitment", bad
    for body in ({}, {"key_commitment": value, "extra": 1}, {"key_commitment": None}):
        assert_error(await client.put("/directory/commitment", json=body, headers=admin.auth), 400)
    assert (await client.get("/server/info")).json()["directory_key_commitment"] is None

    answer = await put_directory(client, admin, value)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"directory_key_commitment": value}
    info = (await client.get("/server/info")).json()
    assert info["directory_key_commitment"] == value
    for again in (value, commitment(os.urandom(32))):
        conflict = assert_error(await put_directory(client, admin, again), 409)
        assert conflict["code"] == "commitment_set"
    assert (await client.get("/server/info")).json()["directory_key_commitment"] == value


async def test_the_directory_commitment_is_no_setting(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    value = commitment(os.urandom(32))
    assert (await put_directory(client, admin, value)).status_code == 200
    changed = await client.put(
        "/admin/settings",
        json={"directory_key_commitment": commitment(os.urandom(32))},
        headers=OP,
    )
    assert assert_error(changed, 400)["code"] == "unknown_setting"
    listed = (await client.get("/admin/settings", headers=OP)).json()["settings"]
    assert "directory_key_commitment" not in listed
    # A settings change keeps serving it.
    titled = await client.put("/admin/settings", json={"server_title": "Den"}, headers=OP)
    assert titled.status_code == 200
    info = (await client.get("/server/info")).json()
    assert (info["server_title"], info["directory_key_commitment"]) == ("Den", value)


async def test_a_restarted_server_serves_the_directory_commitment(
    settings: Settings, admin: Member, client: AsyncTestClient[Any]
) -> None:
    value = commitment(os.urandom(32))
    assert (await put_directory(client, admin, value)).status_code == 200
    async with app_client(settings) as restarted:
        info = (await restarted.get("/server/info")).json()
        assert info["directory_key_commitment"] == value


async def test_simultaneous_directory_puts_one_wins(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    values = [commitment(os.urandom(32)) for _ in range(6)]
    answers = await asyncio.gather(*(put_directory(client, admin, v) for v in values))
    assert sorted(a.status_code for a in answers) == [200] + [409] * 5
    [winner] = [a.json()["directory_key_commitment"] for a in answers if a.status_code == 200]
    assert (await client.get("/server/info")).json()["directory_key_commitment"] == winner
