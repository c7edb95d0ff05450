"""Group commit of channel.message.send (realtime/writer.py) on a real server and database.

Concurrent messages share a transaction; the guarantees must stay those of one
transaction per message: events only after the commit, every client sees each
channel in storage order, a failed batch answers every sender with an error and
publishes nothing, and one bad row does not sink the others.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from websockets.asyncio.client import ClientConnection

from dialtone.config import Settings
from dialtone.realtime.writer import MessageWriter
from tests.conftest import Member
from tests.realtime.conftest import (
    LiveServer,
    chat_frame,
    next_of,
    only,
    quiet,
    running_server,
    with_settings,
)

POISON = "cG9pc29u"  # a body the test's trigger refuses


async def until(check: Callable[[], bool], within: float = 60.0) -> None:
    """Wait for a condition of the in-process server; the bound only stops a broken run."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110  (the writer's queue has no event of its own)
            await asyncio.sleep(0.005)


def writer_of(live: LiveServer) -> MessageWriter:
    writer: MessageWriter = live.server.config.app.state.gateway.writer  # type: ignore[attr-defined]
    return writer


class Outside:
    """A connection of the test's own to the server's database (not the server's pool)."""

    def __init__(self, db_url: str) -> None:
        self.sqlite = db_url.startswith("sqlite")
        self.url = db_url.split(":///", 1)[1] if self.sqlite else db_url.replace("+asyncpg", "")
        self._lite: sqlite3.Connection | None = None
        self._pg: asyncpg.Connection | None = None

    async def __aenter__(self) -> Outside:
        if self.sqlite:
            # Used from worker threads: the server runs on this process's event loop, which a
            # blocking call (waiting out the server's own write) must not hold up.
            self._lite = sqlite3.connect(
                self.url, isolation_level=None, timeout=10, check_same_thread=False
            )
        else:
            self._pg = await asyncpg.connect(self.url)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._lite is not None:
            self._lite.close()
        if self._pg is not None:
            await self._pg.close()

    async def execute(self, sql: str) -> None:
        if self._lite is not None:
            await asyncio.to_thread(self._lite.execute, sql)
        else:
            assert self._pg is not None
            await self._pg.execute(sql)

    async def stored(self, message_id: str) -> bool:
        """Is the row committed? Only committed rows are visible to another connection."""
        sql = "SELECT count(*) FROM channel_messages WHERE id = "
        if self._lite is not None:
            lite = self._lite
            (count,) = await asyncio.to_thread(
                lambda: lite.execute(sql + "?", (message_id,)).fetchone()
            )
        else:
            assert self._pg is not None
            count = await self._pg.fetchval(sql + "$1", message_id)
        return bool(count)

    @asynccontextmanager
    async def write_lock(self) -> AsyncIterator[None]:
        """Hold the right to write channel_messages, so the server's insert waits."""
        if self.sqlite:
            await self.execute("BEGIN IMMEDIATE")
        else:
            await self.execute("BEGIN")
            await self.execute("LOCK TABLE channel_messages IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            await self.execute("ROLLBACK")

    @asynccontextmanager
    async def poison_trigger(self) -> AsyncIterator[None]:
        """A constraint-class error for one body (a real database refusal, not a mock)."""
        if self.sqlite:
            await self.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON channel_messages "
                f"WHEN NEW.body = '{POISON}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
            )
        else:
            await self.execute(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.body = '{POISON}' THEN "
                "RAISE EXCEPTION 'poisoned' USING ERRCODE = 'check_violation'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            await self.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON channel_messages "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )
        try:
            yield
        finally:
            if self.sqlite:
                await self.execute("DROP TRIGGER poison")
            else:
                await self.execute("DROP TRIGGER poison ON channel_messages")
                await self.execute("DROP FUNCTION poison()")


