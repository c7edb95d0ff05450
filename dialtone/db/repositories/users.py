from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import Device, User
from dialtone.errors import Conflict

# Any fixed 64-bit number, unique to this purpose within the database.
_REGISTRATION_LOCK = 0x6469616C746F6E65  # "dialtone"
_ADMIN_LOCK = 0x6469616C61646D6E  # "dialadmn": changes to who is an unlocked admin


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def get_by_username_hash(self, username_hash: str) -> User | None:
        result = await self.session.execute(select(User).where(User.username_hash == username_hash))
        return result.scalar_one_or_none()

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

    # ------------------------------------------------------------ administration

    async def lock_admin_changes(self) -> None:
        """Serialise changes that could remove the last unlocked admin, until commit.

        PostgreSQL: an advisory lock. SQLite serialises writers from their first write,
        and callers count the admins only after their own write.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(select(func.pg_advisory_xact_lock(_ADMIN_LOCK)))

    async def unlocked_admins(self) -> int:
        result = await self.session.execute(
            select(func.count())
            .select_from(User)
            .where(User.is_admin.is_(True), User.is_locked.is_(False))
        )
        return int(result.scalar_one())

    async def set_flags(self, user_id: str, values: dict[str, bool]) -> bool:
        result = await self.session.execute(update(User).where(User.id == user_id).values(**values))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete(self, user_id: str) -> bool:
        result = await self.session.execute(delete(User).where(User.id == user_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def count(self) -> int:
        result = await self.session.execute(select(func.count()).select_from(User))
        return int(result.scalar_one())

    async def staff(self) -> Sequence[Any]:
        """Unlocked admins and moderators: (id, is_admin, is_moderator), oldest first."""
        result = await self.session.execute(
            select(User.id, User.is_admin, User.is_moderator)
            .where(or_(User.is_admin.is_(True), User.is_moderator.is_(True)))
            .where(User.is_locked.is_(False))
            .order_by(User.created_at, User.id)
        )
        return result.all()

    async def page(
        self,
        limit: int,
        after: tuple[datetime, str] | None,
        *,
        locked: bool | None = None,
        role: str | None = None,
        only_ids: Collection[str] | None = None,
        except_ids: Collection[str] | None = None,
    ) -> Sequence[Any]:
        """Users with their device count and last activity, oldest account first."""
        devices = (
            select(
                Device.user_id,
                func.count(Device.id).label("device_count"),
                func.max(Device.last_seen_at).label("last_seen_at"),
            )
            .group_by(Device.user_id)
            .subquery()
        )
        query = (
            select(User, devices.c.device_count, devices.c.last_seen_at)
            .outerjoin(devices, devices.c.user_id == User.id)
            .order_by(User.created_at, User.id)
            .limit(limit)
        )
        if after is not None:
            at, user_id = after
            query = query.where(
                or_(User.created_at > at, and_(User.created_at == at, User.id > user_id))
            )
        if locked is not None:
            query = query.where(User.is_locked.is_(locked))
        if role == "admin":
            query = query.where(User.is_admin.is_(True))
        elif role == "moderator":
            query = query.where(User.is_moderator.is_(True))
        elif role == "trusted":
            query = query.where(User.is_trusted.is_(True))
        elif role == "member":
            query = query.where(User.is_admin.is_(False), User.is_moderator.is_(False))
        if only_ids is not None:
            query = query.where(User.id.in_(list(only_ids)))
        if except_ids:
            query = query.where(User.id.not_in(list(except_ids)))
        result = await self.session.execute(query)
        return result.all()
