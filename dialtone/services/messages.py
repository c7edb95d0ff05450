from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dialtone.db.base import new_id
from dialtone.db.models import ChannelMessage
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.repositories.files import FileRepository
from dialtone.db.repositories.members import MemberRepository
from dialtone.db.repositories.messages import MessageRepository, StoredMessage
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import DialtoneError, InvalidInput, NotFound
from dialtone.schemas.common import rfc3339
from dialtone.schemas.events import ChannelMessageNew
from dialtone.schemas.messages import MessageOut
from dialtone.services.context import Caller, ServerContext
from dialtone.services.files import invalid_attachment
from dialtone.services.rotation import key_version_conflict

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
        seq=message.channel_seq,
        client_message_id=message.client_message_id,
        key_version=message.key_version,
        attachments=split_attachments(message.attachments),
    )


def split_attachments(stored: str | None) -> list[str]:
    """The ``attachments`` column: file ids joined by commas, NULL for none."""
    return stored.split(",") if stored else []


def message_out(channel_id: str, row: StoredMessage) -> MessageOut:
    """A history item (both paths of ``GET /channels/messages`` build it here)."""
    return MessageOut(
        row.id,
        channel_id,
        row.sender_id,
        row.sender_name_enc,
        row.body,
        row.sent_at,
        row.seq,
        row.client_message_id,
        row.key_version,
        split_attachments(row.attachments),
    )


@dataclass(frozen=True, slots=True)
class AlreadyStored:
    """A send repeated with a ``client_message_id`` already stored for its sender: the
    stored message, to be sent again to that sender alone as its acknowledgement."""

    event: ChannelMessageNew


