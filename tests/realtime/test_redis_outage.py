"""Issue 20: a Redis outage under two nodes loses no message in silence.

Two server processes share PostgreSQL and a Redis of this test's own, which is killed
(SIGKILL) in the middle of a burst from senders on both nodes and started again. Each
client behaves as docs/API.md tells clients to: it numbers what it holds by ``seq``,
and when closed with 1013 it reconnects, pages the hole with ``after_seq=`` and resends
what was not acknowledged (same ``client_message_id``). Afterwards: every socket either
received every message stored while it was open or was closed with 1013 ``catch_up``;
every client holds every message exactly once (no gap); nothing was stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import asyncio as redis_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.conftest import Member, truncate_all
from tests.realtime.test_multinode import Node, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PER_SENDER = 40
KILL_AT = 10  # acknowledged sends per sender when Redis is killed
RESTART_AT = 25  # ... and when it is started again


class OwnRedis:
    """A redis-server of this test's own (never the shared one), killed and restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self.spawn()
        client = redis_asyncio.Redis.from_url(self.url)
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                try:
                    await client.ping()
                    return
                except Exception:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@dataclass
class SocketLife:
    """One connection: the highest seq the client held once it had caught up after
    opening, what arrived on it live, and how it ended."""

    caught_up_to: int = 0
    live: set[int] = field(default_factory=set)
    close: tuple[int, str] | None = None


class Client:
    """A client as docs/API.md describes one: catch-up on open, resend until acknowledged."""

    def __init__(self, node: Node, member: Member, channel: str) -> None:
        self.node, self.member, self.channel = node, member, channel
        self.held: dict[int, str] = {}  # seq → message_id
        self.lives: list[SocketLife] = []
        self.unacked: dict[str, str] = {}  # client_message_id → frame
        self.acked: dict[str, str] = {}  # client_message_id → message_id
        self.changed = asyncio.Event()
        self.ws: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def contiguous(self) -> int:
        n = 0
        while n + 1 in self.held:
            n += 1
        return n

    async def catch_up(self) -> None:
        while True:
            response = await self.node.http.get(
                "/channels/messages",
                params={"channel_id": self.channel, "after_seq": self.contiguous(), "limit": 500},
                headers=self.member.auth,
            )
            assert response.status_code == 200, response.text
            page = response.json()["messages"]
            for item in page:
                self.take(item["seq"], item["id"], item.get("client_message_id"), item["sender_id"])
            if len(page) < 500:
                return

    def take(self, seq: int, message_id: str, client_id: str | None, sender: str) -> None:
        assert self.held.setdefault(seq, message_id) == message_id, "one seq, one message"
        if sender == self.member.user_id and client_id in self.unacked:
            del self.unacked[client_id]
            self.acked[client_id] = message_id
        self.changed.set()

    async def open(self) -> ClientConnection:
        while True:
            try:
                ws = await connect(
                    self.node.ws_url,
                    additional_headers={"Authorization": f"Bearer {self.member.token}"},
                    open_timeout=10,
                )
                await self.catch_up()
                return ws
            except (OSError, InvalidHandshake, ConnectionClosed, httpx.HTTPError):
                await asyncio.sleep(0.1)  # a reconnect's backoff, not a synchronisation

    async def run(self) -> None:
        while True:
            ws = await self.open()
            life = SocketLife(caught_up_to=self.contiguous())
            self.lives.append(life)
            self.ws = ws
            self.connected.set()
            for frame in list(self.unacked.values()):  # resend what was not acknowledged
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(frame)
            try:
                async for raw in ws:
                    event: dict[str, Any] = json.loads(raw)
                    if event["type"] == "channel.message.new":
                        life.live.add(event["seq"])
                        self.take(
                            event["seq"],
                            event["message_id"],
                            event.get("client_message_id"),
                            event["sender"],
                        )
                    elif event["type"] == "error":
                        raise AssertionError(f"error event: {event}")
            except ConnectionClosed:
                pass
            self.connected.clear()
            self.ws = None
            life.close = (ws.close_code or 1006, ws.close_reason or "")
            assert life.close == (1013, "catch_up"), life.close

    async def send(self, n: int) -> None:
        client_id = f"{self.member.user_id[:8]}-{n}"
        frame = json.dumps(
            {
                "type": "channel.message.send",
                "channel_id": self.channel,
                "body": f"bXNn{n}",
                "sender_name_enc": "bg==",
                "client_message_id": client_id,
            }
        )
        self.unacked[client_id] = frame
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame)
        # Acknowledged (live, or by a catch-up page after a reconnect and a resend).
        while client_id in self.unacked:
            self.changed.clear()
            await self.wait_changed()

    async def wait_changed(self, within: float = 60) -> None:
        """Until something arrives; a client whose socket loop failed fails the test."""
        changed = asyncio.ensure_future(self.changed.wait())
        assert self.task is not None
        done, _ = await asyncio.wait(
            {changed, self.task}, timeout=within, return_when="FIRST_COMPLETED"
        )
        changed.cancel()
        if self.task in done:
            self.task.result()
            raise AssertionError("client loop ended")
        if not done:
            lives = [(life.caught_up_to, len(life.live), life.close) for life in self.lives]
            raise AssertionError(
                f"nothing for {within}s: held {sorted(self.held)[-3:]}, "
                f"unacked {list(self.unacked)[:3]}, lives {lives}"
            )


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    redis = OwnRedis()
    await redis.start()
    try:
        yield redis
    finally:
        redis.kill()


