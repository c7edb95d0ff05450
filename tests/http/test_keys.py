"""Channel and directory key envelopes, exercised the way real clients use them."""

from __future__ import annotations

import os
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.models import Channel
from tests.conftest import Member, Register
from tests.e2ee import DeviceKeys, KeyRing, commitment, open_sealed, seal
from tests.http.conftest import assert_error, is_time, store_message

Db = async_sessionmaker[AsyncSession]


def envelope_for(sender: Member, device_id: str, public_key: str, secret: bytes) -> dict[str, str]:
    return {
        "device_id": device_id,
        "sender_device_id": sender.device_id,
        "sender_public_key": sender.keys.public_b64,
        "envelope": sender.keys.wrap_for(public_key, secret),
    }


async def test_channel_key_round_trip_end_to_end(
    client: AsyncTestClient[Any], admin: Member, member: Member, channel_id: str, db: Db
) -> None:
    """Admin wraps a channel key for bob's device; bob unwraps it and reads a message."""
    channel_key = os.urandom(32)
    keys = await client.get("/devices/keys?all=1", headers=admin.auth)
    envelopes = [
        envelope_for(admin, k["device_id"], k["public_key"], channel_key)
        for k in keys.json()["keys"]
    ]
    body = {"channel_id": channel_id, "envelopes": envelopes}
    response = await client.post("/channels/keys", json=body, headers=admin.auth)
    assert response.status_code == 201, response.text
    assert response.json() == {"status": "ok"}

    sealed_body = seal(channel_key, "hello bob 👋".encode())
    await store_message(db, channel_id, admin, sealed_body, seal(channel_key, b"admin"))

    response = await client.get(f"/channels/keys?channel_id={channel_id}", headers=member.auth)
    assert response.status_code == 200, response.text
    got = response.json()
    # key_version: added by issue 15 (additive); the other fields as ever.
    assert set(got) == {
        "channel_id",
        "device_id",
        "sender_device_id",
        "sender_public_key",
        "envelope",
        "created_at",
        "key_version",
    }
    assert got["key_version"] == 1
    assert got["channel_id"] == channel_id
    assert got["device_id"] == member.device_id
    assert got["sender_device_id"] == admin.device_id
    assert got["sender_public_key"] == admin.keys.public_b64
    assert is_time(got["created_at"])
    unwrapped = member.keys.unwrap_from(got["sender_public_key"], got["envelope"])
    assert unwrapped == channel_key

    history = await client.get(f"/channels/messages?channel_id={channel_id}", headers=member.auth)
    [message] = history.json()["messages"]
    assert message["body"] == sealed_body  # byte for byte
    assert open_sealed(unwrapped, message["body"]).decode() == "hello bob 👋"
    assert open_sealed(unwrapped, message["sender_name_enc"]) == b"admin"


async def test_rotation_replaces_envelope(
    client: AsyncTestClient[Any], admin: Member, member: Member, channel_id: str
) -> None:
    for secret in (b"1" * 32, b"2" * 32):
        envelope = envelope_for(admin, member.device_id, member.keys.public_b64, secret)
        body = {"channel_id": channel_id, "envelopes": [envelope]}
        assert (await client.post("/channels/keys", json=body, headers=admin.auth)).is_success
    got = (await client.get(f"/channels/keys?channel_id={channel_id}", headers=member.auth)).json()
    assert member.keys.unwrap_from(got["sender_public_key"], got["envelope"]) == b"2" * 32


async def test_channel_key_failures(
    client: AsyncTestClient[Any], admin: Member, member: Member, channel_id: str
) -> None:
    url = f"/channels/keys?channel_id={channel_id}"
    assert_error(await client.get(url, headers=member.auth), 404)  # no envelope yet
    assert_error(await client.get(url), 401)
    assert_error(await client.get("/channels/keys", headers=member.auth), 400)
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(await client.get(f"/channels/keys?channel_id={missing}", headers=member.auth), 404)

    good = envelope_for(member, admin.device_id, admin.keys.public_b64, b"k" * 32)

    async def post(envelopes: list[dict[str, Any]], channel: str = channel_id) -> Any:
        body = {"channel_id": channel, "envelopes": envelopes}
        return await client.post("/channels/keys", json=body, headers=member.auth)

    assert (await post([good])).status_code == 201
    assert_error(await post([good], missing), 404)
    assert_error(await post([{**good, "sender_device_id": admin.device_id}]), 403)
    assert_error(await post([{**good, "device_id": missing}]), 400)  # unknown device
    assert_error(await post([{**good, "sender_public_key": "junk"}]), 400)
    assert_error(await post([{**good, "envelope": ""}]), 400)
    assert_error(await post([{**good, "envelope": "a\u0000b"}]), 400)
    assert_error(await post([{**good, "extra": 1}]), 400)
    assert_error(await post([]), 400)
    assert_error(await post([good] * 1001), 400)
    body = {"channel_id": channel_id, "envelopes": [good]}
    assert_error(await client.post("/channels/keys", json=body), 401)


