"""Bounded work per member: devices per user, per-user rate limits on new devices and
envelope writes, chat limits per user across all of the user's sockets, big reads paged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.exceptions import InvalidStatus

from dialtone.config import Settings, load_settings
from dialtone.db.base import new_id
from dialtone.db.models import ChannelMessage, Device
from dialtone.errors import ConfigError
from tests.conftest import Member, app_client, make_settings, register_member
from tests.e2ee import DeviceKeys
from tests.http.conftest import assert_error
from tests.realtime.conftest import chat_frame, recv, running_server


def test_settings_of_the_per_member_bounds() -> None:
    defaults = load_settings({})
    assert defaults.max_devices_per_user == 10
    assert (defaults.device_burst, defaults.device_refill) == (5, 300.0)
    assert (defaults.envelope_burst, defaults.envelope_refill) == (200, 0.1)
    assert (defaults.ws_user_chat_burst, defaults.ws_user_chat_rate) == (20, 10.0)
    tuned = load_settings(
        {
            "DIALTONE_MAX_DEVICES_PER_USER": "3",
            "DIALTONE_DEVICE_BURST": "2",
            "DIALTONE_DEVICE_REFILL": "60",
            "DIALTONE_ENVELOPE_BURST": "50",
            "DIALTONE_ENVELOPE_REFILL": "1",
            "DIALTONE_WS_USER_CHAT_BURST": "7",
            "DIALTONE_WS_USER_CHAT_RATE": "2",
        }
    )
    assert tuned.max_devices_per_user == 3
    assert (tuned.device_burst, tuned.device_refill) == (2, 60.0)
    assert (tuned.envelope_burst, tuned.envelope_refill) == (50, 1.0)
    assert (tuned.ws_user_chat_burst, tuned.ws_user_chat_rate) == (7, 2.0)
    for name, raw in (("DIALTONE_MAX_DEVICES_PER_USER", "0"), ("DIALTONE_ENVELOPE_REFILL", "-1")):
        with pytest.raises(ConfigError, match=name):
            load_settings({name: raw})


@pytest.fixture
def bounded(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url, max_devices_per_user=3)


@pytest.fixture
async def client(bounded: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with app_client(bounded) as test_client:
        yield test_client


async def add_device(client: Any, member: Member, key: str | None = None) -> Any:
    return await client.post(
        "/devices",
        json={"user_id": member.user_id, "public_key": key or DeviceKeys().public_b64},
        headers=member.auth,
    )


def login(member: Member, key: str) -> dict[str, str]:
    return {"username": member.username, "password": member.password, "public_key": key}


async def test_devices_per_user_are_capped(client: AsyncTestClient[Any]) -> None:
    await register_member(client, "admin")
    bob = await register_member(client, "bob")  # device 1
    known = DeviceKeys().public_b64
    assert (await add_device(client, bob, known)).status_code == 201  # 2
    assert (await add_device(client, bob)).status_code == 201  # 3
    refused = assert_error(await add_device(client, bob), 409)
    assert refused["code"] == "device_limit"
    refused = assert_error(
        await client.post("/auth/login", json=login(bob, DeviceKeys().public_b64)), 409
    )
    assert refused["code"] == "device_limit"
    # Known keys still work at the cap: re-adding one, logging in with one.
    assert (await add_device(client, bob, known)).status_code == 201
    assert (await client.post("/auth/login", json=login(bob, known))).status_code == 200
    devices = (await client.get("/devices", headers=bob.auth)).json()["devices"]
    assert len(devices) == 3
    # Revoking one makes room again.
    other = next(d["id"] for d in devices if not d["current"] and d["public_key"] != known)
    assert (await client.delete(f"/devices/{other}", headers=bob.auth)).status_code == 204
    assert (await add_device(client, bob)).status_code == 201


async def test_new_devices_are_rate_limited_per_user(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(
        tmp_path, db_url, rate_limits=True, device_burst=2, device_refill=3600.0
    )
    async with app_client(settings) as client:
        await register_member(client, "admin")
        bob = await register_member(client, "bob")
        known = DeviceKeys().public_b64
        assert (await add_device(client, bob, known)).status_code == 201
        assert (await add_device(client, bob)).status_code == 201
        limited = assert_error(await add_device(client, bob), 429)
        assert limited["code"] == "rate_limited"
        assert int((await add_device(client, bob)).headers["retry-after"]) > 0
        # Not charged for a device it already has; the refused ones were not stored.
        assert (await add_device(client, bob, known)).status_code == 201
        assert len((await client.get("/devices", headers=bob.auth)).json()["devices"]) == 3


async def test_envelope_writes_are_rate_limited_per_user(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(
        tmp_path, db_url, rate_limits=True, envelope_burst=3, envelope_refill=3600.0
    )
    async with app_client(settings) as client:
        admin = await register_member(client, "admin")
        created = await client.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
        channel_id = created.json()["channel"]["id"]
        item = {
            "device_id": admin.device_id,
            "sender_device_id": admin.device_id,
            "sender_public_key": admin.keys.public_b64,
            "envelope": admin.keys.wrap_for(admin.keys.public_b64, b"k" * 32),
        }
        answers = []
        for path, body in [
            ("/channels/keys", {"channel_id": channel_id, "envelopes": [item]}),
            ("/directory/keys", {"envelopes": [item]}),
            ("/channels/keys", {"channel_id": channel_id, "envelopes": [item]}),
            ("/directory/keys", {"envelopes": [item]}),
        ]:
            answers.append(await client.post(path, json=body, headers=admin.auth))
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
        assert answers[-1].json()["code"] == "rate_limited"


async def test_a_big_batch_is_one_request_and_one_too_many_is_refused(
    client: AsyncTestClient[Any], db_url: str
) -> None:
    admin = await register_member(client, "admin")
    created = await client.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
    channel_id = created.json()["channel"]["id"]
    now = datetime.now(UTC)
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(Device),
                [
                    {
                        "id": new_id(),
                        "user_id": admin.user_id,
                        "public_key": DeviceKeys().public_b64,
                        "created_at": now + timedelta(microseconds=i),
                        "last_seen_at": now,
                    }
                    for i in range(1200)
                ],
            )
    finally:
        await engine.dispose()
    # GET /devices/keys?all=1 is read in pages (the event loop serves others between
    # them): every device, once, in the same order.
    pages: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "ORDER BY devices.user_id, devices.created_at" in " ".join(statement.split()):
            pages.append(statement)

    engine = client.app.state.engine
    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        keys = (await client.get("/devices/keys?all=1", headers=admin.auth)).json()["keys"]
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    assert len(pages) == 3  # 500 + 500 + 201
    assert len(keys) == 1201
    assert len({k["device_id"] for k in keys}) == 1201
    own = (await client.get(f"/devices/keys?user_id={admin.user_id}", headers=admin.auth)).json()
    assert [k["device_id"] for k in keys] == [k["device_id"] for k in own["keys"]]

    def item(key: dict[str, str]) -> dict[str, str]:
        return {
            "device_id": key["device_id"],
            "sender_device_id": admin.device_id,
            "sender_public_key": admin.keys.public_b64,
            "envelope": "ZW52ZWxvcGU=",
        }

    batch = {"channel_id": channel_id, "envelopes": [item(k) for k in keys[:1000]]}
    stored = await client.post("/channels/keys", json=batch, headers=admin.auth)
    assert stored.status_code == 201, stored.text
    assert stored.json() == {"status": "ok"}
    batch["envelopes"] = [item(k) for k in keys[:1001]]
    assert_error(await client.post("/channels/keys", json=batch, headers=admin.auth), 400)


async def test_chat_limits_hold_per_user_across_sockets(tmp_path: Path, db_url: str) -> None:
    """Four sockets of one token share one budget: 8 frames, 4 stored, 4 refused."""
    settings = make_settings(
        tmp_path,
        db_url,
        rate_limits=True,
        ws_chat_burst=10,
        ws_user_chat_burst=4,
        ws_user_chat_rate=0.0001,
    )
    async with running_server(settings) as live:
        admin = await live.register("admin")
        channel = await live.create_channel(admin)
        sockets = [await live.connect(admin) for _ in range(4)]

        async def outcomes(index: int, ws: Any) -> list[str]:
            mine = [f"bSR{index}{n}" for n in range(2)]
            for body in mine:
                await ws.send(chat_frame(channel, body))
            seen: list[str] = []
            while len(seen) < len(mine):
                event = await recv(ws, 30)
                if event["type"] == "error":
                    seen.append(event["code"])
                elif event["type"] == "channel.message.new" and event["body"] in mine:
                    seen.append("stored")
            return seen

        results = await asyncio.gather(*(outcomes(i, ws) for i, ws in enumerate(sockets)))
        flat = [outcome for socket_outcomes in results for outcome in socket_outcomes]
        assert flat.count("stored") == 4, flat
        assert flat.count("rate_limited") == 4, flat
        history = await live.http.get(
            f"/channels/messages?channel_id={channel}", headers=admin.auth
        )
        assert len(history.json()["messages"]) == 4


async def test_a_full_history_page_is_read_in_chunks(
    client: AsyncTestClient[Any], db_url: str
) -> None:
    """History pages of up to 500 are read 100 rows per statement, the event loop free
    between them; every cursor still gives exactly the right messages, in order."""
    admin = await register_member(client, "admin")
    created = await client.post("/channels", json={"name_enc": "Y2g="}, headers=admin.auth)
    channel_id = created.json()["channel"]["id"]
    now = datetime.now(UTC)
    ids = [new_id() for _ in range(450)]
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(ChannelMessage),
                [
                    {
                        "id": message_id,
                        "channel_id": channel_id,
                        "sender_id": admin.user_id,
                        "sender_device_id": admin.device_id,
                        "sender_name_enc": "bmFtZQ==",
                        "body": f"bXNn{i}",
                        "sent_at": now,
                    }
                    for i, message_id in enumerate(ids)
                ],
            )
    finally:
        await engine.dispose()

    reads: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM channel_messages" in statement and "ORDER BY" in statement:
            reads.append(statement)

    async def history(**params: Any) -> list[str]:
        response = await client.get(
            "/channels/messages", params={"channel_id": channel_id, **params}, headers=admin.auth
        )
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["messages"]]

    engine_of_app = client.app.state.engine
    event.listen(engine_of_app.sync_engine, "before_cursor_execute", seen)
    try:
        assert await history(limit=500) == ids
        assert len(reads) == 5  # 4 x 100 + 50
        assert await history(limit=500, before=ids[400]) == ids[:400]
        assert await history(limit=250, before=ids[400]) == ids[150:400]
        assert await history(limit=300, after=ids[10]) == ids[11:311]
        assert await history(limit=500, after=ids[10]) == ids[11:]
        assert await history(limit=50) == ids[-50:]
    finally:
        event.remove(engine_of_app.sync_engine, "before_cursor_execute", seen)


def test_setting_of_the_socket_cap_per_user() -> None:
    assert load_settings({}).max_sockets_per_user == 20
    assert load_settings({"DIALTONE_MAX_SOCKETS_PER_USER": "3"}).max_sockets_per_user == 3
    with pytest.raises(ConfigError, match="DIALTONE_MAX_SOCKETS_PER_USER"):
        load_settings({"DIALTONE_MAX_SOCKETS_PER_USER": "0"})


async def test_open_sockets_per_user_are_capped(tmp_path: Path, db_url: str) -> None:
    """One server without Redis: the cap counts the user's sockets in this process, over
    all of the user's devices; the next handshake gets the 429 of the per-address cap,
    before the upgrade. A socket that ends gives its place back; rate limits off lift
    the cap, as they lift the per-address one."""
    settings = make_settings(tmp_path, db_url, rate_limits=True, max_sockets_per_user=2)
    async with running_server(settings) as live:
        member = await live.register("sockets")
        other = await live.register("other")
        first = await live.connect(member)
        await live.connect(member)
        with pytest.raises(InvalidStatus) as refused:
            await live.connect_raw(member)
        response = refused.value.response
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        assert msgspec.json.decode(response.body) == {
            "error": "too many open sockets for this account",
            "code": "rate_limited",
        }
        await live.connect(other)  # another user is not held back
        await first.close()
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # the server gives the place back once it has seen the close
            try:
                await live.connect(member)
                break
            except InvalidStatus as exc:
                if exc.response.status_code != 429 or asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.02)
    unlimited = make_settings(tmp_path, db_url, rate_limits=False, max_sockets_per_user=1)
    async with running_server(unlimited) as live:
        member = await live.register("unlimited")
        for _ in range(3):
            await live.connect(member)
