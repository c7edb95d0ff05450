"""Two server processes on one PostgreSQL database and one Redis: events cross nodes."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import (
    ADMIN_TOKEN,
    CLUSTER_SECRET,
    PEPPER,
    REDIS_URL,
    Member,
    register_member,
    truncate_all,
)
from tests.e2ee import DeviceKeys, commitment
from tests.realtime.conftest import chat_frame, closed_with, next_of, only, quiet

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Node:
    db_url: str
    prefix: str

    def __init__(
        self,
        db_url: str,
        prefix: str,
        data_dir: Path,
        heartbeat: float = 0.5,
        redis_url: str | None = None,
        port: int | None = None,
        **extra: str,
    ) -> None:
        # ``redis_url``: another Redis than the suite's (one a test kills); "" for none.
        # ``port``: the same one again, to restart a node in place.
        self.port = port or free_port()
        self.db_url, self.prefix = db_url, prefix
        env = dict(os.environ)
        env.update(
            {
                "DIALTONE_DB_URL": db_url,
                "DIALTONE_REDIS_URL": REDIS_URL if redis_url is None else redis_url,
                "DIALTONE_REDIS_PREFIX": prefix,
                "DIALTONE_LISTEN_ADDR": f"127.0.0.1:{self.port}",
                "DIALTONE_DATA_DIR": str(data_dir),
                "DIALTONE_USERNAME_PEPPER": PEPPER.decode(),
                "DIALTONE_ADMIN_TOKEN": ADMIN_TOKEN,
                "DIALTONE_CLUSTER_SECRET": CLUSTER_SECRET,
                "DIALTONE_RATE_LIMITS": "off",
                "DIALTONE_ARGON2_MEMORY_KIB": str(19 * 1024),
                "DIALTONE_LOG_LEVEL": "warning",
                "DIALTONE_NODE_HEARTBEAT": str(heartbeat),
                **extra,
            }
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dialtone", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=20)
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    async def ready(self) -> None:
        deadline = asyncio.get_running_loop().time() + 90  # a cold start on a loaded machine
        while asyncio.get_running_loop().time() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"node exited: {err[-2000:]}")
            try:
                if (await self.http.get("/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("node did not start")

    async def stop(self) -> None:
        await self.http.aclose()
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.proc.stderr:
            self.proc.stderr.close()

    async def register(self, name: str) -> Member:
        return await register_member(self.http, name)


@pytest.fixture
def shared_db(pg_database: str) -> str:
    if not REDIS_URL:
        pytest.skip("multi-node test needs DIALTONE_TEST_REDIS_URL")
    asyncio.run(truncate_all(pg_database))
    return pg_database


@pytest.fixture
async def nodes(shared_db: str, tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    db_url = shared_db
    prefix = f"dialtone-test-{secrets.token_hex(6)}:"  # never collides with other runs
    first = Node(db_url, prefix, tmp_path / "a")
    await first.ready()
    second = Node(db_url, prefix, tmp_path / "b")
    started = [first, second]
    try:
        await second.ready()
        yield first, second
    finally:
        await asyncio.gather(*(node.stop() for node in started))


async def online(node: Node, viewer: Member, user_id: str) -> bool:
    response = await node.http.post("/presence", json={"user_ids": [user_id]}, headers=viewer.auth)
    assert response.status_code == 200, response.text
    value: bool = response.json()["statuses"][user_id]
    return value


async def eventually(check: Any, expected: Any, within: float = 30.0) -> None:
    """Poll until ``check()`` gives ``expected``; the bound only stops a broken run."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if await check() == expected:
            return
        await asyncio.sleep(0.05)
    assert await check() == expected


async def greeted(url: str, member: Member) -> Any:
    ws = await connect(url, additional_headers={"Authorization": f"Bearer {member.token}"})
    assert json.loads(await ws.recv())["type"] == "voice.presence.snapshot"
    return ws


