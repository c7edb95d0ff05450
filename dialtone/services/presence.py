from __future__ import annotations

from collections.abc import Sequence

from dialtone.db.repositories.users import UserRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.services.context import ServerContext


class PresenceService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.users = UserRepository(uow.session)

    async def statuses(self, user_ids: Sequence[str]) -> tuple[dict[str, bool], dict[str, bool]]:
        wanted = list(dict.fromkeys(user_ids))
        online = self.ctx.directory.online(wanted)
        admins = await self.users.admin_flags(wanted)
        return (
            {user_id: user_id in online for user_id in wanted},
            {user_id: admins.get(user_id, False) for user_id in wanted},
        )
