"""Blocking users, and the preference that says who may open a direct message."""

from __future__ import annotations

from collections.abc import Sequence

from dialtone.db.models import UserBlock
from dialtone.db.repositories.blocks import BlockRepository, PreferenceRepository
from dialtone.db.repositories.users import UserRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.db.upsert import ReferenceGone
from dialtone.errors import InvalidInput, NotFound
from dialtone.schemas.events import BlockChanged
from dialtone.services.context import Caller, ServerContext

DIRECT_MESSAGES = ("anyone", "trusted", "nobody")


def user_not_found() -> NotFound:
    return NotFound("user not found", code="user_not_found")


class BlockService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.blocks = BlockRepository(uow.session)
        self.users = UserRepository(uow.session)

    async def block(self, caller: Caller, user_id: str) -> tuple[UserBlock, bool]:
        """The block, and whether it is new (201) or existed (200)."""
        if user_id == caller.user_id:
            raise InvalidInput("you cannot block yourself", code="block_self")
        if await self.users.get(user_id) is None:
            raise user_not_found()
        try:
            added = await self.blocks.add(caller.user_id, user_id, self.ctx.clock())
        except ReferenceGone:
            raise user_not_found() from None
        row = await self.blocks.get(caller.user_id, user_id)
        if row is None:  # lifted by a DELETE that committed in between: block again
            await self.blocks.add(caller.user_id, user_id, self.ctx.clock())
            row = await self.blocks.get(caller.user_id, user_id)
            added = True
            if row is None:
                raise user_not_found()
        if added:
            self.uow.emit(BlockChanged(blocker_id=caller.user_id, blocked_id=user_id, blocked=True))
        return row, added

    async def unblock(self, caller: Caller, user_id: str) -> None:
        """Idempotent: lifting a block that is not there is no error."""
        if await self.blocks.remove(caller.user_id, user_id):
            self.uow.emit(
                BlockChanged(blocker_id=caller.user_id, blocked_id=user_id, blocked=False)
            )

    async def list(self, caller: Caller) -> Sequence[UserBlock]:
        return await self.blocks.of(caller.user_id)

    async def blocked_ids(self, user_id: str) -> set[str]:
        """For a node's delivery filter (dialtone.realtime.blocks)."""
        return await self.blocks.blocked_ids(user_id)


class PreferenceService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.preferences = PreferenceRepository(uow.session)

    async def direct_messages(self, caller: Caller) -> str:
        return await self.preferences.direct_messages(caller.user_id)

    async def set_direct_messages(self, caller: Caller, value: str) -> str:
        if value not in DIRECT_MESSAGES:
            raise InvalidInput(
                "direct_messages must be anyone, trusted or nobody", code="invalid_input"
            )
        try:
            await self.preferences.set_direct_messages(caller.user_id, value)
        except ReferenceGone:
            raise user_not_found() from None
        return value