async def test_directory_keys(
    client: AsyncTestClient[Any], admin: Member, member: Member, register: Register
) -> None:
    assert (await client.get("/directory/keys", headers=member.auth)).status_code == 204
    response = await client.get("/directory/keys", headers=member.auth)
    assert response.content == b""

    directory_key = os.urandom(32)
    envelope = envelope_for(admin, member.device_id, member.keys.public_b64, directory_key)
    response = await client.post(
        "/directory/keys", json={"envelopes": [envelope]}, headers=admin.auth
    )
    assert response.status_code == 201, response.text
    assert response.json() == {"status": "ok"}

    response = await client.get("/directory/keys", headers=member.auth)
    assert response.status_code == 200
    got = response.json()
    assert set(got) == {
        "device_id",
        "sender_device_id",
        "sender_public_key",
        "envelope",
        "created_at",
    }
    assert got["device_id"] == member.device_id
    assert got["sender_device_id"] == admin.device_id
    assert is_time(got["created_at"])
    assert member.keys.unwrap_from(got["sender_public_key"], got["envelope"]) == directory_key


async def test_directory_key_failures(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    good = envelope_for(member, admin.device_id, admin.keys.public_b64, b"d" * 32)

    async def post(body: Any) -> Any:
        return await client.post("/directory/keys", json=body, headers=member.auth)

    assert (await post({"envelopes": [good]})).status_code == 201
    assert_error(await post({"envelopes": []}), 400)
    assert_error(await post({}), 400)
    assert_error(await post({"envelopes": [{**good, "sender_device_id": admin.device_id}]}), 403)
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_error(await post({"envelopes": [{**good, "device_id": unknown}]}), 400)
    assert_error(await post({"envelopes": [good], "channel_id": "x"}), 400)
    assert_error(await client.get("/directory/keys"), 401)
    assert_error(await client.post("/directory/keys", json={"envelopes": [good]}), 401)


async def test_directory_keys_refuse_untrusted(
    client: AsyncTestClient[Any], admin: Member, untrusted: Member
) -> None:
    assert_error(await client.get("/directory/keys", headers=untrusted.auth), 401)
    envelope = envelope_for(untrusted, admin.device_id, admin.keys.public_b64, b"x" * 32)
    response = await client.post(
        "/directory/keys", json={"envelopes": [envelope]}, headers=untrusted.auth
    )
    assert_error(response, 401)


async def test_second_device_gets_its_own_envelope(
    client: AsyncTestClient[Any], admin: Member, member: Member, channel_id: str
) -> None:
    laptop = DeviceKeys()
    login = {
        "username": member.username,
        "password": member.password,
        "public_key": laptop.public_b64,
    }
    second = (await client.post("/auth/login", json=login)).json()
    secret = os.urandom(32)
    envelope = envelope_for(admin, second["device_id"], laptop.public_b64, secret)
    body = {"channel_id": channel_id, "envelopes": [envelope]}
    assert (await client.post("/channels/keys", json=body, headers=admin.auth)).is_success
    url = f"/channels/keys?channel_id={channel_id}"
    assert_error(await client.get(url, headers=member.auth), 404)  # the phone has none
    laptop_auth = {"Authorization": f"Bearer {second['token']}"}
    got = (await client.get(url, headers=laptop_auth)).json()
    assert laptop.unwrap_from(got["sender_public_key"], got["envelope"]) == secret


async def test_every_envelope_for_a_device(
    client: AsyncTestClient[Any], admin: Member, member: Member, channel_id: str, register: Register
) -> None:
    url = f"/channels/keys?channel_id={channel_id}&all=1"
    empty = await client.get(url, headers=member.auth)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {
        "channel_id": channel_id,
        "device_id": member.device_id,
        "envelopes": [],
    }
    carol = await register("carol")
    for sender, secret in ((carol, b"c" * 32), (admin, b"a" * 32)):
        item = envelope_for(sender, member.device_id, member.keys.public_b64, secret)
        body = {"channel_id": channel_id, "envelopes": [{**item, "key_version": 1}]}
        stored = await client.post("/channels/keys", json=body, headers=sender.auth)
        assert stored.status_code == 201, stored.text
    listed = (await client.get(url, headers=member.auth)).json()
    assert set(listed) == {"channel_id", "device_id", "envelopes"}
    first, second = listed["envelopes"]
    assert set(first) == {
        "sender_device_id",
        "sender_user_id",
        "sender_public_key",
        "envelope",
        "key_version",
        "created_at",
    }
    # The admin (here also the channel's creator) first, although carol's came first.
    assert (first["sender_user_id"], second["sender_user_id"]) == (admin.user_id, carol.user_id)
    assert first["sender_device_id"] == admin.device_id
    assert is_time(first["created_at"])
    assert member.keys.unwrap_from(first["sender_public_key"], first["envelope"]) == b"a" * 32
    assert member.keys.unwrap_from(second["sender_public_key"], second["envelope"]) == b"c" * 32
    for flag in ("1", "true", "yes"):
        again = await client.get(
            f"/channels/keys?channel_id={channel_id}&all={flag}", headers=member.auth
        )
        assert again.json() == listed
    # all=0 (or anything else): the default read, as before.
    single = await client.get(f"/channels/keys?channel_id={channel_id}&all=0", headers=member.auth)
    assert single.json()["sender_device_id"] == admin.device_id
    missing = "00000000-0000-4000-8000-000000000000"
    refused = await client.get(f"/channels/keys?channel_id={missing}&all=1", headers=member.auth)
    assert assert_error(refused, 404)["code"] == "channel_not_found"
    assert_error(await client.get(url), 401)
    assert_error(await client.get("/channels/keys?all=1", headers=member.auth), 400)


async def test_key_version_of_an_envelope(
    client: AsyncTestClient[Any], admin: Member, member: Member, channel_id: str
) -> None:
    good = envelope_for(admin, member.device_id, member.keys.public_b64, b"v" * 32)

    async def post(items: list[dict[str, Any]]) -> Any:
        body = {"channel_id": channel_id, "envelopes": items}
        return await client.post("/channels/keys", json=body, headers=admin.auth)

    for version in (2, 0, -1, 2**31):
        refused = assert_error(await post([{**good, "key_version": version}]), 400)
        assert refused["code"] == "invalid_key_version", version
    for bad in ("one", 1.5, 2**40, [1]):
        assert_error(await post([{**good, "key_version": bad}]), 400)
    assert (await post([{**good, "key_version": None}])).status_code == 201
    assert (await post([{**good, "key_version": 1}])).status_code == 201
    listed = await client.get(f"/channels/keys?channel_id={channel_id}&all=1", headers=member.auth)
    assert [e["key_version"] for e in listed.json()["envelopes"]] == [1]
    # key_version belongs to channel keys: the directory refuses it as an unknown field.
    directory = await client.post(
        "/directory/keys", json={"envelopes": [{**good, "key_version": 1}]}, headers=admin.auth
    )
    assert_error(directory, 400)


async def test_every_directory_envelope(
    client: AsyncTestClient[Any], admin: Member, member: Member, untrusted: Member
) -> None:
    empty = await client.get("/directory/keys?all=1", headers=member.auth)
    assert empty.status_code == 200
    assert empty.json() == {"device_id": member.device_id, "envelopes": []}
    item = envelope_for(admin, member.device_id, member.keys.public_b64, b"d" * 32)
    await client.post("/directory/keys", json={"envelopes": [item]}, headers=admin.auth)
    [only] = (await client.get("/directory/keys?all=1", headers=member.auth)).json()["envelopes"]
    assert set(only) == {
        "sender_device_id",
        "sender_user_id",
        "sender_public_key",
        "envelope",
        "created_at",
    }
    assert only["sender_user_id"] == admin.user_id
    assert member.keys.unwrap_from(only["sender_public_key"], only["envelope"]) == b"d" * 32
    assert_error(await client.get("/directory/keys?all=1", headers=untrusted.auth), 401)
    assert_error(await client.get("/directory/keys?all=1"), 401)


async def test_keys_held_counts_only_the_devices_own_user(
    client: AsyncTestClient[Any], admin: Member, member: Member, channel_id: str, db: Db
) -> None:
    """/keys/held lists a key only once the device (or its own user) confirmed it: another
    member's envelope, even the admin's, does not count, and only the current version does."""
    secret = os.urandom(32)

    async def held() -> dict[str, Any]:
        path = f"/keys/held?device_id={member.device_id}"
        response = await client.get(path, headers=admin.auth)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    assert await held() == {"device_id": member.device_id, "channels": [], "directory": False}

    from_admin = envelope_for(admin, member.device_id, member.keys.public_b64, secret)
    for path, body in (
        ("/channels/keys", {"channel_id": channel_id, "envelopes": [from_admin]}),
        ("/directory/keys", {"envelopes": [from_admin]}),
    ):
        assert (await client.post(path, json=body, headers=admin.auth)).status_code == 201
    assert await held() == {"device_id": member.device_id, "channels": [], "directory": False}

    # The device confirms the keys it accepted: sealed from itself to itself.
    mine = envelope_for(member, member.device_id, member.keys.public_b64, secret)
    for path, body in (
        ("/channels/keys", {"channel_id": channel_id, "envelopes": [mine]}),
        ("/directory/keys", {"envelopes": [mine]}),
    ):
        assert (await client.post(path, json=body, headers=member.auth)).status_code == 201
    assert await held() == {
        "device_id": member.device_id,
        "channels": [channel_id],
        "directory": True,
    }
    # The admin's device has confirmed nothing.
    response = await client.get(f"/keys/held?device_id={admin.device_id}", headers=member.auth)
    assert response.json() == {"device_id": admin.device_id, "channels": [], "directory": False}

    # A new key version: the confirmation of the old one no longer counts.
    async with db() as session, session.begin():
        await session.execute(update(Channel).where(Channel.id == channel_id).values(key_version=2))
    assert (await held())["channels"] == []


async def test_keys_held_bad_requests(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    assert (await client.get(f"/keys/held?device_id={member.device_id}")).status_code == 401
    for path in ("/keys/held", "/keys/held?device_id=", f"/keys/held?device_id={'x' * 65}"):
        assert assert_error(await client.get(path, headers=admin.auth), 400)["code"] == (
            "invalid_input"
        ), path
    gone = assert_error(await client.get("/keys/held?device_id=nope", headers=admin.auth), 404)
    assert gone["code"] == "unknown_device"


async def test_a_python_device_confirms_the_keys_it_accepts(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    """KeyRing, like the page, seals each key it accepted for itself: /keys/held lists it."""
    key, directory_key = os.urandom(32), os.urandom(32)
    made = await client.post(
        "/channels",
        json={"name_enc": "Y2g=", "key_commitment": commitment(key)},
        headers=admin.auth,
    )
    assert made.status_code == 201, made.text
    channel = made.json()["channel"]
    set_dir = await client.put(
        "/directory/commitment",
        json={"key_commitment": commitment(directory_key)},
        headers=admin.auth,
    )
    assert set_dir.status_code == 200, set_dir.text
    maker = KeyRing(admin.device_id, admin.token, admin.keys)
    maker.channels[channel["id"]] = {1: key}
    maker.directory = directory_key
    for answer in await maker.hand_on(client, member.device_id, member.keys.public_b64):
        assert answer.status_code == 201, answer.text

    path = f"/keys/held?device_id={member.device_id}"
    assert (await client.get(path, headers=admin.auth)).json()["channels"] == []
    ring = KeyRing(member.device_id, member.token, member.keys)
    assert await ring.take_channel_key(client, channel) == key
    assert await ring.take_directory_key(client, commitment(directory_key)) == directory_key
    held = (await client.get(path, headers=admin.auth)).json()
    assert held == {"device_id": member.device_id, "channels": [channel["id"]], "directory": True}
    # Taken again: confirmed already, so no second upload is needed (one envelope each).
    assert await ring.take_channel_key(client, channel) == key
    everything = f"/channels/keys?channel_id={channel['id']}&all=1"
    listed = await client.get(everything, headers=member.auth)
    senders = [e["sender_device_id"] for e in listed.json()["envelopes"]]
    assert sorted(senders) == sorted([admin.device_id, member.device_id])
