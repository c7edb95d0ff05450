from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, get, post, put
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, QueryParameter

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.api.params import AllFlagQuery, ChannelIdQuery, DeviceIdQuery, flag
from dialtone.db.repositories.keys import StoredEnvelope
from dialtone.schemas.common import rfc3339
from dialtone.schemas.keys import (
    ChannelEnvelopeIn,
    ChannelEnvelopeOut,
    ChannelKeyOut,
    ChannelKeysIn,
    ChannelKeysOut,
    DirectoryCommitmentIn,
    DirectoryCommitmentOut,
    DirectoryEnvelopeOut,
    DirectoryKeyOut,
    DirectoryKeysIn,
    DirectoryKeysOut,
    EnvelopeIn,
    EnvelopesStored,
    KeysHeldOut,
)
from dialtone.services.keys import KeyService, NewEnvelope

# ``key_version=`` on GET /channels/keys: an older version's envelopes (absent: current).
KeyVersionQuery = Annotated[int | None, QueryParameter(ge=-(2**31), le=2**31)]


def new_envelopes(envelopes: list[EnvelopeIn] | list[ChannelEnvelopeIn]) -> list[NewEnvelope]:
    return [
        NewEnvelope(
            e.device_id,
            e.sender_device_id,
            e.sender_public_key,
            e.envelope,
            e.key_version if isinstance(e, ChannelEnvelopeIn) else None,
        )
        for e in envelopes
    ]


def channel_item(env: StoredEnvelope) -> ChannelEnvelopeOut:
    return ChannelEnvelopeOut(
        sender_device_id=env.sender_device_id,
        sender_user_id=env.sender_user_id,
        sender_public_key=env.sender_public_key,
        envelope=env.envelope,
        key_version=env.key_version or 1,
        created_at=rfc3339(env.created_at),
    )


def directory_item(env: StoredEnvelope) -> DirectoryEnvelopeOut:
    return DirectoryEnvelopeOut(
        sender_device_id=env.sender_device_id,
        sender_user_id=env.sender_user_id,
        sender_public_key=env.sender_public_key,
        envelope=env.envelope,
        created_at=rfc3339(env.created_at),
    )


class ChannelKeyController(Controller):
    path = "/channels/keys"
    tags = ["keys"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @get("/")
    async def get_key(
        self,
        channel_id: ChannelIdQuery,
        uow: Uow,
        ctx: Ctx,
        caller: CallerDep,
        all_envelopes: AllFlagQuery = None,
        key_version: KeyVersionQuery = None,
    ) -> ChannelKeyOut | ChannelKeysOut:
        service = KeyService(uow, ctx)
        if flag(all_envelopes):
            found, commitment = await service.channel_keys(caller, channel_id, key_version)
            return ChannelKeysOut(
                channel_id=channel_id,
                device_id=caller.device_id,
                envelopes=[channel_item(env) for env in found],
                key_version=key_version,
                key_commitment=commitment if key_version is not None else None,
            )
        env = await service.channel_key(caller, channel_id, key_version)
        return ChannelKeyOut(
            channel_id=channel_id,
            device_id=env.device_id,
            sender_device_id=env.sender_device_id,
            sender_public_key=env.sender_public_key,
            envelope=env.envelope,
            created_at=rfc3339(env.created_at),
            key_version=env.key_version or 1,
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

    @get(
        "/",
        responses={
            200: ResponseSpec(
                DirectoryKeyOut | DirectoryKeysOut,
                description="One envelope; with all=1 every envelope, preferred first",
            ),
            204: ResponseSpec(None, description="No envelope for this device"),
        },
    )
    async def get_key(
        self, uow: Uow, ctx: Ctx, caller: CallerDep, all_envelopes: AllFlagQuery = None
    ) -> Response[Any]:
        service = KeyService(uow, ctx)
        if flag(all_envelopes):
            found = await service.directory_keys(caller)
            return Response(
                DirectoryKeysOut(
                    device_id=caller.device_id, envelopes=[directory_item(env) for env in found]
                )
            )
        env = await service.directory_key(caller)
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


@put(
    "/directory/commitment",
    tags=["keys"],
    guards=[members],
    dependencies={"caller": Provide(provide_caller)},
)
async def set_directory_commitment(
    data: JSONBody[DirectoryCommitmentIn], uow: Uow, ctx: Ctx, caller: CallerDep
) -> DirectoryCommitmentOut:
    value = await KeyService(uow, ctx).set_directory_commitment(caller, data.key_commitment)
    await uow.commit()
    # This node serves it at once; the others when the broker's event arrives.
    ctx.note_directory_commitment(value)
    return DirectoryCommitmentOut(directory_key_commitment=value)


@get(
    "/keys/held",
    tags=["keys"],
    guards=[members],
    dependencies={"caller": Provide(provide_caller)},
)
async def keys_held(device_id: DeviceIdQuery, uow: Uow, ctx: Ctx, caller: CallerDep) -> KeysHeldOut:
    """Any signed-in member may ask, for any device: the answer is what a sharer needs to
    skip a device that already holds a key, and it names no sender and no envelope."""
    channels, directory = await KeyService(uow, ctx).held(caller, device_id)
    return KeysHeldOut(device_id=device_id, channels=channels, directory=directory)