Outcome = ChannelMessageNew | AlreadyStored | DialtoneError


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message a client asked to send (``channel.message.send``), not yet stored."""

    caller: Caller
    channel_id: str
    body: str
    sender_name_enc: str
    client_message_id: str | None = None
    key_version: int = 1  # the channel key version the body is sealed with
    attachments: tuple[str, ...] = ()  # file ids (issue 17)


def channel_not_found() -> NotFound:
    return NotFound("channel not found", code="channel_not_found")


class HistoryReads(Protocol):
    """What a history page is read from: the request's session, or (the fast path) a
    driver connection of its own (db/repositories/history.py)."""

    async def seq_of(self, channel_id: str, message_id: str) -> int | None: ...

    async def seq_at(self, channel_id: str, channel_seq: int) -> int: ...

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
    after_seq: int | None = None,
) -> list[StoredMessage]:
    """A page of ``GET /channels/messages``: the rules, whatever it is read from."""
    limit = history_limit(limit)
    if before and after:
        raise InvalidInput("use before or after, not both", code="invalid_cursor")
    if after_seq is not None and (before or after):
        raise InvalidInput("after_seq takes no other cursor", code="invalid_cursor")
    cursor = before or after
    seq = None
    if after_seq is not None:
        # A channel position (the ``seq`` of events and history items): the page starts
        # with the first message numbered above it.
        after = "after_seq"
        seq = await reads.seq_at(channel_id, after_seq)
    elif cursor:
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

    async def seq_at(self, channel_id: str, channel_seq: int) -> int:
        return await self.messages.seq_at(channel_id, channel_seq)

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
        self.files = FileRepository(uow.session)

    async def history(
        self,
        channel_id: str,
        limit: int | None,
        before: str | None = None,
        after: str | None = None,
        after_seq: int | None = None,
        *,
        caller: Caller | None = None,
    ) -> list[StoredMessage]:
        """``caller``: who reads; a private room they are not in does not exist."""
        members = MemberRepository(self.uow.session)
        if caller is not None and await members.visible(channel_id, caller.user_id) is None:
            raise channel_not_found()
        return await read_history(
            _SessionReads(self.messages, self.channels),
            channel_id,
            limit,
            before,
            after,
            after_seq,
        )

    async def post(
        self, caller: Caller, channel_id: str, body: str, sender_name_enc: str
    ) -> ChannelMessageNew:
        """Persist one message; ``channel.message.new`` goes out after the commit."""
        (outcome,) = await self.post_many([NewMessage(caller, channel_id, body, sender_name_enc)])
        if isinstance(outcome, DialtoneError):
            raise outcome
        return outcome.event if isinstance(outcome, AlreadyStored) else outcome

    async def _claim(self, index: int, message: NewMessage, message_ids: dict[int, str]) -> bool:
        """Give the message its id now and claim its files for it: False when one is not
        the sender's own unclaimed upload to this channel (or is listed twice)."""
        if len(set(message.attachments)) != len(message.attachments):
            return False
        message_ids[index] = new_id()
        return await self.files.claim(
            message.attachments, message_ids[index], message.caller.user_id, message.channel_id
        )

    async def post_many(self, messages: Sequence[NewMessage]) -> list[Outcome]:
        """Persist several messages in this unit of work, stored in the order given.

        A send whose ``client_message_id`` its sender already used is answered with the
        stored message (``AlreadyStored``), not stored again; the unique index on
        (sender, client id) backs this against a concurrent writer (another node), whose
        insert then fails the batch with an IntegrityError: the message writer retries
        it, and finds the stored row. Each channel's counter is raised in one statement
        (``UPDATE ... RETURNING``, in channel order so that two batches cannot deadlock),
        which also tells which channels exist: a message to a missing channel is
        answered by its error, the others still go in. One executemany inserts the rows;
        the events are queued in storage order and go out only after the commit.
        """
        outcomes: list[Outcome | None] = [None] * len(messages)
        stored = await self.messages.by_client_ids(
            {(m.caller.user_id, m.client_message_id) for m in messages if m.client_message_id}
        )
        fresh: list[int] = []
        message_ids: dict[int, str] = {}
        claimed: dict[tuple[str, str], int] = {}  # (sender, client id) → index in this batch
        duplicates: list[tuple[int, int]] = []  # (index, index of the first one)
        for index, message in enumerate(messages):
            key = (message.caller.user_id, message.client_message_id or "")
            if message.client_message_id:
                if key in stored:
                    outcomes[index] = AlreadyStored(message_event(stored[key]))
                    continue
                if key in claimed:
                    duplicates.append((index, claimed[key]))
                    continue
                claimed[key] = index
            fresh.append(index)
        # A private room is there only for its members: for anyone else the send is
        # answered as one to a missing channel.
        hidden = await MemberRepository(self.uow.session).hidden(
            {(messages[i].channel_id, messages[i].caller.user_id) for i in fresh}
        )
        if hidden:
            for index in fresh:
                message = messages[index]
                if (message.channel_id, message.caller.user_id) in hidden:
                    outcomes[index] = channel_not_found()
            fresh = [i for i in fresh if outcomes[i] is None]
        wanted: dict[str, int] = {}
        for index in fresh:
            channel_id = messages[index].channel_id
            wanted[channel_id] = wanted.get(channel_id, 0) + 1
        # The counter's new top and the key version of each channel, in one statement.
        tops = await self.channels.take_seqs(wanted)
        # A message sealed with a key version the channel does not have yet is refused,
        # and its number given back (seq skips no number): rare, so the hot path pays
        # nothing but a column more in the counter's RETURNING.
        refused: dict[str, int] = {}
        for index in fresh:
            message = messages[index]
            top = tops.get(message.channel_id)
            if top is None:
                continue
            if message.key_version > top[1]:
                outcomes[index] = key_version_conflict()
            elif message.attachments and not await self._claim(index, message, message_ids):
                # Checked after the membership and key version, so that a refused
                # message claims no file; its number is given back like the others.
                outcomes[index] = invalid_attachment()
            else:
                continue
            refused[message.channel_id] = refused.get(message.channel_id, 0) + 1
        if refused:
            await self.channels.give_back_seqs(refused)
        # The next number of each channel: what the counter was before this batch.
        next_seq = {
            channel_id: top - wanted[channel_id] + 1 for channel_id, (top, _) in tops.items()
        }
        clock = self.ctx.clock
        rows: list[dict[str, object]] = []
        for index in fresh:
            message = messages[index]
            if outcomes[index] is not None:
                continue  # refused above
            seq = next_seq.get(message.channel_id)
            if seq is None:
                outcomes[index] = channel_not_found()
                continue
            next_seq[message.channel_id] = seq + 1
            message_id, sent_at = message_ids.get(index) or new_id(), clock()
            attachments = ",".join(message.attachments) or None
            rows.append(
                {
                    "id": message_id,
                    "channel_id": message.channel_id,
                    "sender_id": message.caller.user_id,
                    "sender_device_id": message.caller.device_id,
                    "sender_name_enc": message.sender_name_enc,
                    "body": message.body,
                    "sent_at": sent_at,
                    "channel_seq": seq,
                    "client_message_id": message.client_message_id,
                    "key_version": message.key_version,
                    "attachments": attachments,
                }
            )
            event = ChannelMessageNew(
                message_id=message_id,
                channel_id=message.channel_id,
                sender=message.caller.user_id,
                sender_name_enc=message.sender_name_enc,
                body=message.body,
                sent_at=rfc3339(sent_at),
                seq=seq,
                client_message_id=message.client_message_id,
                key_version=message.key_version,
                attachments=list(message.attachments),
            )
            outcomes[index] = event
            self.uow.emit(event)
        for index, first in duplicates:
            earlier = outcomes[first]
            outcomes[index] = (
                AlreadyStored(earlier) if isinstance(earlier, ChannelMessageNew) else earlier
            )
        await self.messages.insert_many(rows)
        return [outcome for outcome in outcomes if outcome is not None]
