"""Key envelopes: one per sender device, so a wrong envelope never hides a right one.

Issue 15 replaced the rule these tests first encoded ("an existing envelope is replaced
only by the recipient's user, its sender or an admin; anyone else's copy is refused"):
that rule let whoever wrote first lock a newcomer out with a wrong key. Now each sender
keeps its own copy; a device checks keys against the channel's commitment and picks the
right one (``?all=1``); the default read, for existing clients, prefers an envelope from
the channel's creator or an admin, then from the recipient's own user, then the newest.
``kept`` still tells an uploader that the default read answers someone else's envelope,
and that is still logged with ids only."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import ADMIN_TOKEN, Member, Register
from tests.e2ee import DeviceKeys, KeyRing, commitment, matching_key
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
    """The key in the envelope the default read (an existing client's) answers."""
    got = await client.get(f"/channels/keys?channel_id={channel_id}", headers=member.auth)
    assert got.status_code == 200, got.text
    body = got.json()
    return member.keys.unwrap_from(body["sender_public_key"], body["envelope"])


async def all_of(client: AsyncTestClient[Any], member: Member, channel_id: str) -> list[Any]:
    got = await client.get(f"/channels/keys?channel_id={channel_id}&all=1", headers=member.auth)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["channel_id"] == channel_id
    assert body["device_id"] == member.device_id
    envelopes: list[Any] = body["envelopes"]
    return envelopes


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
    """A channel made by the admin with a commitment; bob (a plain member) shared its key
    with carol first; mallory is another member."""
    real = os.urandom(32)
    created = await client.post(
        "/channels",
        json={"name_enc": "Y2g=", "key_commitment": commitment(real)},
        headers=admin.auth,
    )
    channel_id = created.json()["channel"]["id"]
    bob = await register("bob")
    carol = await register("carol")
    mallory = await register("mallory")
    first = envelope(bob, carol.device_id, carol.keys.public_b64, real)
    stored = await put(client, bob, channel_id, [first])
    assert stored == {"status": "ok"}  # unchanged wire when nothing is kept
    return {"channel": channel_id, "bob": bob, "carol": carol, "mallory": mallory, "real": real}


async def test_a_wrong_envelope_does_not_replace_or_hide_a_right_one(
    client: AsyncTestClient[Any], cast: dict[str, Any]
) -> None:
    carol: Member = cast["carol"]
    mallory: Member = cast["mallory"]
    bob: Member = cast["bob"]
    forged = envelope(mallory, carol.device_id, carol.keys.public_b64, b"m" * 32)
    # Stored beside bob's: among plain members the newest is the default answer.
    assert await put(client, mallory, cast["channel"], [forged]) == {"status": "ok"}
    listed = await all_of(client, carol, cast["channel"])
    assert [e["sender_device_id"] for e in listed] == [mallory.device_id, bob.device_id]
    assert [e["sender_user_id"] for e in listed] == [mallory.user_id, bob.user_id]
    assert all(e["key_version"] == 1 for e in listed)
    assert {e["sender_public_key"] for e in listed} == {
        mallory.keys.public_b64,
        bob.keys.public_b64,
    }
    # A device checking the commitment takes bob's key and ignores mallory's.
    assert matching_key(carol.keys, listed, commitment(cast["real"])) == cast["real"]
    # Writing first does not help either: the order of arrival decides nothing.
    dave = await second_device(client, carol)
    for sender, secret in ((mallory, b"m" * 32), (bob, cast["real"])):
        item = envelope(sender, dave.device_id, dave.keys.public_b64, secret)
        await put(client, sender, cast["channel"], [item])
    listed = await all_of(client, dave, cast["channel"])
    assert matching_key(dave.keys, listed, commitment(cast["real"])) == cast["real"]


async def test_the_default_read_prefers_the_creator_or_an_admin(
    client: AsyncTestClient[Any],
    cast: dict[str, Any],
    admin: Member,
    caplog: pytest.LogCaptureFixture,
) -> None:
    carol: Member = cast["carol"]
    mallory: Member = cast["mallory"]
    by_admin = envelope(admin, carol.device_id, carol.keys.public_b64, cast["real"])
    assert await put(client, admin, cast["channel"], [by_admin]) == {"status": "ok"}
    forged = envelope(mallory, carol.device_id, carol.keys.public_b64, b"m" * 32)
    with caplog.at_level(logging.INFO, logger="dialtone.security"):
        answer = await put(client, mallory, cast["channel"], [forged])
    # mallory's copy is newer, yet the default read still answers the admin's: ``kept``.
    assert answer == {"status": "ok", "kept": [carol.device_id]}
    assert await key_of(client, carol, cast["channel"]) == cast["real"]
    listed = await all_of(client, carol, cast["channel"])
    assert [e["sender_device_id"] for e in listed] == [
        admin.device_id,
        mallory.device_id,
        cast["bob"].device_id,
    ]
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "envelope_kept"]
    assert record.user_id == mallory.user_id  # type: ignore[attr-defined]
    assert record.kept == [carol.device_id]  # type: ignore[attr-defined]
    logged = caplog.text + repr(record.__dict__)
    assert forged["envelope"] not in logged
    assert mallory.username not in logged


