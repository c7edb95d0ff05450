"""Key envelopes cannot be hijacked: an existing envelope is replaced only by the
recipient's own user, its original sender (device or user) or an admin. Anyone else's
copy is kept, the request still succeeds (old clients re-share every key every 30 s),
the kept devices are listed in ``kept``, and a security event is logged (ids only)."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import Member, Register
from tests.e2ee import DeviceKeys
from tests.http.conftest import assert_error


def envelope(sender: Member, device_id: str, public_key: str, secret: bytes) -> dict[str, str]:
    return {
        "device_id": device_id,
        "sender_device_id": sender.device_id,
        "sender_public_key": sender.keys.public_b64,
        "envelope": sender.keys.wrap_for(public_key, secret),
    }


async def put(
    client: AsyncTestClient[Any], sender: Member, channel_id: str, items: list[dict[str, str]]
) -> dict[str, Any]:
    response = await client.post(
        "/channels/keys", json={"channel_id": channel_id, "envelopes": items}, headers=sender.auth
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def key_of(client: AsyncTestClient[Any], member: Member, channel_id: str) -> bytes:
    got = await client.get(f"/channels/keys?channel_id={channel_id}", headers=member.auth)
    assert got.status_code == 200, got.text
    body = got.json()
    return member.keys.unwrap_from(body["sender_public_key"], body["envelope"])


async def second_device(client: AsyncTestClient[Any], member: Member) -> Member:
    keys = DeviceKeys()
    response = await client.post(
        "/auth/login",
        json={
            "username": member.username,
            "password": member.password,
            "public_key": keys.public_b64,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Member(
        username=member.username,
        password=member.password,
        token=body["token"],
        user_id=body["user_id"],
        device_id=body["device_id"],
        is_admin=body["is_admin"],
        keys=keys,
    )


@pytest.fixture
async def cast(client: AsyncTestClient[Any], admin: Member, register: Register) -> dict[str, Any]:
    """A channel; bob shared its key with carol first; mallory is another member."""
    created = await client.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
    channel_id = created.json()["channel"]["id"]
    bob = await register("bob")
    carol = await register("carol")
    mallory = await register("mallory")
    real = os.urandom(32)
    first = envelope(bob, carol.device_id, carol.keys.public_b64, real)
    stored = await put(client, bob, channel_id, [first])
    assert stored == {"status": "ok"}  # unchanged wire when nothing is kept
    return {"channel": channel_id, "bob": bob, "carol": carol, "mallory": mallory, "real": real}


async def test_another_member_cannot_replace_an_envelope(
    client: AsyncTestClient[Any], cast: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    carol: Member = cast["carol"]
    mallory: Member = cast["mallory"]
    forged = envelope(mallory, carol.device_id, carol.keys.public_b64, b"m" * 32)
    with caplog.at_level(logging.INFO, logger="dialtone.security"):
        answer = await put(client, mallory, cast["channel"], [forged])
    assert answer == {"status": "ok", "kept": [carol.device_id]}
    assert await key_of(client, carol, cast["channel"]) == cast["real"]
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "envelope_kept"]
    assert record.user_id == mallory.user_id  # type: ignore[attr-defined]
    assert record.kept == [carol.device_id]  # type: ignore[attr-defined]
    logged = caplog.text + repr(record.__dict__)
    assert forged["envelope"] not in logged
    assert mallory.username not in logged


async def test_a_mixed_batch_writes_new_envelopes_and_keeps_others(
    client: AsyncTestClient[Any], cast: dict[str, Any]
) -> None:
    carol: Member = cast["carol"]
    mallory: Member = cast["mallory"]
    bob: Member = cast["bob"]
    batch = [
        envelope(mallory, carol.device_id, carol.keys.public_b64, b"m" * 32),
        envelope(mallory, bob.device_id, bob.keys.public_b64, b"n" * 32),  # bob has none yet
    ]
    answer = await put(client, mallory, cast["channel"], batch)
    assert answer == {"status": "ok", "kept": [carol.device_id]}
    assert await key_of(client, bob, cast["channel"]) == b"n" * 32
    assert await key_of(client, carol, cast["channel"]) == cast["real"]


@pytest.mark.parametrize("who", ["recipient", "sender", "sender_other_device", "admin"])
async def test_who_may_replace_an_envelope(
    client: AsyncTestClient[Any], cast: dict[str, Any], admin: Member, who: str
) -> None:
    carol: Member = cast["carol"]
    writer = {
        "recipient": carol,
        "sender": cast["bob"],
        "admin": admin,
    }.get(who) or await second_device(client, cast["bob"])
    rotated = os.urandom(32)
    item = envelope(writer, carol.device_id, carol.keys.public_b64, rotated)
    answer = await put(client, writer, cast["channel"], [item])
    assert answer == {"status": "ok"}
    assert await key_of(client, carol, cast["channel"]) == rotated


async def test_directory_envelopes_are_protected_the_same_way(
    client: AsyncTestClient[Any], admin: Member, register: Register
) -> None:
    bob = await register("bob")
    carol = await register("carol")
    mallory = await register("mallory")
    real = os.urandom(32)
    first = await client.post(
        "/directory/keys",
        json={"envelopes": [envelope(bob, carol.device_id, carol.keys.public_b64, real)]},
        headers=bob.auth,
    )
    assert first.json() == {"status": "ok"}
    forged = await client.post(
        "/directory/keys",
        json={"envelopes": [envelope(mallory, carol.device_id, carol.keys.public_b64, b"m" * 32)]},
        headers=mallory.auth,
    )
    assert forged.status_code == 201
    assert forged.json() == {"status": "ok", "kept": [carol.device_id]}
    got = (await client.get("/directory/keys", headers=carol.auth)).json()
    assert carol.keys.unwrap_from(got["sender_public_key"], got["envelope"]) == real
    by_admin = await client.post(
        "/directory/keys",
        json={"envelopes": [envelope(admin, carol.device_id, carol.keys.public_b64, b"a" * 32)]},
        headers=admin.auth,
    )
    assert by_admin.json() == {"status": "ok"}


async def test_a_device_twice_in_one_batch_is_refused(
    client: AsyncTestClient[Any], cast: dict[str, Any]
) -> None:
    bob: Member = cast["bob"]
    carol: Member = cast["carol"]
    item = envelope(bob, carol.device_id, carol.keys.public_b64, b"x" * 32)
    for path, body in (
        ("/channels/keys", {"channel_id": cast["channel"], "envelopes": [item, item]}),
        ("/directory/keys", {"envelopes": [item, item]}),
    ):
        refused = assert_error(await client.post(path, json=body, headers=bob.auth), 400)
        assert refused["code"] == "duplicate_device"
    assert await key_of(client, carol, cast["channel"]) == cast["real"]