async def history(live: LiveServer, member: Member, channel: str) -> list[dict[str, Any]]:
    response = await live.http.get(
        "/channels/messages", params={"channel_id": channel, "limit": 500}, headers=member.auth
    )
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def messages_seen(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [await next_of(ws, "channel.message.new") for _ in range(count)]


async def test_concurrent_senders_share_commits_and_every_client_sees_storage_order(
    live: LiveServer, admin: Member
) -> None:
    channels = [await live.create_channel(admin), await live.create_channel(admin)]
    members = [admin] + [await live.register() for _ in range(5)]
    sockets = [await live.connect(m) for m in members]
    watcher = await live.connect(await live.register())
    per_sender = 30

    async def burst(ws: ClientConnection, index: int) -> None:
        # Pipelined: never waits for an answer, so frames queue up behind each batch.
        for i in range(per_sender):
            await ws.send(chat_frame(channels[(index + i) % 2], f"{index}-{i}"))

    await asyncio.gather(*(burst(ws, i) for i, ws in enumerate(sockets)))
    total = per_sender * len(sockets)
    seen = await asyncio.gather(*(messages_seen(ws, total) for ws in [*sockets, watcher]))
    for ws in sockets:
        assert only(await quiet(ws, 0.1), "error") == []

    for channel in channels:
        stored = [m["id"] for m in await history(live, admin, channel)]
        assert len(stored) == total // 2
        # Every client, senders and watcher alike, saw this channel in storage order.
        for events in seen:
            assert [e["message_id"] for e in events if e["channel_id"] == channel] == stored
    # Each sender's messages were stored in the order it sent them.
    bodies = [e["body"] for e in seen[-1]]
    for index in range(len(sockets)):
        mine = [int(b.split("-")[1]) for b in bodies if b.startswith(f"{index}-")]
        assert mine == list(range(per_sender))
    # That commits carry several senders' messages is shown without timing in
    # test_one_refused_row_fails_only_its_sender (how many, under load, is bench/'s).


async def test_an_event_goes_out_only_after_its_row_is_committed(
    live: LiveServer, admin: Member, settings: Settings
) -> None:
    channel = await live.create_channel(admin)
    senders = [await live.connect(m) for m in [admin, *[await live.register() for _ in range(3)]]]
    listener = await live.connect(await live.register())
    per_sender = 40

    async def burst(ws: ClientConnection, index: int) -> None:
        for i in range(per_sender):
            await ws.send(chat_frame(channel, f"{index}-{i}"))

    async with Outside(settings.db_url) as db:
        sending = asyncio.gather(*(burst(ws, i) for i, ws in enumerate(senders)))
        not_yet_committed = []
        for _ in range(per_sender * len(senders)):
            event = await next_of(listener, "channel.message.new")
            # Looked up from another connection the moment the event arrives.
            if not await db.stored(event["message_id"]):
                not_yet_committed.append(event["message_id"])
        await sending
    assert not_yet_committed == []
    # Read what the senders were sent too, so that their sockets close promptly.
    await asyncio.gather(*(messages_seen(ws, per_sender * len(senders)) for ws in senders))


async def test_a_failed_batch_answers_every_sender_with_an_error_and_publishes_nothing(
    settings: Settings,
) -> None:
    # A short database timeout: a writer kept out of the table fails instead of waiting.
    async with running_server(with_settings(settings, db_timeout=0.5)) as live:
        admin = await live.register("admin")
        channel = await live.create_channel(admin)
        members = [admin, *[await live.register() for _ in range(3)]]
        sockets = [await live.connect(m) for m in members]
        watcher = await live.connect(await live.register())
        writer = writer_of(live)
        async with Outside(settings.db_url) as db:
            async with db.write_lock():
                before = len(writer.batch_sizes)
                for i, ws in enumerate(sockets):
                    await ws.send(chat_frame(channel, f"locked-{i}"))
                errors = [await next_of(ws, "error", within=10) for ws in sockets]
                failed_batches = list(writer.batch_sizes)[before:]
            assert [e["code"] for e in errors] == ["server_error"] * len(sockets)
            # Every message was in a failed batch, and none of the senders got an event.
            assert sum(failed_batches) == len(sockets)
            for ws in [*sockets, watcher]:
                assert only(await quiet(ws, 0.3), "channel.message.new") == []
            assert await history(live, admin, channel) == []

            # The lock is gone: the same sockets store and hear their messages again.
            for i, ws in enumerate(sockets):
                await ws.send(chat_frame(channel, f"again-{i}"))
            acked = [e["body"] for e in await messages_seen(watcher, len(sockets))]
            stored = [m["body"] for m in await history(live, admin, channel)]
            assert sorted(acked) == sorted(stored) == [f"again-{i}" for i in range(len(sockets))]
            assert acked == stored
            for event_id in [m["id"] for m in await history(live, admin, channel)]:
                assert await db.stored(event_id)


async def test_one_refused_row_fails_only_its_sender(live: LiveServer, admin: Member) -> None:
    channel = await live.create_channel(admin)
    members = [admin, *[await live.register() for _ in range(3)]]
    sockets = [await live.connect(m) for m in members]
    watcher = await live.connect(await live.register())
    writer = writer_of(live)
    bodies = ["first", "second", POISON, "fourth"]
    async with Outside(live.settings.db_url) as db, db.poison_trigger():
        async with db.write_lock():
            # The first message's batch waits for the lock; the next three queue behind it
            # and form one batch, in the order they arrived. Each step waits for the
            # writer's own state, not for time to pass.
            before = len(writer.batch_sizes)
            await sockets[0].send(chat_frame(channel, bodies[0]))
            await until(lambda: len(writer.batch_sizes) > before)
            for queued, (ws, body) in enumerate(zip(sockets[1:], bodies[1:], strict=True), 1):
                await ws.send(chat_frame(channel, body))
                await until(lambda n=queued: writer.waiting == n)
        refused = await next_of(sockets[2], "error", within=10)
        assert refused["code"] == "server_error"
        delivered = [e["body"] for e in await messages_seen(watcher, 3)]
        assert only(await quiet(watcher, 0.3), "channel.message.new") == []
    assert 3 in writer.batch_sizes
    assert delivered == ["first", "second", "fourth"]
    assert [m["body"] for m in await history(live, admin, channel)] == delivered
    # The others were answered with their own event, not an error.
    for ws in (sockets[0], sockets[1], sockets[3]):
        assert only(await quiet(ws, 0.1), "error") == []


async def test_message_to_a_missing_channel_is_refused_alone(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    alice = await live.connect(admin)
    bob = await live.connect(member)
    await asyncio.gather(
        alice.send(chat_frame("00000000-0000-0000-0000-000000000000", "lost")),
        bob.send(chat_frame(channel, "kept")),
    )
    assert (await next_of(alice, "error"))["code"] == "channel_not_found"
    assert (await next_of(bob, "channel.message.new"))["body"] == "kept"
    assert [m["body"] for m in await history(live, member, channel)] == ["kept"]