async def test_a_mixed_batch_writes_every_envelope_and_lists_the_kept(
    client: AsyncTestClient[Any], cast: dict[str, Any], admin: Member
) -> None:
    carol: Member = cast["carol"]
    mallory: Member = cast["mallory"]
    bob: Member = cast["bob"]
    await put(
        client,
        admin,
        cast["channel"],
        [envelope(admin, carol.device_id, carol.keys.public_b64, cast["real"])],
    )
    batch = [
        envelope(mallory, carol.device_id, carol.keys.public_b64, b"m" * 32),
        envelope(mallory, bob.device_id, bob.keys.public_b64, b"n" * 32),  # bob has none yet
    ]
    answer = await put(client, mallory, cast["channel"], batch)
    assert answer == {"status": "ok", "kept": [carol.device_id]}
    assert await key_of(client, bob, cast["channel"]) == b"n" * 32
    assert await key_of(client, carol, cast["channel"]) == cast["real"]
    assert len(await all_of(client, carol, cast["channel"])) == 3


@pytest.mark.parametrize("who", ["recipient", "sender", "sender_other_device", "admin"])
async def test_which_envelope_the_default_read_answers(
    client: AsyncTestClient[Any], cast: dict[str, Any], admin: Member, who: str
) -> None:
    """A sender re-uploading replaces its own copy; another device of the sender's user
    adds one; the recipient's own user comes before other members, an admin first."""
    carol: Member = cast["carol"]
    bob: Member = cast["bob"]
    writer = {
        "recipient": await second_device(client, carol),
        "sender": bob,
        "admin": admin,
    }.get(who) or await second_device(client, bob)
    rotated = os.urandom(32)
    item = envelope(writer, carol.device_id, carol.keys.public_b64, rotated)
    answer = await put(client, writer, cast["channel"], [item])
    assert answer == {"status": "ok"}
    assert await key_of(client, carol, cast["channel"]) == rotated
    listed = await all_of(client, carol, cast["channel"])
    assert listed[0]["sender_device_id"] == writer.device_id
    assert len(listed) == (1 if who == "sender" else 2)
    # A plain member's newer copy does not come before the recipient's own or an admin's.
    if who in {"recipient", "admin"}:
        again = envelope(bob, carol.device_id, carol.keys.public_b64, cast["real"])
        assert await put(client, bob, cast["channel"], [again]) == {
            "status": "ok",
            "kept": [carol.device_id],
        }
        assert await key_of(client, carol, cast["channel"]) == rotated


