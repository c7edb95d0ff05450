"""Direct messages (``/channels/direct``), blocks (``/users/blocks``) and the
do-not-disturb preference (``/users/preferences``)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, delete, get, post, put
from litestar.di import Provide
from litestar.params import JSONBody, QueryParameter

from dialtone.api.channels import channel_out
from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.db.repositories.members import OWNER
from dialtone.schemas.channels import ChannelEnvelope
from dialtone.schemas.common import rfc3339
from dialtone.schemas.direct import (
    BlockIn,
    BlockList,
    BlockOut,
    DirectIn,
    DirectStatusOut,
    PreferencesIn,
    PreferencesOut,
)
from dialtone.services.blocks import BlockService, PreferenceService
from dialtone.services.direct import DirectService

UserIdQuery = Annotated[str, QueryParameter(min_length=1, max_length=64, pattern=r"^[^\x00]*$")]


class DirectController(Controller):
    path = "/channels/direct"
    tags = ["channels"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @post("/")
    async def open(
        self, data: JSONBody[DirectIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> Response[ChannelEnvelope]:
        room = await DirectService(uow, ctx).open(caller, data.user_id)
        return Response(
            ChannelEnvelope(channel=channel_out(room.channel, OWNER, room.peer_user_id)),
            status_code=201 if room.created else 200,
        )

    @get("/")
    async def status(
        self, user_id: UserIdQuery, uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> DirectStatusOut:
        found = await DirectService(uow, ctx).status(caller, user_id)
        return DirectStatusOut(allowed=found.allowed, channel_id=found.channel_id)


class BlockController(Controller):
    path = "/users/blocks"
    tags = ["users"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @post("/")
    async def block(
        self, data: JSONBody[BlockIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> Response[BlockOut]:
        row, added = await BlockService(uow, ctx).block(caller, data.user_id)
        return Response(
            BlockOut(user_id=row.blocked_id, created_at=rfc3339(row.created_at)),
            status_code=201 if added else 200,
        )

    @get("/")
    async def list_blocks(self, uow: Uow, ctx: Ctx, caller: CallerDep) -> BlockList:
        rows = await BlockService(uow, ctx).list(caller)
        return BlockList(
            blocks=[BlockOut(user_id=r.blocked_id, created_at=rfc3339(r.created_at)) for r in rows]
        )

    @delete("/", status_code=204)
    async def unblock(self, user_id: UserIdQuery, uow: Uow, ctx: Ctx, caller: CallerDep) -> None:
        await BlockService(uow, ctx).unblock(caller, user_id)


class PreferenceController(Controller):
    path = "/users/preferences"
    tags = ["users"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @get("/")
    async def read(self, uow: Uow, ctx: Ctx, caller: CallerDep) -> PreferencesOut:
        value = await PreferenceService(uow, ctx).direct_messages(caller)
        return PreferencesOut(direct_messages=value)

    @put("/")
    async def write(
        self, data: JSONBody[PreferencesIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> PreferencesOut:
        value = await PreferenceService(uow, ctx).set_direct_messages(caller, data.direct_messages)
        return PreferencesOut(direct_messages=value)
