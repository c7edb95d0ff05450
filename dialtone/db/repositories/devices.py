from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    Integer,
    String,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.base import UTCDateTime, new_id
from dialtone.db.models import Device
from dialtone.db.repositories.locks import lock_key
from dialtone.db.upsert import ReferenceGone, is_postgresql, upsert
from dialtone.errors import Conflict

# Rows per page when every device is listed (GET /devices/keys?all=1).
ALL_PAGE = 500


class DeviceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, device_id: str) -> Device | None:
        return await self.session.get(Device, device_id)

    async def get_by_key(self, user_id: str, public_key: str) -> Device | None:
        result = await self.session.execute(
            select(Device).where(Device.user_id == user_id, Device.public_key == public_key)
        )
        return result.scalar_one_or_none()

    async def add(self, device: Device) -> Device:
        self.session.add(device)
        try:
            await self.session.flush()
        except IntegrityError:
            raise Conflict("device already registered", code="device_exists") from None
        return device

    async def register(
        self, user_id: str, public_key: str, now: datetime, cap: int
    ) -> tuple[Device, bool] | None:
        """The user's device with this key and whether this call created it, in one
        statement.

        A known key has its ``last_seen_at`` refreshed. A new key is inserted only while
        the user has fewer than ``cap`` devices: None when that refused it. Simultaneous
        calls with one key all get the same row.
        """
        device_id = new_id()
        if is_postgresql(self.session):
            # Read committed: two inserts could both count cap - 1. One user's device
            # registrations wait for each other until commit (SQLite's writers already do).
            await self.session.execute(
                select(func.pg_advisory_xact_lock(lock_key(f"devices:{user_id}")))
            )
        values = select(
            bindparam("id", device_id, type_=String),
            bindparam("user_id", user_id, type_=String),
            bindparam("public_key", public_key, type_=String),
            bindparam("created_at", now, type_=UTCDateTime),
            bindparam("last_seen_at", now, type_=UTCDateTime),
        ).where(
            or_(
                select(func.count())
                .select_from(Device)
                .where(Device.user_id == user_id)
                .scalar_subquery()
                < bindparam("cap", cap, type_=Integer),
                exists().where(and_(Device.user_id == user_id, Device.public_key == public_key)),
            )
        )
        insert = upsert(self.session, Device).from_select(
            ["id", "user_id", "public_key", "created_at", "last_seen_at"], values
        )
        statement = insert.on_conflict_do_update(
            index_elements=[Device.user_id, Device.public_key],
            set_={"last_seen_at": insert.excluded.last_seen_at},
        ).returning(Device)
        try:
            result = await self.session.execute(
                statement, execution_options={"populate_existing": True}
            )
        except IntegrityError:
            raise ReferenceGone from None  # the user was deleted meanwhile
        device = result.scalar_one_or_none()
        return None if device is None else (device, device.id == device_id)

    async def count_for(self, user_id: str) -> int:
        result = await self.session.execute(
            select(func.count()).select_from(Device).where(Device.user_id == user_id)
        )
        return int(result.scalar_one())

    async def for_user(self, user_id: str) -> Sequence[Device]:
        result = await self.session.execute(
            select(Device).where(Device.user_id == user_id).order_by(Device.created_at, Device.id)
        )
        return result.scalars().all()

    async def all(self, page: int = ALL_PAGE) -> list[Device]:
        """Every device, by user then age, read ``page`` rows at a time (keyset paging).

        SQLite reads run on the event loop (see db/sqlite.py): a community's whole device
        list in one SELECT would hold every other request up while it is read. Between
        pages the loop serves the others.
        """
        order = (Device.user_id, Device.created_at, Device.id)
        devices: list[Device] = []
        while True:
            query = select(Device).order_by(*order).limit(page)
            if devices:
                last = devices[-1]
                after = tuple_(
                    literal(last.user_id, String()),
                    literal(last.created_at, UTCDateTime()),  # stored as naive UTC
                    literal(last.id, String()),
                )
                query = query.where(tuple_(*order) > after)
            batch = (await self.session.execute(query)).scalars().all()
            devices.extend(batch)
            if len(batch) < page:
                return devices
            await asyncio.sleep(0)  # let other requests run between pages

    async def existing_ids(self, device_ids: Sequence[str]) -> set[str]:
        if not device_ids:
            return set()
        result = await self.session.execute(
            select(Device.id).where(Device.id.in_(list(set(device_ids))))
        )
        return set(result.scalars().all())

    async def touch(self, device_id: str, when: datetime) -> None:
        await self.session.execute(
            update(Device).where(Device.id == device_id).values(last_seen_at=when)
        )

    async def delete(self, device_id: str, user_id: str | None = None) -> bool:
        """False when there was no such device (of that user): gone, or never there."""
        statement = delete(Device).where(Device.id == device_id)
        if user_id is not None:
            statement = statement.where(Device.user_id == user_id)
        result = await self.session.execute(statement)
        return bool(result.rowcount)  # type: ignore[attr-defined]
