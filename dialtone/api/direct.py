"""Direct messages: ``/channels/direct``."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import Provide
from litestar.params import JSONBody, QueryParameter

from dialtone.api.channels import channel_out
from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.db.repositories.members import OWNER
from dialtone.schemas.channels import ChannelEnvelope
from dialtone.schemas.direct import DirectIn, DirectStatusOut
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