async def test_directory_envelopes_work_the_same_way(
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
    assert forged.json() == {"status": "ok"}
    listed = (await client.get("/directory/keys?all=1", headers=carol.auth)).json()
    assert listed["device_id"] == carol.device_id
    assert [e["sender_device_id"] for e in listed["envelopes"]] == [
        mallory.device_id,
        bob.device_id,
    ]
    assert all("key_version" not in e for e in listed["envelopes"])
    ring = KeyRing(carol.device_id, carol.token, carol.keys)
    assert await ring.take_directory_key(client, commitment(real)) == real
    assert ring.rejected == [mallory.device_id]
    by_admin = await client.post(
        "/directory/keys",
        json={"envelopes": [envelope(admin, carol.device_id, carol.keys.public_b64, real)]},
        headers=admin.auth,
    )
    assert by_admin.json() == {"status": "ok"}
    again = await client.post(
        "/directory/keys",
        json={"envelopes": [envelope(mallory, carol.device_id, carol.keys.public_b64, b"m" * 32)]},
        headers=mallory.auth,
    )
    assert again.json() == {"status": "ok", "kept": [carol.device_id]}
    got = (await client.get("/directory/keys", headers=carol.auth)).json()
    assert got["sender_device_id"] == admin.device_id
    assert carol.keys.unwrap_from(got["sender_public_key"], got["envelope"]) == real


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


async def test_an_ordinary_member_hands_every_key_to_a_newcomer(
    client: AsyncTestClient[Any], admin: Member, register: Register
) -> None:
    """The issue's case, as the Python client of the scheme: the admin made the keys and
    is gone; bob, an ordinary member, hands carol every key he holds; mallory hands her
    wrong ones first. carol checks each against its commitment and takes bob's."""
    maker = KeyRing(admin.device_id, admin.token, admin.keys)
    for _ in range(2):
        key = os.urandom(32)
        made = await client.post(
            "/channels",
            json={"name_enc": "Y2g=", "key_commitment": commitment(key)},
            headers=admin.auth,
        )
        maker.channels[made.json()["channel"]["id"]] = {1: key}
    maker.directory = os.urandom(32)
    set_ = await client.put(
        "/directory/commitment",
        json={"key_commitment": commitment(maker.directory)},
        headers=admin.auth,
    )
    assert set_.status_code == 200
    bob = await register("bob")
    handed = await maker.hand_on(client, bob.device_id, bob.keys.public_b64)
    assert [a.status_code for a in handed] == [201, 201, 201]
    channels = (await client.get("/channels", headers=bob.auth)).json()["channels"]
    directory_commitment = (await client.get("/server/info")).json()["directory_key_commitment"]
    bob_ring = KeyRing(bob.device_id, bob.token, bob.keys)
    for channel in channels:
        assert await bob_ring.take_channel_key(client, channel) is not None
    assert await bob_ring.take_directory_key(client, directory_commitment) == maker.directory
    assert bob_ring.channels == maker.channels

    carol = await register("carol")
    mallory = await register("mallory")
    liar = KeyRing(mallory.device_id, mallory.token, mallory.keys)
    liar.channels = {c: {1: os.urandom(32)} for c in maker.channels}
    liar.directory = os.urandom(32)
    for answer in [
        *await liar.hand_on(client, carol.device_id, carol.keys.public_b64),
        *await bob_ring.hand_on(client, carol.device_id, carol.keys.public_b64),
    ]:
        assert answer.status_code == 201, answer.text
    carol_ring = KeyRing(carol.device_id, carol.token, carol.keys)
    for channel in channels:
        await carol_ring.take_channel_key(client, channel)
    assert await carol_ring.take_directory_key(client, directory_commitment) == maker.directory
    assert carol_ring.channels == maker.channels
    assert set(carol_ring.rejected) == {mallory.device_id}
    assert len(carol_ring.rejected) == len(channels) + 1


async def test_the_channels_creator_is_preferred_even_when_no_longer_an_admin(
    client: AsyncTestClient[Any], admin: Member, register: Register
) -> None:
    op = {"X-Admin-Token": ADMIN_TOKEN}
    bob = await register("bob")
    carol = await register("carol")
    mallory = await register("mallory")
    roles = f"/admin/users/{bob.user_id}"
    assert (await client.patch(roles, json={"is_admin": True}, headers=op)).status_code == 200
    made = await client.post("/channels", json={"name_enc": "Y2g="}, headers=bob.auth)
    channel_id = made.json()["channel"]["id"]
    assert (await client.patch(roles, json={"is_admin": False}, headers=op)).status_code == 200
    real = os.urandom(32)
    first = envelope(bob, carol.device_id, carol.keys.public_b64, real)
    assert await put(client, bob, channel_id, [first]) == {"status": "ok"}
    forged = envelope(mallory, carol.device_id, carol.keys.public_b64, b"m" * 32)
    assert await put(client, mallory, channel_id, [forged]) == {
        "status": "ok",
        "kept": [carol.device_id],
    }
    assert await key_of(client, carol, channel_id) == real
