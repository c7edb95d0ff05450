"""Key commitments: a channel carries one (set at creation, or once later by its creator or
an admin), and the server keeps the string it was given, nothing more."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import ADMIN_TOKEN, Member, Register
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
