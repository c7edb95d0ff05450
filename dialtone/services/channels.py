from __future__ import annotations

from dialtone.db.models import Channel
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.repositories.direct import peer_of as direct_peer
from dialtone.db.repositories.members import OWNER, MemberRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Conflict, Forbidden, InvalidInput, NotFound
from dialtone.schemas.channels import ChannelOut
from dialtone.schemas.common import rfc3339
from dialtone.schemas.events import (
    ChannelCreated,
    ChannelDeleted,
    ChannelUpdated,
    MemberOut,
)
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


def channel_not_found() -> NotFound:
    return NotFound("channel not found", code="channel_not_found")


def peer_of(channel: Channel, user_id: str) -> str | None:
    """A direct-message room's other user, as ``user_id`` sees it (``direct_key`` is the
    two user ids, sorted, joined by a colon)."""
    return None if channel.direct_key is None else direct_peer(channel.direct_key, user_id)


def may_create_private(caller: Caller, who: str) -> bool:
    """The live setting ``private_rooms``: "everyone", "trusted" or "admins"."""
    if who == "admins":
        return caller.is_admin
    if who == "trusted":
        return caller.is_admin or caller.is_moderator or caller.is_trusted
    return True


def wire_channel(channel: Channel) -> ChannelOut:
    """The channel object as events carry it (nobody's role, no peer)."""
    return ChannelOut(
        id=channel.id,
        name_enc=channel.name_enc,
        created_by=channel.created_by,
        created_at=rfc3339(channel.created_at),
        key_commitment=channel.key_commitment,
        key_version=channel.key_version,
        private=channel.private,
        direct=channel.direct_key is not None,
        rekey_required=channel.rekey_required,
    )


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


# A channel as the caller sees it: the row and the caller's role (None: public).
Seen = tuple[Channel, str | None]


class ChannelService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.channels = ChannelRepository(uow.session)
        self.members = MemberRepository(uow.session)

    async def require(self, channel_id: str, user_id: str | None = None) -> None:
        """Raise channel_not_found unless the channel exists (and, given a user, that
        user may see it: for anyone else a private room does not exist)."""
        if user_id is not None:
            if await self.members.visible(channel_id, user_id) is None:
                raise channel_not_found()
        elif not await self.channels.exists(channel_id):
            raise channel_not_found()

    async def seen(self, caller: Caller, channel_id: str) -> Seen:
        """The channel and the caller's role, or channel_not_found when the caller may
        not see it."""
        channel = await self.members.visible(channel_id, caller.user_id)
        if channel is None:
            raise channel_not_found()
        role = await self.members.role(channel_id, caller.user_id) if channel.private else None
        return channel, role

    async def list(self, caller: Caller) -> list[Seen]:
        return await self.channels.visible_with_roles(caller.user_id)

    async def create(
        self,
        caller: Caller,
        name_enc: str,
        key_commitment: str | None = None,
        private: bool = False,
    ) -> Seen:
        if private:
            if not may_create_private(caller, self.ctx.live_settings.private_rooms):
                raise Forbidden(
                    "you may not create private rooms on this server",
                    code="private_rooms_restricted",
                )
        else:
            require_admin(caller)
        if key_commitment is not None:
            checked_commitment(key_commitment)
        now = self.ctx.clock()
        channel = await self.channels.add(
            Channel(
                name_enc=name_enc,
                created_by=caller.user_id,
                created_at=now,
                key_commitment=key_commitment,
                key_version=1,
                private=private,
            )
        )
        if not private:
            self.uow.emit(channel_updated(channel))
            return channel, None
        await self.members.add(channel.id, caller.user_id, OWNER, caller.user_id, now)
        # channel.created first: every node learns the room's members from it before
        # anything else of the room is delivered.
        self.uow.emit(
            ChannelCreated(
                channel=wire_channel(channel),
                members=[MemberOut(user_id=caller.user_id, role=OWNER)],
            )
        )
        self.uow.emit(channel_updated(channel))
        return channel, OWNER

    async def manage(self, caller: Caller, channel_id: str) -> Seen:
        """A channel the caller may rename (or give a picture): public ones by admins;
        private rooms by their owners and by admins who are members."""
        channel, role = await self.seen(caller, channel_id)
        if not channel.private or role != OWNER:
            require_admin(caller)
        return channel, role

    async def set_image(self, caller: Caller, channel_id: str, file_id: str | None) -> Seen:
        _, role = await self.manage(caller, channel_id)
        channel = await FileService(self.uow, self.ctx).set_channel_image(
            caller, channel_id, file_id
        )
        self.uow.emit(channel_updated(channel))
        return channel, role

    async def rename(self, caller: Caller, channel_id: str, name_enc: str) -> Seen:
        _, role = await self.manage(caller, channel_id)
        channel = await self.channels.rename(channel_id, name_enc)
        if channel is None:
            raise channel_not_found()
        self.uow.emit(channel_updated(channel))
        return channel, role

    async def set_commitment(self, caller: Caller, channel_id: str, commitment: str) -> Seen:
        """Once, by the channel's creator or an admin, for a channel made before
        commitments existed; afterwards only a key rotation changes it."""
        checked_commitment(commitment)
        channel, role = await self.seen(caller, channel_id)
        if channel.created_by != caller.user_id and not caller.is_admin:
            raise Forbidden(
                "only the channel's creator or an admin may set its key commitment",
                code="forbidden",
            )
        updated = await self.channels.set_commitment(channel_id, commitment)
        if updated is None:
            if not await self.channels.exists(channel_id):
                raise channel_not_found()
            raise Conflict("the channel's key commitment is already set", code="commitment_set")
        self.uow.emit(channel_updated(updated))
        return updated, role

    async def delete(self, caller: Caller, channel_id: str) -> None:
        """Public channels: admins. Private rooms: their owners, and admins by id
        (moderation) whether or not they are members."""
        if not caller.is_admin:
            channel, role = await self.seen(caller, channel_id)
            if not channel.private:
                require_admin(caller)
            if role != OWNER:
                raise Forbidden(
                    "only the room's owners or an admin may delete it", code="not_owner"
                )
        await FileService(self.uow, self.ctx).delete_for_channel(channel_id)
        if not await self.channels.delete(channel_id):
            raise channel_not_found()
        self.uow.emit(ChannelDeleted(channel_id=channel_id))
