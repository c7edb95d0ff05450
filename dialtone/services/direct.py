"""Direct messages: the one private room of two users, made on first use.

Whether a new room may be made is the target's call: their ``direct_messages``
preference (anyone, trusted, nobody) and their blocks. A refusal is the same 403
``direct_messages_refused`` whichever it was, so that nobody learns they are blocked.
An existing room is always handed back, unless its other user has blocked the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from dialtone.db.models import Channel
from dialtone.db.repositories.blocks import BlockRepository, PreferenceRepository
from dialtone.db.repositories.direct import DirectRepository, direct_key
from dialtone.db.repositories.members import OWNER, MemberRepository
from dialtone.db.repositories.users import UserRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.db.upsert import ReferenceGone
from dialtone.errors import Conflict, Forbidden, InvalidInput
from dialtone.schemas.channels import ChannelOut
from dialtone.schemas.common import rfc3339
from dialtone.schemas.events import ChannelCreated, MemberOut
from dialtone.services.blocks import user_not_found
from dialtone.services.channels import channel_updated
from dialtone.services.context import Caller, ServerContext

# Two requests losing to rooms deleted as soon as made: give up rather than loop.
CREATE_ATTEMPTS = 3


def refused() -> Forbidden:
    return Forbidden(
        "this user does not take new direct messages from you",
        code="direct_messages_refused",
    )


@dataclass(frozen=True, slots=True)
class DirectRoom:
    channel: Channel
    created: bool
    peer_user_id: str


@dataclass(frozen=True, slots=True)
class DirectStatus:
    allowed: bool
    channel_id: str | None


def may_open(caller: Caller, preference: str) -> bool:
    """Whether ``caller`` may open a new room with someone of this preference."""
    if preference == "anyone":
        return True
    if preference == "trusted":
        return caller.is_trusted or caller.is_moderator or caller.is_admin
    return False


class DirectService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.direct = DirectRepository(uow.session)
        self.members = MemberRepository(uow.session)
        self.blocks = BlockRepository(uow.session)
        self.preferences = PreferenceRepository(uow.session)
        self.users = UserRepository(uow.session)

    async def _target(self, caller: Caller, user_id: str) -> str:
        if user_id == caller.user_id:
            raise InvalidInput("a direct message needs another user", code="direct_self")
        if await self.users.get(user_id) is None:
            raise user_not_found()
        return direct_key(caller.user_id, user_id)

    async def _may_create(self, caller: Caller, user_id: str) -> bool:
        if await self.blocks.exists(user_id, caller.user_id):
            return False
        return may_open(caller, await self.preferences.direct_messages(user_id))

    async def status(self, caller: Caller, user_id: str) -> DirectStatus:
        key = await self._target(caller, user_id)
        existing = await self.direct.find(key)
        if existing is not None:
            blocked = await self.blocks.exists(user_id, caller.user_id)
            return DirectStatus(allowed=not blocked, channel_id=existing.id)
        return DirectStatus(allowed=await self._may_create(caller, user_id), channel_id=None)

    async def open(self, caller: Caller, user_id: str) -> DirectRoom:
        key = await self._target(caller, user_id)
        for _ in range(CREATE_ATTEMPTS):
            existing = await self.direct.find(key)
            if existing is not None:
                if await self.blocks.exists(user_id, caller.user_id):
                    raise refused()
                return DirectRoom(existing, created=False, peer_user_id=user_id)
            if not await self._may_create(caller, user_id):
                raise refused()
            now = self.ctx.clock()
            channel_id = await self.direct.create(key, caller.user_id, now)
            if channel_id is None:
                continue  # made by a simultaneous request: read the winner's
            try:
                for member in (caller.user_id, user_id):
                    await self.members.add(channel_id, member, OWNER, caller.user_id, now)
            except ReferenceGone:  # the other user was deleted meanwhile
                raise user_not_found() from None
            channel = await self.direct.find(key)
            assert channel is not None  # inserted in this transaction
            self._announce(channel, [caller.user_id, user_id])
            return DirectRoom(channel, created=True, peer_user_id=user_id)
        raise Conflict("the direct message room changed meanwhile; try again", code="conflict")

    def _announce(self, channel: Channel, members: list[str]) -> None:
        """To the two members only (the hub's member filter): the room, then as any
        channel change, ``channel.updated``."""
        self.uow.emit(
            ChannelCreated(
                channel=ChannelOut(
                    id=channel.id,
                    name_enc=channel.name_enc,
                    created_by=channel.created_by,
                    created_at=rfc3339(channel.created_at),
                    key_commitment=channel.key_commitment,
                    key_version=channel.key_version,
                    private=True,
                    direct=True,
                    rekey_required=channel.rekey_required,
                ),
                members=[MemberOut(user_id=m, role=OWNER) for m in sorted(members)],
            )
        )
        self.uow.emit(channel_updated(channel))
