"""``POST /sync``: what a waking client missed in the rooms it knows, and which rooms
came and went, in one round trip (the open group server's compact poll).

Per requested channel: the messages after the client's last one (history's rules and
shape, oldest first, bounded), and the deletions since its last one. Rooms the caller
no longer sees are ``gone``; rooms it sees but did not name are ``added``. The whole
answer is bounded: at most ``MAX_SYNC_MESSAGES`` messages over every channel, so a
client far behind in many rooms gets the first of each and pages the rest with history
(``more``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dialtone.db.models import Channel
from dialtone.db.repositories.messages import (
    MessageModeration,
    MessageRepository,
    StoredMessage,
    Tombstone,
)
from dialtone.db.repositories.sync import SyncRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import InvalidInput
from dialtone.schemas.sync import MAX_SYNC_CHANNELS, MAX_SYNC_LIMIT
from dialtone.services.context import Caller, ServerContext
from dialtone.services.times import parse_time

DEFAULT_SYNC_LIMIT = 50
# Over every channel of one answer (each message is at most 16 KiB of body).
MAX_SYNC_MESSAGES = 1000


@dataclass(frozen=True, slots=True)
class SyncCursor:
    channel_id: str
    last_message_id: str | None = None
    last_deletion_at: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelCatchUp:
    channel_id: str
    messages: list[StoredMessage]
    more: bool
    deleted: list[Tombstone]
    deleted_more: bool


@dataclass(frozen=True, slots=True)
class SyncResult:
    channels: list[ChannelCatchUp]
    gone: list[str]
    # Channels the caller sees that the request did not name, with the caller's role.
    added: list[tuple[Channel, str | None]]


class SyncService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.sync = SyncRepository(uow.session)
        self.messages = MessageRepository(uow.session)
        self.moderation = MessageModeration(uow.session)

    async def catch_up(
        self, caller: Caller, cursors: Sequence[SyncCursor], limit: int | None
    ) -> SyncResult:
        size = DEFAULT_SYNC_LIMIT if limit is None else limit
        if not 1 <= size <= MAX_SYNC_LIMIT:
            raise InvalidInput(f"limit must be 1 to {MAX_SYNC_LIMIT}", code="invalid_limit")
        if len(cursors) > MAX_SYNC_CHANNELS:
            raise InvalidInput(
                f"at most {MAX_SYNC_CHANNELS} channels per sync", code="invalid_input"
            )
        if len({c.channel_id for c in cursors}) != len(cursors):
            raise InvalidInput("a channel is listed twice", code="invalid_input")
        # Every time is checked before anything is read: a bad one is a 400, whatever
        # the order.
        since = {
            c.channel_id: parse_time(c.last_deletion_at, "last_deletion_at")
            for c in cursors
            if c.last_deletion_at is not None
        }
        visible = await self.sync.visible_channels(caller.user_id)
        seen = {channel.id for channel, _ in visible}
        named = {c.channel_id for c in cursors}
        budget = MAX_SYNC_MESSAGES
        channels: list[ChannelCatchUp] = []
        gone: list[str] = []
        for cursor in cursors:
            if cursor.channel_id not in seen:
                gone.append(cursor.channel_id)
                continue
            after = 0
            if cursor.last_message_id is not None:
                seq = await self.messages.seq_of(cursor.channel_id, cursor.last_message_id)
                if seq is None:
                    raise InvalidInput(
                        "last_message_id is not a message of this channel", code="invalid_cursor"
                    )
                after = seq
            want = min(size, budget)
            # One more than wanted tells whether there are others.
            rows = await self.messages.page(cursor.channel_id, want + 1, after_seq=after)
            more = len(rows) > want
            rows = rows[:want]
            budget -= len(rows)
            deleted: list[Tombstone] = []
            deleted_more = False
            moment = since.get(cursor.channel_id)
            if moment is not None:
                deleted = await self.moderation.deletions(cursor.channel_id, moment, size + 1, None)
                deleted_more = len(deleted) > size
                deleted = deleted[:size]
            channels.append(ChannelCatchUp(cursor.channel_id, rows, more, deleted, deleted_more))
        added = [(channel, role) for channel, role in visible if channel.id not in named]
        return SyncResult(channels=channels, gone=gone, added=added)
