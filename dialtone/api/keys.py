from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, post
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.api.params import ChannelIdQuery
from dialtone.schemas.common import rfc3339
from dialtone.schemas.keys import (
    ChannelKeyOut,
    ChannelKeysIn,
    DirectoryKeyOut,
    DirectoryKeysIn,
    EnvelopeIn,
    EnvelopesStored,
)
from dialtone.services.keys import KeyService, NewEnvelope


def new_envelopes(envelopes: list[EnvelopeIn]) -> list[NewEnvelope]:
    return [
        NewEnvelope(e.device_id, e.sender_device_id, e.sender_public_key, e.envelope)
        for e in envelopes
    ]


class ChannelKeyController(Controller):
    path = "/channels/keys"
    tags = ["keys"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @get("/")
    async def get_key(
        self, channel_id: ChannelIdQuery, uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> ChannelKeyOut:
        env = await KeyService(uow, ctx).channel_key(caller, channel_id)
        return ChannelKeyOut(
            channel_id=env.channel_id,
            device_id=env.device_id,
            sender_device_id=env.sender_device_id,
            sender_public_key=env.sender_public_key,
            envelope=env.envelope,
            created_at=rfc3339(env.created_at),
        )

    @post("/", status_code=201)
    async def put_keys(
        self, data: JSONBody[ChannelKeysIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> EnvelopesStored:
        kept = await KeyService(uow, ctx).put_channel_keys(
            caller, data.channel_id, new_envelopes(data.envelopes)
        )
        return EnvelopesStored(status="ok", kept=kept)


class DirectoryKeyController(Controller):
    path = "/directory/keys"
    tags = ["keys"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @get("/", responses={204: ResponseSpec(None, description="No envelope for this device")})
    async def get_key(self, uow: Uow, ctx: Ctx, caller: CallerDep) -> Response[Any]:
        env = await KeyService(uow, ctx).directory_key(caller)
        if env is None:
            return Response(content=b"", status_code=204)
        return Response(
            DirectoryKeyOut(
                device_id=env.device_id,
                sender_device_id=env.sender_device_id,
                sender_public_key=env.sender_public_key,
                envelope=env.envelope,
                created_at=rfc3339(env.created_at),
            )
        )

    @post("/", status_code=201)
    async def put_keys(
        self, data: JSONBody[DirectoryKeysIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> EnvelopesStored:
        kept = await KeyService(uow, ctx).put_directory_keys(caller, new_envelopes(data.envelopes))
        return EnvelopesStored(status="ok", kept=kept)
