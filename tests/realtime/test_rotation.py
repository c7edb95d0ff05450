"""Key rotation end to end (issue 16 item 4), with the Python client of the scheme.

A private room of four: alice (admin, owner), bob, carol (owner) and dave. Dave is
removed; carol's device rotates the key; the three remaining members read the whole
history (messages of both key versions), Dave gets no envelope of the new version on
any route and his old key opens nothing said after.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag

from tests.conftest import Member
from tests.e2ee import KeyRing, commitment, open_sealed, seal
from tests.realtime.conftest import LiveServer, next_of, recv


async def private_room(
    live: LiveServer, owner: Member, name_enc: str, key: bytes, *others: tuple[Member, str]
) -> str:
    """A private room made by ``owner`` (its first owner) with ``others`` added by them,
    each with its role ("owner" | "member"), through the endpoints."""
    created = await live.http.post(
        "/channels",
        json={"name_enc": name_enc, "key_commitment": commitment(key), "private": True},
        headers=owner.auth,
    )
    assert created.status_code == 201, created.text
    room: str = created.json()["channel"]["id"]
    for member, role in others:
        added = await live.http.post(
            "/channels/members",
            json={"channel_id": room, "user_id": member.user_id, "role": role},
            headers=owner.auth,
        )
        assert added.status_code == 201, added.text
    return room


def ring(member: Member) -> KeyRing:
    return KeyRing(device_id=member.device_id, token=member.token, keys=member.keys)


def send_frame(channel_id: str, body: str, key_version: object) -> str:
    frame: dict[str, Any] = {
        "type": "channel.message.send",
        "channel_id": channel_id,
        "body": body,
        "sender_name_enc": "bg==",
    }
    if key_version is not None:
        frame["key_version"] = key_version
    return json.dumps(frame)


async def channel_of(live: LiveServer, member: Member, channel_id: str) -> dict[str, Any]:
    listed = await live.http.get("/channels", headers=member.auth)
    assert listed.status_code == 200, listed.text
    [found] = [c for c in listed.json()["channels"] if c["id"] == channel_id]
    return dict(found)


async def history(live: LiveServer, member: Member, channel_id: str) -> list[dict[str, Any]]:
    got = await live.http.get(
        f"/channels/messages?channel_id={channel_id}&limit=50", headers=member.auth
    )
    assert got.status_code == 200, got.text
    return list(got.json()["messages"])


async def test_a_removed_member_reads_nothing_after_the_rotation(
    live: LiveServer, admin: Member
) -> None:
    alice = admin
    bob = await live.register("bob")
    carol = await live.register("carol")
    dave = await live.register("dave")
    people = {"alice": alice, "bob": bob, "carol": carol, "dave": dave}
    rings = {name: ring(m) for name, m in people.items()}

    # Version 1: alice makes the key and the room, and seals it for every device.
    key1 = os.urandom(32)
    room = await private_room(
        live,
        alice,
        seal(key1, b"team"),
        key1,
        (bob, "member"),
        (carol, "owner"),
        (dave, "member"),
    )
    items = [
        {
            "device_id": m.device_id,
            "sender_device_id": alice.device_id,
            "sender_public_key": alice.keys.public_b64,
            "envelope": alice.keys.wrap_for(m.keys.public_b64, key1),
        }
        for m in people.values()
    ]
    stored = await live.http.post(
        "/channels/keys", json={"channel_id": room, "envelopes": items}, headers=alice.auth
    )
    assert stored.status_code == 201, stored.text
    for name, member in people.items():
        key = await rings[name].take_channel_key(live.http, await channel_of(live, member, room))
        assert key == key1, name

    sockets = {name: await live.connect(m) for name, m in people.items()}
    before, version = rings["bob"].seal_message(room, b"before dave left")
    assert version == 1
    await sockets["bob"].send(send_frame(room, before, None))  # old clients send no version
    sent = await next_of(sockets["carol"], "channel.message.new")
    assert "key_version" not in sent  # omitted at 1: old frames read as before

    # Dave is removed: the room is marked; carol (owner, not admin) rotates.
    removed = await live.http.delete(
        "/channels/members",
        params={"channel_id": room, "user_id": dave.user_id},
        headers=alice.auth,
    )
    assert removed.status_code == 204, removed.text
    marked = await channel_of(live, carol, room)
    assert marked["rekey_required"] is True
    remaining = {alice.user_id, bob.user_id, carol.user_id}
    rotated = await rings["carol"].rotate(live.http, room, remaining)
    assert rotated is not None
    version2, key2 = rotated
    assert version2 == 2
    updated = await next_of(sockets["alice"], "channel.updated")
    assert (updated["key_version"], updated["key_commitment"]) == (2, commitment(key2))
    after = await channel_of(live, alice, room)
    assert (after["key_version"], after["rekey_required"]) == (2, False)
    # Bob was offline for the rotation: he sees the new version in the listing.
    for name in ("alice", "bob"):
        assert await rings[name].take_channel_key(live.http, after) == key2, name

    # A second rotation from version 1 (a device that missed the first) is refused.
    stale = await live.http.post(
        "/channels/rotate",
        json={"channel_id": room, "key_version": 2, "key_commitment": commitment(os.urandom(32))},
        headers=alice.auth,
    )
    assert stale.status_code == 409, stale.text
    assert stale.json()["code"] == "key_version_conflict"

    secret, version = rings["alice"].seal_message(room, b"after dave left")
    assert version == 2
    await sockets["alice"].send(send_frame(room, secret, version))
    echoed = await next_of(sockets["carol"], "channel.message.new")
    assert echoed["body"] == secret
    assert echoed["key_version"] == 2

    # A send with a version the room does not have yet: an error event, nothing stored.
    ahead, _ = rings["alice"].seal_message(room, b"from the future")
    await sockets["alice"].send(send_frame(room, ahead, 3))
    error = await next_of(sockets["alice"], "error")
    assert error["code"] == "key_version_conflict"
    for bad in (0, -1, "2"):
        await sockets["alice"].send(send_frame(room, ahead, bad))
        error = await next_of(sockets["alice"], "error")
        assert error["code"] == "invalid_message", bad

    # The three remaining members read the whole history, both versions.
    for name in ("alice", "bob", "carol"):
        items_seen = await history(live, people[name], room)
        texts = [rings[name].open_message(room, item) for item in items_seen]
        assert texts == [b"before dave left", b"after dave left"], name
        assert [item.get("key_version", 1) for item in items_seen] == [1, 2]
        assert [item["seq"] for item in items_seen] == [1, 2]  # the refused send took none
        # The history fast path (above) and Litestar's (after_seq) answer the same items.
        slow = await live.http.get(
            f"/channels/messages?channel_id={room}&limit=50&after_seq=0", headers=people[name].auth
        )
        assert slow.json()["messages"] == items_seen

    # Dave: no envelope of version 2 on any route, and his key 1 opens nothing new.
    for url in (
        f"/channels/keys?channel_id={room}",
        f"/channels/keys?channel_id={room}&all=1",
        f"/channels/keys?channel_id={room}&all=1&key_version=2",
        f"/channels/keys?channel_id={room}&key_version=2",
    ):
        got = await live.http.get(url, headers=dave.auth)
        assert got.status_code in (200, 404), (url, got.text)
        if got.status_code == 200:
            body = got.json()
            versions = [e["key_version"] for e in body.get("envelopes", [body])]
            assert 2 not in versions, url
    held = await live.http.get(f"/keys/held?device_id={dave.device_id}", headers=dave.auth)
    assert room not in held.json()["channels"]
    # An envelope for his device is refused, so no member can hand him the new key.
    refused = await live.http.post(
        "/channels/keys",
        json={
            "channel_id": room,
            "envelopes": [
                {
                    "device_id": dave.device_id,
                    "sender_device_id": alice.device_id,
                    "sender_public_key": alice.keys.public_b64,
                    "envelope": alice.keys.wrap_for(dave.keys.public_b64, key2),
                    "key_version": 2,
                }
            ],
        },
        headers=alice.auth,
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "not_a_member_device"
    # The ciphertext of the new version, taken off the wire by someone with Dave's key.
    try:
        open_sealed(key1, secret)
    except InvalidTag:
        pass
    else:
        raise AssertionError("key 1 opened a message of version 2")
    # Dave's own socket heard nothing of the new version (delivery to him stopped at his
    # removal; were anything to reach him, key 1 would still open none of it).
    while True:
        try:
            event = await recv(sockets["dave"], 0.3)
        except TimeoutError:
            break
        if event["type"] == "channel.message.new" and event.get("key_version") == 2:
            try:
                open_sealed(key1, event["body"])
            except InvalidTag:
                continue
            raise AssertionError("key 1 opened a message of version 2")


async def test_a_new_device_gets_every_version_it_can_check(
    live: LiveServer, admin: Member
) -> None:
    """A member's device added after a rotation is handed both versions and checks the
    old one against that version's commitment (GET /channels/keys?key_version=1)."""
    bob = await live.register("bob")
    key1 = os.urandom(32)
    room = await private_room(live, admin, seal(key1, b"pair"), key1, (bob, "member"))
    alice = ring(admin)
    alice.channels[room] = {1: key1}
    rotated = await alice.rotate(live.http, room, {admin.user_id, bob.user_id})
    assert rotated is not None
    _, key2 = rotated

    phone = await live.second_device(bob)
    answers = await alice.hand_on(live.http, phone.device_id, phone.keys.public_b64)
    assert [a.status_code for a in answers] == [201]
    mine = ring(phone)
    assert await mine.take_channel_key(live.http, await channel_of(live, phone, room)) == key2
    assert await mine.take_key_version(live.http, room, 1) == key1
    listed = await live.http.get(
        f"/channels/keys?channel_id={room}&all=1&key_version=1", headers=phone.auth
    )
    assert listed.json()["key_commitment"] == commitment(key1)
    assert listed.json()["key_version"] == 1


async def test_members_hear_that_a_room_needs_a_new_key(live: LiveServer, admin: Member) -> None:
    bob = await live.register("bob")
    room = await private_room(live, admin, "cm9vbQ==", os.urandom(32), (bob, "member"))
    watching = await live.connect(admin)
    phone = await live.second_device(bob)
    revoked = await live.http.delete(f"/devices/{phone.device_id}", headers=bob.auth)
    assert revoked.status_code == 204, revoked.text
    assert await next_of(watching, "channel.rekey_required") == {
        "type": "channel.rekey_required",
        "channel_id": room,
        "key_version": 1,
    }
