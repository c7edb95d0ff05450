"""Channels and profiles: renames racing deletes, first profiles posted twice at once."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from websockets.asyncio.client import connect

from tests.concurrency.conftest import ROUNDS, Target, assert_only, burst, statuses
from tests.conftest import ADMIN_TOKEN, Member
from tests.e2ee import DeviceKeys, commitment
from tests.realtime.conftest import chat_frame


async def new_channel(target: Target, admin: Member) -> str:
    created = await target.http.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
    assert created.status_code == 201, created.text
    channel_id: str = created.json()["channel"]["id"]
    return channel_id


async def test_rename_races_delete(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for _ in range(ROUNDS):
        channel_id = await new_channel(target, admin)
        renames = [
            http.patch(
                "/channels",
                json={"channel_id": channel_id, "name_enc": f"bmV3{i}"},
                headers=admin.auth,
            )
            for i, http in enumerate(clients[1:])
        ]
        delete = clients[0].delete(f"/channels?channel_id={channel_id}", headers=admin.auth)
        [deleted, *renamed] = await burst([delete, *renames])
        assert deleted.status_code == 204, deleted.text
        assert_only(renamed, {200, 404})
        assert all(r.json()["code"] == "channel_not_found" for r in renamed if r.status_code == 404)
        assert await target.count("SELECT count(*) FROM channels WHERE id = :c", c=channel_id) == 0
    await target.healthy(admin)


async def test_simultaneous_renames_leave_one_of_the_names(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    channel_id = await new_channel(target, admin)
    for round_ in range(ROUNDS):
        names = [f"cm91bmQ{round_}{i}" for i in range(len(clients))]
        responses = await burst(
            http.patch(
                "/channels", json={"channel_id": channel_id, "name_enc": name}, headers=admin.auth
            )
            for http, name in zip(clients, names, strict=True)
        )
        assert_only(responses, {200})
        [row] = await target.rows("SELECT name_enc FROM channels WHERE id = :c", c=channel_id)
        assert row[0] in names
    await target.healthy(admin)


async def test_simultaneous_deletes_one_wins(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for _ in range(ROUNDS):
        channel_id = await new_channel(target, admin)
        responses = await burst(
            http.delete(f"/channels?channel_id={channel_id}", headers=admin.auth)
            for http in clients
        )
        assert_only(responses, {204, 404})
        assert statuses(responses).count(204) == 1
    await target.healthy(admin)


async def test_simultaneous_creates_all_land(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for _ in range(ROUNDS):
        before = await target.count("SELECT count(*) FROM channels")
        responses = await burst(
            http.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
            for http in clients
        )
        assert_only(responses, {201})
        assert await target.count("SELECT count(*) FROM channels") == before + len(clients)
    await target.healthy(admin)


async def test_simultaneous_first_profiles(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    for round_ in range(ROUNDS):
        member = await target.register(f"p{round_}")
        names = [f"bmFtZQ{round_}{i}" for i in range(len(clients))]
        responses = await burst(
            http.post("/users/profiles", json={"name_enc": name}, headers=member.auth)
            for http, name in zip(clients, names, strict=True)
        )
        assert_only(responses, {201})
        assert all(r.json() == {"status": "ok"} for r in responses)
        rows = await target.rows(
            "SELECT name_enc FROM user_profiles WHERE user_id = :u", u=member.user_id
        )
        assert len(rows) == 1
        assert rows[0][0] in names
    await target.healthy(admin)


async def test_channel_deleted_while_messages_arrive_over_websocket(target: Target) -> None:
    """Each sender hears its message stored or ``channel_not_found``, never server_error."""
    admin = await target.register("admin")
    senders = [await target.register(f"s{i}") for i in range(3)]
    sockets = [
        await connect(target.ws_url, additional_headers=m.auth, open_timeout=10) for m in senders
    ]
    try:
        for round_ in range(ROUNDS):
            channel_id = await new_channel(target, admin)
            bodies = [f"cjE{round_}{i}" for i in range(len(sockets))]

            async def send(ws: Any, body: str, channel_id: str = channel_id) -> str:
                await ws.send(chat_frame(channel_id, body))
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if event["type"] == "channel.message.new" and event["body"] == body:
                        return "stored"
                    if event["type"] == "error":
                        return str(event["code"])

            delete = target.http.delete(f"/channels?channel_id={channel_id}", headers=admin.auth)
            deleted, *outcomes = await asyncio.gather(
                delete, *(send(ws, body) for ws, body in zip(sockets, bodies, strict=True))
            )
            assert deleted.status_code == 204, deleted.text
            assert set(outcomes) <= {"stored", "channel_not_found"}, outcomes
            assert (
                await target.count(
                    "SELECT count(*) FROM channel_messages WHERE channel_id = :c", c=channel_id
                )
                == 0
            )
    finally:
        for ws in sockets:
            await ws.close()
    await target.healthy(admin)


async def test_user_deleted_while_their_writes_arrive(target: Target) -> None:
    """An admin deletes an account while its devices post a profile, upload envelopes
    and register a device: those answer as if they came second (401/400), never 500."""
    admin = await target.register("admin")
    clients = await target.pool(5)
    channel_id = await new_channel(target, admin)
    for round_ in range(ROUNDS):
        doomed = await target.register(f"gone{round_}")
        item = {
            "device_id": doomed.device_id,
            "sender_device_id": doomed.device_id,
            "sender_public_key": doomed.keys.public_b64,
            "envelope": "ZW52ZWxvcGU=",
        }
        writes = [
            clients[1].post("/users/profiles", json={"name_enc": "bmFtZQ=="}, headers=doomed.auth),
            clients[2].post(
                "/channels/keys",
                json={"channel_id": channel_id, "envelopes": [item]},
                headers=doomed.auth,
            ),
            clients[3].post("/directory/keys", json={"envelopes": [item]}, headers=doomed.auth),
            clients[4].post(
                "/devices",
                json={"user_id": doomed.user_id, "public_key": DeviceKeys().public_b64},
                headers=doomed.auth,
            ),
        ]
        delete = clients[0].delete(
            f"/admin/users/{doomed.user_id}", headers={"X-Admin-Token": ADMIN_TOKEN}
        )
        [deleted, *answers] = await burst([delete, *writes])
        assert deleted.status_code == 200, deleted.text
        assert_only(answers, {201, 400, 401})
        for table in ("user_profiles", "devices"):
            assert (
                await target.count(
                    f"SELECT count(*) FROM {table} WHERE user_id = :u", u=doomed.user_id
                )
                == 0
            )
    await target.healthy(admin)


async def test_simultaneous_commitment_puts_one_wins(target: Target) -> None:
    """Several admins' devices set an old channel's key commitment at once: one 200, the
    others 409 commitment_set, and the stored value is the winner's; a commitment PUT
    racing the channel's deletion gets 200 or 404."""
    admin = await target.register("admin")
    clients = await target.pool()
    for _ in range(ROUNDS):
        channel_id = await new_channel(target, admin)
        values = [commitment(os.urandom(32)) for _ in clients]
        responses = await burst(
            http.put(
                "/channels/commitment",
                json={"channel_id": channel_id, "key_commitment": value},
                headers=admin.auth,
            )
            for http, value in zip(clients, values, strict=True)
        )
        assert_only(responses, {200, 409})
        assert statuses(responses) == [200] + [409] * (len(clients) - 1)
        assert all(r.json()["code"] == "commitment_set" for r in responses if r.status_code == 409)
        [winner] = [r.json()["channel"] for r in responses if r.status_code == 200]
        [row] = await target.rows("SELECT key_commitment FROM channels WHERE id = :c", c=channel_id)
        assert row[0] == winner["key_commitment"]
    for _ in range(ROUNDS):
        channel_id = await new_channel(target, admin)
        delete = clients[0].delete(f"/channels?channel_id={channel_id}", headers=admin.auth)
        puts = [
            http.put(
                "/channels/commitment",
                json={"channel_id": channel_id, "key_commitment": commitment(os.urandom(32))},
                headers=admin.auth,
            )
            for http in clients[1:]
        ]
        [deleted, *answered] = await burst([delete, *puts])
        assert deleted.status_code == 204, deleted.text
        assert_only(answered, {200, 404, 409})
        assert sum(r.status_code == 200 for r in answered) <= 1
        gone = [r.json()["code"] for r in answered if r.status_code == 404]
        assert set(gone) <= {"channel_not_found"}
    await target.healthy(admin)


async def test_simultaneous_directory_commitment_puts_one_wins(target: Target) -> None:
    admin = await target.register("admin")
    clients = await target.pool()
    values = [commitment(os.urandom(32)) for _ in clients]
    responses = await burst(
        http.put("/directory/commitment", json={"key_commitment": value}, headers=admin.auth)
        for http, value in zip(clients, values, strict=True)
    )
    assert_only(responses, {200, 409})
    assert statuses(responses) == [200] + [409] * (len(clients) - 1)
    [winner] = [r.json()["directory_key_commitment"] for r in responses if r.status_code == 200]
    info = await target.http.get("/server/info")
    assert info.json()["directory_key_commitment"] == winner
    await target.healthy(admin)