async def test_events_cross_nodes(nodes: tuple[Node, Node]) -> None:
    node_a, node_b = nodes
    alice = await node_a.register("alice")
    bob = await node_b.register("bob")
    created = await node_a.http.post("/channels", json={"name_enc": "bmFtZQ=="}, headers=alice.auth)
    assert created.status_code == 201
    channel = created.json()["channel"]["id"]

    on_a = await greeted(node_a.ws_url, alice)
    on_b = await greeted(node_b.ws_url, bob)
    try:
        # bob's arrival on B is announced on A.
        assert await next_of(on_a, "device.joined") == {
            "type": "device.joined",
            "sender": bob.user_id,
            "device_id": bob.device_id,
        }
        # A message sent on node A arrives on node B (and back on A).
        await on_a.send(chat_frame(channel, "aGk="))
        on_b_msg = await next_of(on_b, "channel.message.new")
        assert on_b_msg == await next_of(on_a, "channel.message.new")
        assert on_b_msg["sender"] == alice.user_id

        # Concurrent senders on both nodes: every socket sees the channel's storage order.
        async def burst(ws: Any, tag: str) -> None:
            for i in range(15):
                await ws.send(chat_frame(channel, f"{tag}{i}"))

        await asyncio.gather(burst(on_a, "a"), burst(on_b, "b"))
        seen_a = [(await next_of(on_a, "channel.message.new"))["message_id"] for _ in range(30)]
        seen_b = [(await next_of(on_b, "channel.message.new"))["message_id"] for _ in range(30)]
        history = await node_b.http.get(
            "/channels/messages", params={"channel_id": channel, "limit": 100}, headers=bob.auth
        )
        stored = [m["id"] for m in history.json()["messages"]][1:]
        assert seen_a == stored
        assert seen_b == stored

        # An HTTP change on B reaches A.
        renamed = await node_b.http.patch(
            "/channels", json={"channel_id": channel, "name_enc": "bmV3"}, headers=alice.auth
        )
        assert renamed.status_code == 200
        assert await next_of(on_a, "channel.updated") == {
            "type": "channel.updated",
            "channel_id": channel,
            "channel_name_enc": "bmV3",
            "key_commitment": None,  # these two: added by issue 15
            "key_version": 1,
            "private": False,
            "direct": False,
            "image_file_id": None,  # issue 17
        }

        # Voice across nodes: roster, join, relay.
        await on_a.send(json.dumps({"type": "voice_join", "channel_id": channel}))
        await next_of(on_a, "voice_roster")
        await next_of(on_b, "voice.presence")
        await on_b.send(json.dumps({"type": "voice_join", "channel_id": channel}))
        assert await next_of(on_b, "voice_roster") == {
            "type": "voice_roster",
            "channel_id": channel,
            "users": sorted([alice.user_id, bob.user_id]),
        }
        assert await next_of(on_a, "voice_join") == {
            "type": "voice_join",
            "channel_id": channel,
            "sender": bob.user_id,
        }
        await on_b.send(
            json.dumps(
                {
                    "type": "webrtc_offer",
                    "channel_id": channel,
                    "recipient": alice.user_id,
                    "sdp": "v=0",
                }
            )
        )
        assert await next_of(on_a, "webrtc_offer") == {
            "type": "webrtc_offer",
            "channel_id": channel,
            "sender": bob.user_id,
            "recipient": alice.user_id,
            "sdp": "v=0",
        }
        assert only(await quiet(on_b), "webrtc_offer") == []

        # Logging out on node A closes bob's socket on node B.
        out = await node_a.http.post("/auth/logout", headers=bob.auth)
        assert out.status_code == 200
        await asyncio.wait_for(on_b.wait_closed(), 5)
        assert on_b.close_code == 1008
        assert on_b.close_reason == "revoked"
        # ... and his voice seat on A's side is released.
        assert await next_of(on_a, "voice_leave") == {
            "type": "voice_leave",
            "channel_id": channel,
            "sender": bob.user_id,
        }
    finally:
        await on_a.close()
        await on_b.close()


