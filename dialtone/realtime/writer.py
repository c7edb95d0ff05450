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
  each channel's messages in storage order too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError

from dialtone.db.repositories.locks import AdvisoryLockRepository, lock_key
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import DialtoneError, Unavailable
from dialtone.schemas.events import ChannelMessageNew
from dialtone.services.context import ServerContext
from dialtone.services.messages import MessageService, NewMessage

log = logging.getLogger("dialtone.realtime")

MAX_BATCH = 256


class MessageNotStored(Exception):
    """The batch holding this message failed: nothing of it was stored or published."""


@dataclass(slots=True)
class _Pending:
    message: NewMessage
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


Outcome = ChannelMessageNew | DialtoneError


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
        # Sizes of the batches written so far (for tests and profiling; bounded).
        self.batch_sizes: deque[int] = deque(maxlen=1024)

    @property
    def waiting(self) -> int:
        """Messages queued behind the batch being written (for tests and profiling)."""
        return len(self._queue)

    async def submit(self, message: NewMessage) -> None:
        """Store one message; returns once it is committed and its event published.

        Raises the message's own DialtoneError (e.g. channel_not_found), or
        MessageNotStored when its batch failed.
        """
        if self._closed:
            raise Unavailable("server is shutting down", code="server_error")
        pending = _Pending(message)
        self._queue.append(pending)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dialtone-message-writer")
        await pending.done

    async def close(self, grace: float) -> None:
        """Refuse new messages, store those already queued (bounded by ``grace`` seconds)."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
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

    async def _write(self, batch: list[_Pending]) -> None:
        self.batch_sizes.append(len(batch))
        messages = [p.message for p in batch]
        try:
            if self.cluster_locks:
                outcomes = await self._store_in_cluster(messages)
            else:
                outcomes = await self._store(messages)
        except IntegrityError:
            if len(batch) == 1:
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
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.done.done():
                continue
            if isinstance(outcome, DialtoneError):
                pending.done.set_exception(outcome)
            else:
                pending.done.set_result(None)

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
            return await MessageService(uow, self._ctx).post_many(messages)

    async def _store_in_cluster(self, messages: Sequence[NewMessage]) -> list[Outcome]:
        uow = self._unit_of_work()
        locks = AdvisoryLockRepository(uow.session)
        names = sorted({channel_lock_name(m.channel_id) for m in messages}, key=lock_key)
        held: list[str] = []
        try:
            try:
                for name in names:
                    await locks.acquire(name)
                    held.append(name)
                outcomes = await MessageService(uow, self._ctx).post_many(messages)
                await uow.commit()  # commits, then publishes: both under the locks
                return outcomes
            finally:
                try:
                    await uow.rollback()  # after a failure: the release needs a live transaction
                    for name in reversed(held):
                        await locks.release(name)
                    await uow.session.commit()
                except Exception as exc:
                    # Never give the pool a connection that may still hold a lock: closing
                    # it ends the database session, which releases the locks. The batch's
                    # own outcome (stored and published, or not) stands.
                    log.warning("could not release channel locks: %s", type(exc).__name__)
                    with contextlib.suppress(Exception):
                        await uow.session.invalidate()
        finally:
            await uow.close()
