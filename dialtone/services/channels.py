from __future__ import annotations

from collections.abc import Sequence

from dialtone.db.models import Channel
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Conflict, Forbidden, InvalidInput, NotFound
from dialtone.schemas.events import ChannelDeleted, ChannelUpdated
from dialtone.security.keys import is_commitment
from dialtone.services.context import Caller, ServerContext
from dialtone.services.files import FileService


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise Forbidden("admin only", code="not_admin")


def checked_commitment(value: str) -> str:
    if not is_commitment(value):
        raise InvalidInput(
            "key_commitment must be standard base64 of 32 bytes", code="invalid_commitment"
        )
    return value


def channel_updated(channel: Channel) -> ChannelUpdated:
    return ChannelUpdated(
        channel_id=channel.id,
        channel_name_enc=channel.name_enc,
        key_commitment=channel.key_commitment,
        key_version=channel.key_version,
        private=channel.private,
        direct=channel.direct_key is not None,
        image_file_id=channel.image_file_id,
    )


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

    async def create(
        self, caller: Caller, name_enc: str, key_commitment: str | None = None
    ) -> Channel:
        require_admin(caller)
        if key_commitment is not None:
            checked_commitment(key_commitment)
        channel = await self.channels.add(
            Channel(
                name_enc=name_enc,
                created_by=caller.user_id,
                created_at=self.ctx.clock(),
                key_commitment=key_commitment,
                key_version=1,
            )
        )
        self.uow.emit(channel_updated(channel))
        return channel

    async def rename(self, caller: Caller, channel_id: str, name_enc: str) -> Channel:
        require_admin(caller)
        channel = await self.channels.rename(channel_id, name_enc)
        if channel is None:
            raise NotFound("channel not found", code="channel_not_found")
        self.uow.emit(channel_updated(channel))
        return channel

    async def set_commitment(self, caller: Caller, channel_id: str, commitment: str) -> Channel:
        """Once, by the channel's creator or an admin, for a channel made before
        commitments existed; afterwards only a key rotation changes it."""
        checked_commitment(commitment)
        channel = await self.channels.get(channel_id)
        if channel is None:
            raise NotFound("channel not found", code="channel_not_found")
        if channel.created_by != caller.user_id and not caller.is_admin:
            raise Forbidden(
                "only the channel's creator or an admin may set its key commitment",
                code="forbidden",
            )
        updated = await self.channels.set_commitment(channel_id, commitment)
        if updated is None:
            if not await self.channels.exists(channel_id):
                raise NotFound("channel not found", code="channel_not_found")
            raise Conflict("the channel's key commitment is already set", code="commitment_set")
        self.uow.emit(channel_updated(updated))
        return updated

    async def delete(self, caller: Caller, channel_id: str) -> None:
        require_admin(caller)
        await FileService(self.uow, self.ctx).delete_for_channel(channel_id)
        if not await self.channels.delete(channel_id):
            raise NotFound("channel not found", code="channel_not_found")
        self.uow.emit(ChannelDeleted(channel_id=channel_id))
