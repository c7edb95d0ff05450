"""Private rooms made directly in the database, for tests that need one before (or
without) the membership endpoints: a public channel turned private, with member rows
written by the members repository."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from dialtone.db.models import Channel
from dialtone.db.repositories.members import MemberRepository


async def make_private(db_url: str, channel_id: str, members: dict[str, str]) -> None:
    """``members``: user id → role ("owner" | "member")."""
    engine = create_async_engine(db_url)
    try:
        await make_private_on(engine, channel_id, members)
    finally:
        await engine.dispose()


async def make_private_on(engine: AsyncEngine, channel_id: str, members: dict[str, str]) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(Channel).where(Channel.id == channel_id).values(private=True))
    async with AsyncSession(engine) as session, session.begin():
        repo = MemberRepository(session)
        for user_id, role in members.items():
            await repo.add(channel_id, user_id, role, None, datetime.now(UTC))


async def remove_member(db_url: str, channel_id: str, user_id: str) -> None:
    """What DELETE /channels/members does to the rows (the rooms branch adds the route)."""
    engine = create_async_engine(db_url)
    try:
        async with AsyncSession(engine) as session, session.begin():
            await MemberRepository(session).remove(channel_id, user_id)
            await session.execute(
                update(Channel).where(Channel.id == channel_id).values(rekey_required=True)
            )
    finally:
        await engine.dispose()
