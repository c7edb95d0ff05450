from __future__ import annotations

from litestar import Controller, delete, get, patch, post, put
from litestar.di import Provide
from litestar.params import JSONBody

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.api.params import ChannelIdQuery
from dialtone.db.models import Channel
from dialtone.schemas.channels import (
    ChannelCreate,
    ChannelEnvelope,
    ChannelImageIn,
    ChannelList,
    ChannelOut,
    ChannelUpdate,
    CommitmentIn,
)
from dialtone.schemas.common import rfc3339
from dialtone.services.channels import ChannelService, channel_updated
from dialtone.services.files import FileService


def channel_out(
    channel: Channel, role: str | None = None, peer_user_id: str | None = None
) -> ChannelOut:
    """``role`` and ``peer_user_id`` are the caller's view of a private room."""
    return ChannelOut(
        id=channel.id,
        name_enc=channel.name_enc,
        created_by=channel.created_by,
        created_at=rfc3339(channel.created_at),
        key_commitment=channel.key_commitment,
        key_version=channel.key_version,
        private=channel.private,
        direct=channel.direct_key is not None,
        role=role,
        peer_user_id=peer_user_id,
        rekey_required=channel.rekey_required,
        image_file_id=channel.image_file_id,
    )


class ChannelController(Controller):
    path = "/channels"
    tags = ["channels"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @get("/")
    async def list_channels(self, uow: Uow, ctx: Ctx, caller: CallerDep) -> ChannelList:
        return ChannelList(channels=[channel_out(c) for c in await ChannelService(uow, ctx).list()])

    @post("/", status_code=201)
    async def create(
        self, data: JSONBody[ChannelCreate], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> ChannelEnvelope:
        channel = await ChannelService(uow, ctx).create(caller, data.name_enc, data.key_commitment)
        return ChannelEnvelope(channel=channel_out(channel))

    @put("/commitment")
    async def set_commitment(
        self, data: JSONBody[CommitmentIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> ChannelEnvelope:
        channel = await ChannelService(uow, ctx).set_commitment(
            caller, data.channel_id, data.key_commitment
        )
        return ChannelEnvelope(channel=channel_out(channel))

    @patch("/")
    async def rename(
        self, data: JSONBody[ChannelUpdate], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> ChannelEnvelope:
        channel = await ChannelService(uow, ctx).rename(caller, data.channel_id, data.name_enc)
        return ChannelEnvelope(channel=channel_out(channel))

    @put("/image")
    async def set_image(
        self, data: JSONBody[ChannelImageIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> ChannelEnvelope:
        channel = await FileService(uow, ctx).set_channel_image(
            caller, data.channel_id, data.file_id
        )
        uow.emit(channel_updated(channel))
        return ChannelEnvelope(channel=channel_out(channel))

    @delete("/", status_code=204)
    async def remove(
        self, channel_id: ChannelIdQuery, uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> None:
        await ChannelService(uow, ctx).delete(caller, channel_id)
