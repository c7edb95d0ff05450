from __future__ import annotations

from collections.abc import Sequence

from dialtone.db.models import Channel
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Forbidden, NotFound
from dialtone.schemas.events import ChannelDeleted, ChannelUpdated
from dialtone.services.context import Caller, ServerContext


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise Forbidden("admin only", code="not_admin")


class ChannelService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.channels = ChannelRepository(uow.session)

    async def require(self, channel_id: str) -> None:
        """Raise channel_not_found unless the channel exists."""
        if not await self.channels.exists(channel_id):
            raise NotFound("channel not found", code="channel_not_found")

    async def list(self) -> Sequence[Channel]:
        return await self.channels.all()

    async def create(self, caller: Caller, name_enc: str) -> Channel:
        require_admin(caller)
        channel = await self.channels.add(
            Channel(name_enc=name_enc, created_by=caller.user_id, created_at=self.ctx.clock())
        )
        self.uow.emit(ChannelUpdated(channel_id=channel.id, channel_name_enc=channel.name_enc))
        return channel

    async def rename(self, caller: Caller, channel_id: str, name_enc: str) -> Channel:
        require_admin(caller)
        channel = await self.channels.rename(channel_id, name_enc)
        if channel is None:
            raise NotFound("channel not found", code="channel_not_found")
        self.uow.emit(ChannelUpdated(channel_id=channel.id, channel_name_enc=name_enc))
        return channel

    async def delete(self, caller: Caller, channel_id: str) -> None:
        require_admin(caller)
        if not await self.channels.delete(channel_id):
            raise NotFound("channel not found", code="channel_not_found")
        self.uow.emit(ChannelDeleted(channel_id=channel_id))