async def test_presence_and_voice_seats_follow_nodes_that_start_and_die(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    node_a, node_b = nodes
    alice = await node_a.register("alice")
    bob = await node_a.register("bob")
    created = await node_a.http.post("/channels", json={"name_enc": "bmFtZQ=="}, headers=alice.auth)
    channel = created.json()["channel"]["id"]
    on_a = await greeted(node_a.ws_url, alice)
    on_b = await greeted(node_b.ws_url, bob)
    try:
        # Presence is answered from every node's view of the whole cluster.
        await eventually(lambda: online(node_a, alice, bob.user_id), True)
        await eventually(lambda: online(node_b, bob, alice.user_id), True)
        await on_b.send(json.dumps({"type": "voice_join", "channel_id": channel}))
        await next_of(on_a, "voice.presence")

        # A node started later learns who is connected and who sits in voice.
        node_c = Node(node_a.db_url, node_a.prefix, tmp_path / "c")
        try:
            await node_c.ready()
            carol = await node_c.register("carol")
            await eventually(lambda: online(node_c, carol, bob.user_id), True)
            on_c = await connect(
                node_c.ws_url, additional_headers={"Authorization": f"Bearer {carol.token}"}
            )
            snapshot = json.loads(await on_c.recv())
            assert snapshot == {
                "type": "voice.presence.snapshot",
                "voice_rooms": {channel: [bob.user_id]},
            }
            await on_c.close()
        finally:
            await node_c.stop()

        # Node B dies without a word: the others forget bob's socket and voice seat.
        node_b.proc.kill()
        assert await next_of(on_a, "voice.presence", within=10) == {
            "type": "voice.presence",
            "channel_id": channel,
            "sender": bob.user_id,
            "active": False,
        }
        await eventually(lambda: online(node_a, alice, bob.user_id), False)
    finally:
        await on_a.close()
        await on_b.close()


# ---------------------------------------------------------------- administration

OPERATOR = {"X-Admin-Token": ADMIN_TOKEN}


async def test_settings_and_bans_apply_on_every_node(nodes: tuple[Node, Node]) -> None:
    node_a, node_b = nodes
    admin = await node_a.register("admin")
    bob = await node_a.register("bob")
    on_b = await connect(node_b.ws_url, additional_headers=bob.auth)
    try:
        # The greeting's last frame: the socket is registered (a device is not told of
        # its own arrival, so there is no device.joined to wait for).
        await next_of(on_b, "server.hello")

        # Settings changed on A: B's sockets hear it and B answers with the new values.
        response = await node_a.http.put(
            "/admin/settings",
            json={"server_title": "Cluster", "registration_open": False},
            headers=admin.auth,
        )
        assert response.status_code == 200, response.text
        updated = await next_of(on_b, "server.info.updated", within=10)
        assert updated["server_title"] == "Cluster"
        info = (await node_b.http.get("/server/info")).json()
        assert info["server_title"] == "Cluster"
        assert info["registration_open"] is False
        invite = (await node_b.http.post("/server/invites", headers=OPERATOR)).json()
        refused = await node_b.http.post(
            "/auth/register",
            json={
                "username": "carol",
                "password": "password1",
                "public_key": DeviceKeys().public_b64,
                "invite_token": invite["token"],
            },
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "registration_closed"

        # A ban made on A closes bob's socket on B and B refuses him from then on.
        banned = await node_a.http.post(
            "/admin/bans", json={"user_id": bob.user_id}, headers=OPERATOR
        )
        assert banned.status_code == 201
        assert (await closed_with(on_b))[:2] == (1008, "banned")
        assert (await node_b.http.get("/channels", headers=bob.auth)).status_code == 403
        with pytest.raises(InvalidStatus) as handshake:
            await connect(node_b.ws_url, additional_headers=bob.auth, open_timeout=5)
        assert handshake.value.response.status_code == 403
        assert json.loads(handshake.value.response.body or b"{}")["code"] == "banned"

        # Lifted on B (applied there before it answers): B lets him in again.
        lifted = await node_b.http.delete(f"/admin/bans/{banned.json()['id']}", headers=OPERATOR)
        assert lifted.status_code == 200
        back = await connect(node_b.ws_url, additional_headers=bob.auth)
        await next_of(back, "server.hello")
        await back.close()
    finally:
        await on_b.close()


async def test_key_commitments_reach_every_node(nodes: tuple[Node, Node]) -> None:
    """Issue 15: a directory key commitment set on A is served by B at once, and a
    channel's commitment set on B reaches A's sockets."""
    node_a, node_b = nodes
    admin = await node_a.register("admin")
    bob = await node_a.register("bob")
    on_b = await connect(node_b.ws_url, additional_headers=bob.auth)
    try:
        await next_of(on_b, "server.hello")
        value = commitment(os.urandom(32))
        set_ = await node_a.http.put(
            "/directory/commitment", json={"key_commitment": value}, headers=admin.auth
        )
        assert set_.status_code == 200, set_.text
        updated = await next_of(on_b, "server.info.updated", within=10)
        assert updated["directory_key_commitment"] == value
        # B applied it before its sockets heard of it (admin events are applied first).
        info = (await node_b.http.get("/server/info")).json()
        assert info["directory_key_commitment"] == value
        again = await node_b.http.put(
            "/directory/commitment", json={"key_commitment": value}, headers=admin.auth
        )
        assert again.status_code == 409

        created = await node_a.http.post(
            "/channels", json={"name_enc": "bmFtZQ=="}, headers=admin.auth
        )
        channel = created.json()["channel"]["id"]
        assert (await next_of(on_b, "channel.updated", within=10))["key_commitment"] is None
        later = commitment(os.urandom(32))
        put = await node_b.http.put(
            "/channels/commitment",
            json={"channel_id": channel, "key_commitment": later},
            headers=admin.auth,
        )
        assert put.status_code == 200, put.text
        listed = (await node_a.http.get("/channels", headers=bob.auth)).json()["channels"]
        assert [c["key_commitment"] for c in listed] == [later]
        event = await next_of(on_b, "channel.updated", within=10)
        assert (event["channel_id"], event["key_commitment"]) == (channel, later)
    finally:
        await on_b.close()


async def test_presence_and_role_events_cross_nodes(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    """Issue 15: presence.updated follows a user's first and last socket anywhere in the
    cluster; user.role.updated from PATCH on one node, and from the admin command line,
    reaches sockets on every node."""
    node_a, node_b = nodes
    admin = await node_a.register("admin")
    bob = await node_a.register("bob")
    watcher_a = await greeted(node_a.ws_url, admin)
    carol = await node_a.register("carol")
    watcher_b = await greeted(node_b.ws_url, carol)
    try:
        # carol came online on B: A's watcher hears it.
        assert await next_of(watcher_a, "presence.updated", within=10) == {
            "type": "presence.updated",
            "sender": carol.user_id,
            "online": True,
        }
        # bob's first socket on A: both nodes' watchers hear it once.
        bob_a = await greeted(node_a.ws_url, bob)
        for ws in (watcher_a, watcher_b):
            event = await next_of(ws, "presence.updated", within=10)
            assert (event["sender"], event["online"]) == (bob.user_id, True)
        # A second socket on B, then the one on A closes: bob stays online, nobody hears
        # anything; when the last closes, both hear he is gone.
        bob_b = await greeted(node_b.ws_url, bob)
        await eventually(lambda: online(node_a, admin, bob.user_id), True)
        await bob_a.close()
        await bob_b.close()
        for ws in (watcher_a, watcher_b):
            event = await next_of(ws, "presence.updated", within=10)
            assert (event["sender"], event["online"]) == (bob.user_id, False)

        # Roles: a PATCH on B reaches A's sockets.
        patched = await node_b.http.patch(
            f"/admin/users/{bob.user_id}", json={"is_moderator": True}, headers=admin.auth
        )
        assert patched.status_code == 200, patched.text
        expected = {
            "type": "user.role.updated",
            "sender": bob.user_id,
            "is_admin": False,
            "is_moderator": True,
        }
        assert await next_of(watcher_a, "user.role.updated", within=10) == expected
        assert await next_of(watcher_b, "user.role.updated", within=10) == expected

        # The admin command line, through the broker.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIALTONE_")}
        env.update(
            {
                "DIALTONE_DB_URL": node_a.db_url,
                "DIALTONE_REDIS_URL": REDIS_URL,
                "DIALTONE_REDIS_PREFIX": node_a.prefix,
                "DIALTONE_DATA_DIR": str(tmp_path / "cli"),
                "DIALTONE_USERNAME_PEPPER": PEPPER.decode(),
                "DIALTONE_ADMIN_TOKEN": ADMIN_TOKEN,
                "DIALTONE_CLUSTER_SECRET": CLUSTER_SECRET,
            }
        )
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "dialtone", "admin", "users", "demote", bob.user_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        for ws in (watcher_a, watcher_b):
            event = await next_of(ws, "user.role.updated", within=10)
            assert event == {**expected, "is_moderator": False}
    finally:
        await watcher_a.close()
        await watcher_b.close()


def _about(events: list[dict[str, Any]], channel_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e.get("channel_id") == channel_id
        or e.get("channel", {}).get("id") == channel_id
        or channel_id in e.get("voice_rooms", {})
    ]


async def _refusal(ws: Any, channel_id: str) -> str:
    """The next error's code; nothing of the room may come before it."""
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event["type"] == "error":
            return str(event["code"])
        assert _about([event], channel_id) == [], event


async def test_private_rooms_reach_members_only_on_every_node(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    """Issue 16: each node's delivery filter, loaded at start and kept by the events."""
    node_a, node_b = nodes
    alice = await node_a.register("alice")
    bob = await node_b.register("bob")
    carol = await node_b.register("carol")
    dave = await node_a.register("dave")
    sockets = [
        await greeted(node_a.ws_url, alice),
        await greeted(node_b.ws_url, bob),
        await greeted(node_b.ws_url, carol),
        await greeted(node_a.ws_url, dave),
    ]
    on_alice, on_bob, on_carol, on_dave = sockets
    try:
        made = await node_b.http.post(
            "/channels", json={"name_enc": "cm9vbQ==", "private": True}, headers=bob.auth
        )
        assert made.status_code == 201, made.text
        room = made.json()["channel"]["id"]
        added = await node_b.http.post(
            "/channels/members",
            json={"channel_id": room, "user_id": alice.user_id},
            headers=bob.auth,
        )
        assert added.status_code == 201, added.text
        assert (await next_of(on_alice, "channel.member.added"))["user_id"] == alice.user_id

        await on_bob.send(chat_frame(room, "aGk="))
        assert (await next_of(on_alice, "channel.message.new"))["channel_id"] == room
        await on_alice.send(json.dumps({"type": "voice_join", "channel_id": room}))
        await next_of(on_alice, "voice_roster")
        assert (await next_of(on_bob, "voice.presence"))["sender"] == alice.user_id
        # An outsider on either node: refused as for a missing room.
        await on_dave.send(chat_frame(room, "eA=="))
        assert await _refusal(on_dave, room) == "channel_not_found"
        await on_carol.send(json.dumps({"type": "voice_join", "channel_id": room}))
        assert await _refusal(on_carol, room) == "channel_not_found"

        # A node started now loads the rooms from the database.
        node_c = Node(node_a.db_url, node_a.prefix, tmp_path / "c")
        try:
            await node_c.ready()
            eve = await node_c.register("eve")
            on_eve = await connect(
                node_c.ws_url, additional_headers={"Authorization": f"Bearer {eve.token}"}
            )
            sockets.append(on_eve)
            assert json.loads(await on_eve.recv()) == {
                "type": "voice.presence.snapshot",
                "voice_rooms": {},
            }
            await on_bob.send(chat_frame(room, "c2Vjb25k"))
            await next_of(on_alice, "channel.message.new")
            history = await node_c.http.get(
                "/channels/messages", params={"channel_id": room}, headers=eve.auth
            )
            assert history.status_code == 404
            assert history.json()["code"] == "channel_not_found"
            assert _about(await quiet(on_eve), room) == []
        finally:
            await node_c.stop()

        # bob (node B) removes alice (node A): she hears it, then nothing more of it.
        removed = await node_b.http.delete(
            "/channels/members",
            params={"channel_id": room, "user_id": alice.user_id},
            headers=bob.auth,
        )
        assert removed.status_code == 204, removed.text
        assert (await next_of(on_alice, "channel.member.removed"))["user_id"] == alice.user_id
        assert await next_of(on_alice, "channel.deleted") == {
            "type": "channel.deleted",
            "channel_id": room,
        }
        assert await next_of(on_bob, "channel.rekey_required") == {
            "type": "channel.rekey_required",
            "channel_id": room,
            "key_version": 1,
        }
        assert await next_of(on_bob, "voice.presence") == {
            "type": "voice.presence",
            "channel_id": room,
            "sender": alice.user_id,
            "active": False,
        }
        await on_bob.send(chat_frame(room, "YWZ0ZXI="))
        await next_of(on_bob, "channel.message.new")
        assert _about(await quiet(on_alice), room) == []
        for outsider in (on_carol, on_dave):
            assert _about(await quiet(outsider), room) == []
    finally:
        for ws in sockets:
            await ws.close()