@pytest.fixture
def db(pg_database: str) -> str:
    asyncio.run(truncate_all(pg_database))
    return pg_database


async def test_redis_killed_mid_burst_loses_nothing_silently(
    db: str, own_redis: OwnRedis, tmp_path: Path
) -> None:
    prefix = f"dialtone-test-{secrets.token_hex(6)}:"
    node_a = Node(db, prefix, tmp_path / "a", redis_url=own_redis.url)
    node_b = Node(db, prefix, tmp_path / "b", redis_url=own_redis.url)
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.gather(node_a.ready(), node_b.ready())
        alice, carol = await node_a.register("alice"), await node_a.register("carol")
        bob, dave = await node_b.register("bob"), await node_b.register("dave")
        made = await node_a.http.post(
            "/channels", json={"name_enc": "cm9vbQ=="}, headers=alice.auth
        )
        assert made.status_code == 201, made.text
        channel = made.json()["channel"]["id"]
        senders = [Client(node_a, alice, channel), Client(node_b, bob, channel)]
        watchers = [Client(node_a, carol, channel), Client(node_b, dave, channel)]
        clients = senders + watchers
        tasks = []
        for c in clients:
            c.task = asyncio.create_task(c.run())
            tasks.append(c.task)
        await asyncio.gather(*(c.connected.wait() for c in clients))

        progress = asyncio.Condition()

        async def burst(sender: Client) -> None:
            for n in range(PER_SENDER):
                await sender.send(n)
                async with progress:
                    progress.notify_all()

        async def reached(count: int) -> None:
            async with progress:
                await progress.wait_for(lambda: all(len(s.acked) >= count for s in senders))

        bursts = asyncio.gather(*(burst(s) for s in senders))

        async def until(count: int) -> None:
            waiting = asyncio.ensure_future(reached(count))
            done, _ = await asyncio.wait(
                {waiting, bursts}, timeout=120, return_when="FIRST_COMPLETED"
            )
            waiting.cancel()
            if bursts in done:
                bursts.result()
            assert waiting in done, "senders stalled"

        await until(KILL_AT)
        own_redis.kill()
        await until(RESTART_AT)
        await own_redis.start()
        await asyncio.wait_for(bursts, 180)

        total = 2 * PER_SENDER

        async def everyone_has_everything() -> None:
            for client in clients:
                while len(client.held) < total:
                    client.changed.clear()
                    await client.wait_changed()

        await asyncio.wait_for(everyone_has_everything(), 120)
        for task in tasks:
            assert not task.done(), task  # no client saw an unexpected close or error

        # Nothing stored twice: one message per client_message_id, numbered 1..total.
        response = await node_b.http.get(
            "/channels/messages",
            params={"channel_id": channel, "limit": 500},
            headers=dave.auth,
        )
        stored = response.json()["messages"]
        assert [m["seq"] for m in stored] == list(range(1, total + 1))
        ids = [m["client_message_id"] for m in stored]
        assert len(set(ids)) == total
        for client in clients:
            # Zero gaps, and what each holds is what was stored.
            assert client.held == {m["seq"]: m["id"] for m in stored}
            # Every socket that was not closed for catch-up got, live, every message
            # stored after it had caught up.
            for life in client.lives:
                if life.close is None:
                    assert life.live >= set(range(life.caught_up_to + 1, total + 1))
        # The outage was noticed, not papered over: sockets were closed for catch-up.
        assert any(life.close == (1013, "catch_up") for c in clients for life in c.lives)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(node_a.stop(), node_b.stop())
