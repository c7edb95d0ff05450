from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dialtone.db.base import new_id
from dialtone.db.models import ChannelMessage
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.repositories.messages import MessageRepository, StoredMessage
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import DialtoneError, InvalidInput, NotFound
from dialtone.schemas.common import rfc3339
from dialtone.schemas.events import ChannelMessageNew
from dialtone.services.context import Caller, ServerContext

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


def message_event(message: ChannelMessage) -> ChannelMessageNew:
    return ChannelMessageNew(
        message_id=message.id,
        channel_id=message.channel_id,
        sender=message.sender_id,
        sender_name_enc=message.sender_name_enc,
        body=message.body,
        sent_at=rfc3339(message.sent_at),
    )


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message a client asked to send (``channel.message.send``), not yet stored."""

    caller: Caller
    channel_id: str
    body: str
    sender_name_enc: str


def channel_not_found() -> NotFound:
    return NotFound("channel not found", code="channel_not_found")


class HistoryReads(Protocol):
    """What a history page is read from: the request's session, or (the fast path) a
    driver connection of its own (db/repositories/history.py)."""

    async def seq_of(self, channel_id: str, message_id: str) -> int | None: ...

    async def page(
        self,
        channel_id: str,
        limit: int,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> list[StoredMessage]: ...

    async def channel_exists(self, channel_id: str) -> bool: ...


def history_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if limit < 1:
        raise InvalidInput("limit must be a positive number", code="invalid_limit")
    return min(limit, MAX_LIMIT)


async def read_history(
    reads: HistoryReads,
    channel_id: str,
    limit: int | None,
    before: str | None = None,
    after: str | None = None,
) -> list[StoredMessage]:
    """A page of ``GET /channels/messages``: the rules, whatever it is read from."""
    limit = history_limit(limit)
    if before and after:
        raise InvalidInput("use before or after, not both", code="invalid_cursor")
    cursor = before or after
    seq = None
    if cursor:
        seq = await reads.seq_of(channel_id, cursor)
        if seq is None:
            if not await reads.channel_exists(channel_id):
                raise channel_not_found()
            raise InvalidInput("cursor is not a message of this channel", code="invalid_cursor")
    rows = await reads.page(
        channel_id,
        limit,
        before_seq=seq if before else None,
        after_seq=seq if after else None,
    )
    # Only an empty page needs the check: messages are deleted with their channel.
    if not rows and not await reads.channel_exists(channel_id):
        raise channel_not_found()
    return rows


@dataclass(frozen=True, slots=True)
class _SessionReads:
    """HistoryReads on a unit of work's session."""

    messages: MessageRepository
    channels: ChannelRepository

    async def seq_of(self, channel_id: str, message_id: str) -> int | None:
        return await self.messages.seq_of(channel_id, message_id)

    async def page(
        self,
        channel_id: str,
        limit: int,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> list[StoredMessage]:
        return await self.messages.page(
            channel_id, limit, before_seq=before_seq, after_seq=after_seq
        )

    async def channel_exists(self, channel_id: str) -> bool:
        return await self.channels.exists(channel_id)


class MessageService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.channels = ChannelRepository(uow.session)
        self.messages = MessageRepository(uow.session)

    async def history(
        self,
        channel_id: str,
        limit: int | None,
        before: str | None = None,
        after: str | None = None,
    ) -> list[StoredMessage]:
        return await read_history(
            _SessionReads(self.messages, self.channels), channel_id, limit, before, after
        )

    async def post(
        self, caller: Caller, channel_id: str, body: str, sender_name_enc: str
    ) -> ChannelMessage:
        """Persist a message; ``channel.message.new`` goes out after the commit."""
        if not await self.channels.exists(channel_id):
            raise channel_not_found()
        message = await self.messages.add(
            ChannelMessage(
                channel_id=channel_id,
                sender_id=caller.user_id,
                sender_device_id=caller.device_id,
                sender_name_enc=sender_name_enc,
                body=body,
                sent_at=self.ctx.clock(),
            )
        )
        self.uow.emit(message_event(message))
        return message

    async def post_many(
        self, messages: Sequence[NewMessage]
    ) -> list[ChannelMessageNew | DialtoneError]:
        """Persist several messages in this unit of work, stored in the order given.

        One query checks the channels, one executemany inserts the rows. The events are
        queued in the same order and go out only after the commit. A message to a
        missing channel is left out and answered by its error; the others still go in.
        """
        existing = await self.channels.existing({m.channel_id for m in messages})
        clock = self.ctx.clock
        rows: list[dict[str, object]] = []
        outcomes: list[ChannelMessageNew | DialtoneError] = []
        for message in messages:
            if message.channel_id not in existing:
                outcomes.append(channel_not_found())
                continue
            message_id, sent_at = new_id(), clock()
            rows.append(
                {
                    "id": message_id,
                    "channel_id": message.channel_id,
                    "sender_id": message.caller.user_id,
                    "sender_device_id": message.caller.device_id,
                    "sender_name_enc": message.sender_name_enc,
                    "body": message.body,
                    "sent_at": sent_at,
                }
            )
            event = ChannelMessageNew(
                message_id=message_id,
                channel_id=message.channel_id,
                sender=message.caller.user_id,
                sender_name_enc=message.sender_name_enc,
                body=message.body,
                sent_at=rfc3339(sent_at),
            )
            outcomes.append(event)
            self.uow.emit(event)
        await self.messages.insert_many(rows)
        return outcomes
