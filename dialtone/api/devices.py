from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.di import Provide
from litestar.params import JSONBody

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.api.params import AllFlagQuery, DeviceIdPath, OptionalIdQuery, flag
from dialtone.schemas.common import rfc3339
from dialtone.schemas.devices import (
    AllDeviceKeys,
    AnyDeviceKey,
    DeviceCreate,
    DeviceKey,
    DeviceOut,
    OwnDevice,
    OwnDeviceList,
    UserDeviceKeys,
)
from dialtone.services.devices import DeviceService


class DeviceController(Controller):
    path = "/devices"
    tags = ["devices"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @post("/", status_code=201)
    async def add(
        self, data: JSONBody[DeviceCreate], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> DeviceOut:
        device = await DeviceService(uow, ctx).add(caller, data.user_id, data.public_key)
        return DeviceOut(
            id=device.id,
            user_id=device.user_id,
            public_key=device.public_key,
            created_at=rfc3339(device.created_at),
        )

    @get("/")
    async def list_own(self, uow: Uow, ctx: Ctx, caller: CallerDep) -> OwnDeviceList:
        devices = await DeviceService(uow, ctx).list_own(caller)
        return OwnDeviceList(
            devices=[
                OwnDevice(
                    id=d.id,
                    public_key=d.public_key,
                    created_at=rfc3339(d.created_at),
                    last_seen_at=rfc3339(d.last_seen_at),
                    current=d.id == caller.device_id,
                )
                for d in devices
            ]
        )

    @delete("/{device_id:str}", status_code=204)
    async def revoke(self, device_id: DeviceIdPath, uow: Uow, ctx: Ctx, caller: CallerDep) -> None:
        await DeviceService(uow, ctx).revoke(caller, device_id)

    @get("/keys")
    async def keys(
        self,
        uow: Uow,
        ctx: Ctx,
        caller: CallerDep,
        user_id: OptionalIdQuery = None,
        all_users: AllFlagQuery = None,
    ) -> UserDeviceKeys | AllDeviceKeys:
        everyone = flag(all_users)
        owner, devices = await DeviceService(uow, ctx).keys(caller, user_id, everyone)
        if owner is None:
            return AllDeviceKeys(
                keys=[
                    AnyDeviceKey(user_id=d.user_id, device_id=d.id, public_key=d.public_key)
                    for d in devices
                ]
            )
        return UserDeviceKeys(
            user_id=owner,
            keys=[DeviceKey(device_id=d.id, public_key=d.public_key) for d in devices],
        )
