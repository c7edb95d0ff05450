from __future__ import annotations

import logging
from collections.abc import Sequence

from dialtone.db.models import Device
from dialtone.db.repositories.devices import DeviceRepository
from dialtone.db.repositories.keys import KeyEnvelopeRepository
from dialtone.db.repositories.sessions import SessionRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Forbidden, InvalidInput, NotFound
from dialtone.schemas.events import DeviceRevoked
from dialtone.services.auth import checked_public_key, register_device
from dialtone.services.context import Caller, ServerContext
from dialtone.services.rotation import mark_rooms_of

log = logging.getLogger("dialtone.security")


class DeviceService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.devices = DeviceRepository(uow.session)
        self.sessions = SessionRepository(uow.session)
        self.envelopes = KeyEnvelopeRepository(uow.session)

    async def add(self, caller: Caller, user_id: str, public_key: str) -> Device:
        if user_id != caller.user_id:
            raise Forbidden("you can only add devices to your own account", code="not_owner")
        checked_public_key(public_key)
        return await register_device(
            self.ctx, self.devices, caller.user_id, public_key, self.ctx.clock()
        )

    async def keys(
        self, caller: Caller, user_id: str | None, all_users: bool
    ) -> tuple[str | None, Sequence[Device]]:
        if all_users:
            return None, await self.devices.all()
        if not user_id:
            raise InvalidInput("user_id or all=1 is required", code="missing_parameter")
        if user_id != caller.user_id:
            raise Forbidden("use all=1 to list other users' keys", code="not_owner")
        return user_id, await self.devices.for_user(user_id)

    async def list_own(self, caller: Caller) -> Sequence[Device]:
        return await self.devices.for_user(caller.user_id)

    async def revoke(self, caller: Caller, device_id: str) -> None:
        """Remove one of the caller's devices: its sessions, its key envelopes, the device.

        Someone else's device answers 404 like an unknown one, so ids cannot be probed.
        """
        # The delete is the check: a concurrent revocation that came first leaves 0 rows.
        if not await self.devices.delete(device_id, caller.user_id):
            raise NotFound("device not found", code="device_not_found")
        self.ctx.sessions_changing(self.uow)
        await self.sessions.delete_for_device(device_id)
        await self.envelopes.delete_for_device(device_id)
        # The device may have kept the rooms' keys: each private room of its user rotates.
        await mark_rooms_of(self.uow, caller.user_id)
        self.ctx.seen.pop(device_id, None)
        self.uow.emit(DeviceRevoked(sender=caller.user_id, device_id=device_id))
        await self.ctx.server_log.add(
            self.uow.session, "device_revoked", user_id=caller.user_id, device_id=device_id
        )
        log.info(
            "device revoked",
            extra={
                "event": "device_revoked",
                "user_id": caller.user_id,
                "device_id": device_id,
                "by_device_id": caller.device_id,
            },
        )
