"""Key envelopes: every online member re-shares keys for a device that just joined.

Since issue 15 each sender device keeps its own envelope for a recipient (a wrong one must
never block a right one), so where these tests counted one row per recipient they now
count one per sender; every other assertion is as before."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.concurrency.conftest import ROUNDS, Target, assert_only, burst
from tests.conftest import Member
from tests.e2ee import DeviceKeys, KeyRing, commitment


def envelope(sender: Member, device_id: str, public_key: str) -> dict[str, str]:
    return {
        "device_id": device_id,
        "sender_device_id": sender.device_id,
        "sender_public_key": sender.keys.public_b64,
        "envelope": sender.keys.wrap_for(public_key, os.urandom(32)),
    }


async def new_device(http: httpx.AsyncClient, member: Member) -> tuple[str, str]:
    keys = DeviceKeys()
    response = await http.post(
        "/devices",
        json={"user_id": member.user_id, "public_key": keys.public_b64},
        headers=member.auth,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], keys.public_b64


async def members(target: Target) -> tuple[Member, list[Member]]:
    admin = await target.register("admin")
    others = [await target.register(f"member{i}") for i in range(3)]
    return admin, others


async def test_simultaneous_channel_envelopes_for_a_new_device(target: Target) -> None:
    admin, others = await members(target)
    senders = [admin, *others]
    clients = await target.pool(len(senders))
    joiner = others[0]
    for _ in range(ROUNDS):
        created = await target.http.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
        channel_id = created.json()["channel"]["id"]
        device_id, public_key = await new_device(target.http, joiner)
        responses = await burst(
            http.post(
                "/channels/keys",
                json={
                    "channel_id": channel_id,
                    "envelopes": [envelope(sender, device_id, public_key)],
                },
                headers=sender.auth,
            )
            for http, sender in zip(clients, senders, strict=True)
        )
        assert_only(responses, {201})
        assert all(r.json()["status"] == "ok" for r in responses)
        rows = await target.rows(
            "SELECT sender_device_id FROM channel_key_envelopes"
            " WHERE channel_id = :c AND device_id = :d",
            c=channel_id,
            d=device_id,
        )
        assert sorted(r[0] for r in rows) == sorted(s.device_id for s in senders)
    await target.healthy(admin)


async def test_simultaneous_directory_envelopes_for_a_new_device(target: Target) -> None:
    admin, others = await members(target)
    senders = [admin, *others]
    clients = await target.pool(len(senders))
    joiner = others[1]
    for _ in range(ROUNDS):
        device_id, public_key = await new_device(target.http, joiner)
        responses = await burst(
            http.post(
                "/directory/keys",
                json={"envelopes": [envelope(sender, device_id, public_key)]},
                headers=sender.auth,
            )
            for http, sender in zip(clients, senders, strict=True)
        )
        assert_only(responses, {201})
        count = await target.count(
            "SELECT count(*) FROM directory_key_envelopes WHERE device_id = :d", d=device_id
        )
        assert count == len(senders)
    await target.healthy(admin)


async def test_the_same_batch_twice_at_once_both_succeed(target: Target) -> None:
    """The client's 30-second re-share of every key from two tabs of one device."""
    admin, _ = await members(target)
    clients = await target.pool(4)
    created = await target.http.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
    channel_id = created.json()["channel"]["id"]
    keys = (await target.http.get("/devices/keys?all=1", headers=admin.auth)).json()["keys"]
    for _ in range(ROUNDS):
        batch = [envelope(admin, k["device_id"], k["public_key"]) for k in keys]
        responses = await burst(
            http.post(
                "/channels/keys",
                json={"channel_id": channel_id, "envelopes": batch},
                headers=admin.auth,
            )
            for http in clients
        )
        assert_only(responses, {201})
        count = await target.count(
            "SELECT count(*) FROM channel_key_envelopes WHERE channel_id = :c", c=channel_id
        )
        assert count == len(keys)
    await target.healthy(admin)


async def test_device_revoked_while_envelopes_for_it_arrive(target: Target) -> None:
    admin, others = await members(target)
    senders = [admin, *others[1:]]
    owner = others[0]
    clients = await target.pool(len(senders) + 1)
    created = await target.http.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
    channel_id = created.json()["channel"]["id"]
    for _ in range(ROUNDS):
        device_id, public_key = await new_device(target.http, owner)
        uploads = [
            http.post(
                "/channels/keys",
                json={
                    "channel_id": channel_id,
                    "envelopes": [envelope(sender, device_id, public_key)],
                },
                headers=sender.auth,
            )
            for http, sender in zip(clients, senders, strict=False)
        ]
        revoke = clients[-1].delete(f"/devices/{device_id}", headers=owner.auth)
        [revoked, *uploaded] = await burst([revoke, *uploads])
        assert revoked.status_code == 204, revoked.text
        # Came second: the device is unknown by then (the answer a late upload gets).
        assert_only(uploaded, {201, 400})
        assert all(r.json()["code"] == "unknown_device" for r in uploaded if r.status_code == 400)
        count = await target.count(
            "SELECT count(*) FROM channel_key_envelopes WHERE device_id = :d", d=device_id
        )
        assert count == 0
    await target.healthy(admin)


