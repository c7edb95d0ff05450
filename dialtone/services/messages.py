from __future__ import annotations

from dialtone.db.models import ChannelMessage
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.repositories.messages import MessageRepository, StoredMessage
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import InvalidInput, NotFound
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
        if limit is None:
            limit = DEFAULT_LIMIT
        if limit < 1:
            raise InvalidInput("limit must be a positive number", code="invalid_limit")
        limit = min(limit, MAX_LIMIT)
        if before and after:
            raise InvalidInput("use before or after, not both", code="invalid_cursor")
        cursor = before or after
        seq = None
        if cursor:
            seq = await self.messages.seq_of(channel_id, cursor)
            if seq is None:
                await self._require_channel(channel_id)
                raise InvalidInput("cursor is not a message of this channel", code="invalid_cursor")
        rows = await self.messages.page(
            channel_id,
            limit,
            before_seq=seq if before else None,
            after_seq=seq if after else None,
        )
        if not rows:
            # Only an empty page needs the check: messages are deleted with their channel.
            await self._require_channel(channel_id)
        return rows

    async def _require_channel(self, channel_id: str) -> None:
        if not await self.channels.exists(channel_id):
            raise NotFound("channel not found", code="channel_not_found")

    async def post(
        self, caller: Caller, channel_id: str, body: str, sender_name_enc: str
    ) -> ChannelMessage:
        """Persist a message; ``channel.message.new`` goes out after the commit."""
        if not await self.channels.exists(channel_id):
            raise NotFound("channel not found", code="channel_not_found")
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
