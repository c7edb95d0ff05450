"""Who is in a private room: adding, removing (and leaving), listing (issue 16)."""

from __future__ import annotations

from dataclasses import dataclass

from dialtone.db.models import Channel
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.repositories.members import MEMBER, OWNER, MemberRepository
from dialtone.db.repositories.users import UserRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.db.upsert import ReferenceGone
from dialtone.errors import Conflict, Forbidden, NotFound
from dialtone.schemas.events import (
    ChannelDeleted,
    ChannelMemberAdded,
    ChannelMemberRemoved,
    ChannelRekeyRequired,
)
from dialtone.services.channels import channel_not_found, channel_updated
from dialtone.services.context import Caller, ServerContext


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    role: str


def _not_owner() -> Forbidden:
    return Forbidden("only the room's owners or an admin may do this", code="not_owner")


def _user_not_found() -> NotFound:
    return NotFound("user not found", code="user_not_found")


class MemberService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.channels = ChannelRepository(uow.session)
        self.members = MemberRepository(uow.session)
        self.users = UserRepository(uow.session)

    async def _room(self, caller: Caller, channel_id: str) -> tuple[Channel, str | None]:
        """The channel and the caller's role in it. A private room the caller is not in
        does not exist for them, except for admins (moderation by id)."""
        channel = await self.channels.get(channel_id)
        if channel is None:
            raise channel_not_found()
        role = await self.members.role(channel_id, caller.user_id) if channel.private else None
        if channel.private and role is None and not caller.is_admin:
            raise channel_not_found()
        return channel, role

    @staticmethod
    def _changeable(channel: Channel) -> None:
        if not channel.private:
            raise Conflict("public channels have no member list to change", code="public_channel")
        if channel.direct_key is not None:
            raise Conflict("a direct-message room is exactly its two users", code="direct_channel")

    async def add(
        self, caller: Caller, channel_id: str, user_id: str, role: str = MEMBER
    ) -> tuple[Member, bool]:
        """The member and whether this call added it (False: already a member, its role
        unchanged)."""
        channel, mine = await self._room(caller, channel_id)
        self._changeable(channel)
        if mine != OWNER and not caller.is_admin:
            raise _not_owner()
        user = await self.users.get(user_id)
        if user is None or user.password_hash is None:
            raise _user_not_found()
        try:
            added = await self.members.add(
                channel_id, user_id, role, caller.user_id, self.ctx.clock()
            )
        except ReferenceGone:
            if not await self.channels.exists(channel_id):
                raise channel_not_found() from None
            raise _user_not_found() from None
        if not added:
            current = await self.members.role(channel_id, user_id)
            if current is None:  # added and removed again meanwhile
                raise channel_not_found()
            return Member(user_id, current), False
        self.uow.emit(ChannelMemberAdded(channel_id=channel_id, user_id=user_id, role=role))
        # For clients that know nothing of membership: the room appears like any channel.
        self.uow.emit(channel_updated(channel))
        return Member(user_id, role), True

    async def remove(self, caller: Caller, channel_id: str, user_id: str) -> None:
        """Owners and admins remove anyone; anyone removes themselves (leaves)."""
        channel, mine = await self._room(caller, channel_id)
        self._changeable(channel)
        if user_id != caller.user_id and mine != OWNER and not caller.is_admin:
            raise _not_owner()
        # First the row lock on the room: removals of one room run one after the other,
        # so "was that the last owner / the last member?" is answered on committed rows.
        version = await self.channels.mark_rekey(channel_id)
        if version is None:
            raise channel_not_found()
        removed_role = await self.members.role(channel_id, user_id)
        if removed_role is None or not await self.members.remove(channel_id, user_id):
            raise NotFound("that user is not a member of this room", code="not_a_member")
        self.uow.emit(ChannelMemberRemoved(channel_id=channel_id, user_id=user_id))
        remaining = await self.members.of_channel(channel_id)
        if not remaining:
            await self.channels.delete(channel_id)
            self.uow.emit(ChannelDeleted(channel_id=channel_id))
            return
        if removed_role == OWNER and all(m.role != OWNER for m in remaining):
            heir = remaining[0]  # the earliest added
            await self.members.set_role(channel_id, heir.user_id, OWNER)
            self.uow.emit(
                ChannelMemberAdded(channel_id=channel_id, user_id=heir.user_id, role=OWNER)
            )
        self.uow.emit(ChannelRekeyRequired(channel_id=channel_id, key_version=version))

    async def list(self, caller: Caller, channel_id: str) -> list[Member]:
        channel, _ = await self._room(caller, channel_id)
        if not channel.private:
            return [Member(user_id, MEMBER) for user_id in await self.channels.account_ids()]
        return [Member(m.user_id, m.role) for m in await self.members.of_channel(channel_id)]