async def test_channel_deleted_while_envelopes_for_it_arrive(target: Target) -> None:
    admin, others = await members(target)
    senders = [admin, *others]
    clients = await target.pool(len(senders) + 1)
    device_id, public_key = await new_device(target.http, others[0])
    for _ in range(ROUNDS):
        created = await target.http.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
        channel_id = created.json()["channel"]["id"]
        uploads = [
            http.post(
                "/channels/keys",
                json={
                    "channel_id": channel_id,
                    "envelopes": [envelope(sender, device_id, public_key)],
                },
                headers=sender.auth,
            )
            for http, sender in zip(clients, senders, strict=False)
        ]
        delete = clients[-1].delete(f"/channels?channel_id={channel_id}", headers=admin.auth)
        [deleted, *uploaded] = await burst([delete, *uploads])
        assert deleted.status_code == 204, deleted.text
        assert_only(uploaded, {201, 404})
        count = await target.count(
            "SELECT count(*) FROM channel_key_envelopes WHERE channel_id = :c", c=channel_id
        )
        assert count == 0
    await target.healthy(admin)


async def test_the_existing_clients_routine_when_a_fourth_device_joins(target: Target) -> None:
    """Three members online; a fourth device logs in and connects. Each online client
    reacts to device.joined as the existing client does: it uploads every channel's key
    for every device it knows, and shares the directory key. Nobody sees a 5xx, and the
    new device ends up with one envelope per channel and a directory envelope."""
    admin, others = await members(target)
    online = [admin, *others[:2]]
    channels = []
    for _ in range(3):
        created = await target.http.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
        channels.append(created.json()["channel"]["id"])
    clients = await target.pool(len(online))
    sockets = [
        await connect(target.ws_url, additional_headers=m.auth, open_timeout=10) for m in online
    ]
    try:
        for ws in sockets:
            assert json.loads(await ws.recv())["type"] == "voice.presence.snapshot"
        for round_ in range(ROUNDS // 2):

            async def react(ws: Any, http: httpx.AsyncClient, member: Member) -> list[int]:
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if event["type"] == "device.joined" and event["sender"] == others[2].user_id:
                        break
                listed = await http.get("/devices/keys?all=1", headers=member.auth)
                keys = listed.json()["keys"]
                answers = []
                for channel_id in channels:
                    batch = [envelope(member, k["device_id"], k["public_key"]) for k in keys]
                    answers.append(
                        await http.post(
                            "/channels/keys",
                            json={"channel_id": channel_id, "envelopes": batch},
                            headers=member.auth,
                        )
                    )
                batch = [envelope(member, k["device_id"], k["public_key"]) for k in keys]
                answers.append(
                    await http.post(
                        "/directory/keys", json={"envelopes": batch}, headers=member.auth
                    )
                )
                assert_only(answers, {201})
                return [a.status_code for a in answers]

            reactions = [
                asyncio.ensure_future(react(ws, http, m))
                for ws, http, m in zip(sockets, clients, online, strict=True)
            ]
            keys = DeviceKeys()
            joined = await target.http.post(
                "/auth/login",
                json={
                    "username": others[2].username,
                    "password": others[2].password,
                    "public_key": keys.public_b64,
                },
            )
            assert joined.status_code == 200, joined.text
            body = joined.json()
            newcomer = await connect(
                target.ws_url,
                additional_headers={"Authorization": f"Bearer {body['token']}"},
                open_timeout=10,
            )
            try:
                await asyncio.gather(*reactions)
            finally:
                await newcomer.close()
            for channel_id in channels:
                assert await target.count(
                    "SELECT count(*) FROM channel_key_envelopes"
                    " WHERE channel_id = :c AND device_id = :d",
                    c=channel_id,
                    d=body["device_id"],
                ) == len(online), round_
            assert await target.count(
                "SELECT count(*) FROM directory_key_envelopes WHERE device_id = :d",
                d=body["device_id"],
            ) == len(online)
    finally:
        for ws in sockets:
            await ws.close()
    await target.healthy(admin)


async def test_members_hand_a_newcomer_keys_at_once_and_it_takes_the_right_one(
    target: Target,
) -> None:
    """Every member's device uploads an envelope for a newcomer's device at the same
    instant, one of them a wrong key: all 201, one row per sender, and the newcomer,
    checking the commitment, takes the right key whatever the order of arrival."""
    admin, others = await members(target)
    liar = others[2]
    clients = await target.pool(len(others))
    for _ in range(ROUNDS):
        key = os.urandom(32)
        created = await target.http.post(
            "/channels",
            json={"name_enc": "Y2g=", "key_commitment": commitment(key)},
            headers=admin.auth,
        )
        channel = created.json()["channel"]
        newcomer = await target.register()
        ring = KeyRing(newcomer.device_id, newcomer.token, newcomer.keys)
        responses = await burst(
            http.post(
                "/channels/keys",
                json={
                    "channel_id": channel["id"],
                    "envelopes": [
                        {
                            "device_id": newcomer.device_id,
                            "sender_device_id": sender.device_id,
                            "sender_public_key": sender.keys.public_b64,
                            "envelope": sender.keys.wrap_for(
                                newcomer.keys.public_b64,
                                os.urandom(32) if sender is liar else key,
                            ),
                        }
                    ],
                },
                headers=sender.auth,
            )
            for http, sender in zip(clients, others, strict=True)
        )
        assert_only(responses, {201})
        assert await ring.take_channel_key(target.http, channel) == key
        assert ring.rejected == [liar.device_id]
    await target.healthy(admin)
