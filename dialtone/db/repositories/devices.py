from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import Device
from dialtone.errors import Conflict


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

    async def for_user(self, user_id: str) -> Sequence[Device]:
        result = await self.session.execute(
            select(Device).where(Device.user_id == user_id).order_by(Device.created_at, Device.id)
        )
        return result.scalars().all()

    async def all(self) -> Sequence[Device]:
        result = await self.session.execute(
            select(Device).order_by(Device.user_id, Device.created_at, Device.id)
        )
        return result.scalars().all()

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

    async def delete(self, device_id: str) -> bool:
        result = await self.session.execute(delete(Device).where(Device.id == device_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]
