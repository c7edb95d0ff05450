"""Blocking users: ``/users/blocks``. Never visible to the blocked user."""

from __future__ import annotations

from litestar import Controller, Response, delete, get, post
from litestar.di import Provide
from litestar.params import JSONBody

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.direct import UserIdQuery
from dialtone.api.guards import members
from dialtone.schemas.common import rfc3339
from dialtone.schemas.direct import BlockIn, BlockList, BlockOut
from dialtone.services.blocks import BlockService


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
