"""SQL for bans, the server log and the stored live settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import and_, delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import Ban, ServerLogEntry, ServerSetting


class BanRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, ban: Ban) -> Ban:
        self.session.add(ban)
        await self.session.flush()
        return ban

    async def get(self, ban_id: str) -> Ban | None:
        return await self.session.get(Ban, ban_id)

    async def delete(self, ban_id: str) -> bool:
        result = await self.session.execute(delete(Ban).where(Ban.id == ban_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def all(self) -> Sequence[Ban]:
        result = await self.session.execute(select(Ban))
        return result.scalars().all()

    async def page(
        self,
        limit: int,
        after: tuple[datetime, str] | None,
        *,
        user_id: str | None = None,
        active_at: datetime | None = None,
    ) -> Sequence[Ban]:
        query = select(Ban).order_by(Ban.created_at, Ban.id).limit(limit)
        if after is not None:
            at, ban_id = after
            query = query.where(
                or_(Ban.created_at > at, and_(Ban.created_at == at, Ban.id > ban_id))
            )
        if user_id is not None:
            query = query.where(Ban.user_id == user_id)
        if active_at is not None:
            query = query.where(or_(Ban.expires_at.is_(None), Ban.expires_at > active_at))
        result = await self.session.execute(query)
        return result.scalars().all()


class ServerLogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(
        self,
        limit: int,
        before_id: int | None,
        *,
        topic: str | None = None,
        user_id: str | None = None,
        after: datetime | None = None,
    ) -> Sequence[ServerLogEntry]:
        """Newest first; ``before_id`` continues a previous page."""
        query = select(ServerLogEntry).order_by(ServerLogEntry.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(ServerLogEntry.id < before_id)
        if topic is not None:
            query = query.where(ServerLogEntry.topic == topic)
        if user_id is not None:
            query = query.where(
                or_(ServerLogEntry.user_id == user_id, ServerLogEntry.actor_id == user_id)
            )
        if after is not None:
            query = query.where(ServerLogEntry.at >= after)
        result = await self.session.execute(query)
        return result.scalars().all()

    async def purge_older_than(self, moment: datetime) -> int:
        result = await self.session.execute(
            delete(ServerLogEntry).where(ServerLogEntry.at < moment)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class SettingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def all(self) -> dict[str, Any]:
        result = await self.session.execute(select(ServerSetting.key, ServerSetting.value))
        values: dict[str, Any] = {}
        for key, raw in result:
            try:
                values[key] = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                continue
        return values

    async def add_once(self, key: str, value: Any, now: datetime) -> bool:
        """Store ``key`` unless it is there already, in one statement: of several at once
        exactly one gets True."""
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = (
            insert(ServerSetting)
            .values(key=key, value=msgspec.json.encode(value).decode(), updated_at=now)
            .on_conflict_do_nothing(index_elements=[ServerSetting.key])
            .returning(ServerSetting.key)
        )
        result = await self.session.execute(statement)
        return result.first() is not None

    async def upsert(self, values: Mapping[str, Any], now: datetime) -> None:
        """One statement per batch, safe when two operators save at once (last wins)."""
        if not values:
            return
        rows = [
            {"key": key, "value": msgspec.json.encode(value).decode(), "updated_at": now}
            for key, value in values.items()
        ]
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(ServerSetting).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=[ServerSetting.key],
            set_={
                "value": statement.excluded.value,
                "updated_at": statement.excluded.updated_at,
            },
        )
        await self.session.execute(statement)
