from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import User
from dialtone.errors import Conflict

# Any fixed 64-bit number, unique to this purpose within the database.
_REGISTRATION_LOCK = 0x6469616C746F6E65  # "dialtone"


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def get_by_username_hash(self, username_hash: str) -> User | None:
        result = await self.session.execute(select(User).where(User.username_hash == username_hash))
        return result.scalar_one_or_none()

    async def any_exist(self) -> bool:
        result = await self.session.execute(select(func.count()).select_from(User).limit(1))
        return bool(result.scalar_one())

    async def others_registered(self, user_id: str) -> bool:
        """Whether an account other than ``user_id`` exists. Names reserved through
        POST /users have no password and are not accounts."""
        result = await self.session.execute(
            select(User.id).where(User.id != user_id, User.password_hash.is_not(None)).limit(1)
        )
        return result.first() is not None

    async def lock_registrations(self) -> None:
        """Serialise registrations until commit, so exactly one can be the first user.

        PostgreSQL: a transaction-scoped advisory lock. SQLite needs none: its writers are
        serialised from their first write, and the caller checks only after inserting.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(select(func.pg_advisory_xact_lock(_REGISTRATION_LOCK)))

    async def add(self, user: User) -> User:
        self.session.add(user)
        try:
            await self.session.flush()
        except IntegrityError:
            raise Conflict("username is taken", code="username_taken") from None
        return user

    async def admin_flags(self, user_ids: Sequence[str]) -> dict[str, bool]:
        if not user_ids:
            return {}
        result = await self.session.execute(
            select(User.id, User.is_admin).where(User.id.in_(list(user_ids)))
        )
        return {row.id: row.is_admin for row in result}
