"""Group commit for ``channel.message.send``: messages that arrive together share a commit.

A socket handles its frames one at a time, so concurrent senders are concurrent
requests. They queue here, and one task per process stores them: it takes what has
queued (up to ``max_batch``), checks the channels and inserts the rows in one
transaction (one query, one executemany, one commit), publishes the events in storage
order, then answers each sender. While one batch is being written the next one fills
up: the busier the server, the bigger the batches, and at low load a message waits for
nobody. (A timer that waits a few hundred microseconds for more messages was measured
and dropped: it made batches more even but throughput lower.)

The guarantees are those of one transaction per message:

- an event goes out only after its row is committed; a batch that fails publishes
  nothing, and every sender in it gets an error (a message to a missing channel is
  answered alone, the rest of its batch is stored);
- one writer, one batch at a time, each published before the next begins: on this node
  every client sees each channel in storage order;
- with several nodes on one PostgreSQL database, the advisory locks of the batch's
  channels are taken (in key order, so two nodes cannot deadlock) before the insert
  and released only after the events are handed to the broker, so the broker carries
  each channel's messages in storage order too. They are held on a connection of the
  writer's own (``HeldLocks``), not on the batch's session, which gives its connection
  back to the pool at the commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from dialtone.db.repositories.locks import HeldLocks
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import DialtoneError, Unavailable
from dialtone.metrics import NO_METRICS, Metrics
from dialtone.schemas.events import ChannelMessageNew
from dialtone.services.channels import ChannelService
from dialtone.services.context import ServerContext
from dialtone.services.messages import (
    AlreadyStored,
    MessageService,
    NewMessage,
    Outcome,
    channel_not_found,
)

log = logging.getLogger("dialtone.realtime")

MAX_BATCH = 256
_ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")


class MessageNotStored(Exception):
    """The batch holding this message failed: nothing of it was stored or published."""


@dataclass(slots=True)
class _Pending:
    message: NewMessage
    # None: stored and published; an event: the send repeated a stored client id.
    done: asyncio.Future[ChannelMessageNew | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def channel_lock_name(channel_id: str) -> str:
    return f"dialtone.channel.{channel_id}"


class MessageWriter:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        ctx: ServerContext,
        *,
        cluster_locks: bool,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._ctx = ctx
        self.cluster_locks = cluster_locks
        self.max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._locks: HeldLocks | None = None
        # Sizes of the batches written so far (for tests and profiling; bounded).
        self.batch_sizes: deque[int] = deque(maxlen=1024)
        self.metrics: Metrics = NO_METRICS

    @property
    def waiting(self) -> int:
        """Messages queued behind the batch being written (for tests and profiling)."""
        return len(self._queue)

    async def submit(self, message: NewMessage) -> ChannelMessageNew | None:
        """Store one message; returns once it is committed and its event published.

        Returns the stored message's event, not published again, when the message
        repeats a ``client_message_id`` its sender used before (the caller answers the
        sender with it). Raises the message's own DialtoneError (e.g.
        channel_not_found), or MessageNotStored when its batch failed.
        """
        if self._closed:
            raise Unavailable("server is shutting down", code="server_error")
        pending = _Pending(message)
        self._queue.append(pending)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dialtone-message-writer")
        return await pending.done

    async def close(self, grace: float) -> None:
        """Refuse new messages, store those already queued (bounded by ``grace`` seconds)."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            await self._close_locks()
            return
        self._wake.set()
        try:
            await asyncio.wait_for(task, grace)
        except TimeoutError:
            pass
        finally:
            while self._queue:
                pending = self._queue.popleft()
                if not pending.done.done():
                    pending.done.set_exception(MessageNotStored("server shut down"))
            await self._close_locks()

    async def _close_locks(self) -> None:
        locks, self._locks = self._locks, None
        if locks is not None:
            await locks.close()

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                self._fail(batch, MessageNotStored("cancelled"))
                raise

    async def _write(self, batch: list[_Pending], retry: bool = True) -> None:
        self.batch_sizes.append(len(batch))
        started = time.perf_counter()
        messages = [p.message for p in batch]
        try:
            if self.cluster_locks:
                outcomes = await self._store_in_cluster(messages)
            else:
                outcomes = await self._store(messages)
        except IntegrityError:
            if len(batch) == 1 and retry and batch[0].message.client_message_id:
                # Most likely the same (sender, client id) stored meanwhile by another
                # writer (node): once more, and the stored row answers it.
                await self._write(batch, retry=False)
                return
            if len(batch) == 1:
                if await self._channel_gone(batch[0].message.channel_id):
                    # Deleted between the check and the insert: answer as if it came second.
                    if not batch[0].done.done():
                        batch[0].done.set_exception(channel_not_found())
                    return
                self._failed(batch, "IntegrityError")
                return
            # One row broke a constraint (say, its channel was deleted between the
            # check and the insert): store the others one by one, in the same order.
            for pending in batch:
                await self._write([pending])
            return
        except Exception as exc:
            self._failed(batch, type(exc).__name__)
            return
        self.metrics.message_batch(len(batch), time.perf_counter() - started, outcomes)
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.done.done():
                continue
            if isinstance(outcome, DialtoneError):
                pending.done.set_exception(outcome)
            elif isinstance(outcome, AlreadyStored):
                pending.done.set_result(outcome.event)
            else:
                pending.done.set_result(None)

    async def _channel_gone(self, channel_id: str) -> bool:
        try:
            async with self._unit_of_work() as uow:
                await ChannelService(uow, self._ctx).require(channel_id)
        except DialtoneError as exc:
            return exc.status == 404
        except Exception:
            return False
        return False

    def _failed(self, batch: list[_Pending], reason: str) -> None:
        # The type only: a database error's text can carry the statement's parameters.
        log.error("message batch failed, %d message(s) not stored: %s", len(batch), reason)
        self._fail(batch, MessageNotStored(reason))

    @staticmethod
    def _fail(batch: list[_Pending], exc: Exception) -> None:
        for pending in batch:
            if not pending.done.done():
                pending.done.set_exception(MessageNotStored(str(exc)))

    async def _store(self, messages: Sequence[NewMessage]) -> list[Outcome]:
        """One transaction; its events are published by the unit of work after the commit."""
        async with self._unit_of_work() as uow:
            await self._commit_mode(uow)
            return await MessageService(uow, self._ctx).post_many(messages)

    async def _commit_mode(self, uow: UnitOfWork) -> None:
        """DIALTONE_MESSAGE_SYNC_COMMIT=off on PostgreSQL: this transaction's commit does
        not wait for its WAL to reach the disk (an fsync: milliseconds on many disks,
        most of a message's latency at moderate load). Only message batches."""
        if not self._ctx.settings.message_sync_commit and not self._ctx.settings.is_sqlite:
            await uow.session.execute(_ASYNC_COMMIT)

    async def _store_in_cluster(self, messages: Sequence[NewMessage]) -> list[Outcome]:
        uow = self._unit_of_work()
        if self._locks is None:
            engine = uow.session.bind
            assert isinstance(engine, AsyncEngine)
            self._locks = HeldLocks(engine)
        locks = self._locks
        try:
            try:
                await locks.acquire([channel_lock_name(m.channel_id) for m in messages])
                await self._commit_mode(uow)
                outcomes = await MessageService(uow, self._ctx).post_many(messages)
                await uow.commit()  # commits, then publishes: both under the locks
                return outcomes
            finally:
                try:
                    await locks.release_all()
                except Exception as exc:
                    # Never keep a connection that may still hold a lock: dropping it ends
                    # the database session, which releases the locks. The batch's own
                    # outcome (stored and published, or not) stands.
                    log.warning("could not release channel locks: %s", type(exc).__name__)
                    await locks.discard()
        finally:
            await uow.close()
