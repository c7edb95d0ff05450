from __future__ import annotations

from collections.abc import Sequence

from dialtone.db.models import User, UserProfile
from dialtone.db.repositories.profiles import ProfileRepository
from dialtone.db.repositories.users import UserRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.db.upsert import ReferenceGone
from dialtone.errors import Forbidden, Unauthorized
from dialtone.schemas.events import UserProfileUpdated
from dialtone.security import usernames
from dialtone.services.auth import checked_username
from dialtone.services.context import Caller, ServerContext


def require_trusted(caller: Caller) -> None:
    # The reference answers 401 (not 403) to untrusted callers here; clients rely on it.
    if not caller.is_trusted:
        raise Unauthorized("trusted users only", code="not_trusted")


class UserService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.users = UserRepository(uow.session)
        self.profiles = ProfileRepository(uow.session)

    async def reserve(self, caller: Caller | None, username: str) -> tuple[User, str]:
        """Admin-only: reserve a name. The account has no password and cannot log in."""
        if caller is not None and not caller.is_admin:
            raise Forbidden("admin only", code="not_admin")
        name = checked_username(username)
        name_hash = usernames.username_hash(self.ctx.settings.username_pepper, name)
        user = await self.users.add(
            User(username_hash=name_hash, password_hash=None, created_at=self.ctx.clock())
        )
        return user, name

    async def list_profiles(self, caller: Caller) -> Sequence[UserProfile]:
        require_trusted(caller)
        return await self.profiles.all()

    async def set_profile(self, caller: Caller, name_enc: str) -> None:
        require_trusted(caller)
        try:
            await self.profiles.upsert(caller.user_id, name_enc, self.ctx.clock())
        except ReferenceGone:
            # Deleted by an admin while this ran: the answer its token now gets.
            raise Unauthorized("missing or invalid bearer token", code="unauthorized") from None
        self.uow.emit(UserProfileUpdated(sender=caller.user_id))
