from __future__ import annotations

from litestar import post
from litestar.di import Provide
from litestar.params import JSONBody

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.schemas.presence import PresenceIn, PresenceOut
from dialtone.services.presence import PresenceService


@post(
    "/presence",
    status_code=200,
    tags=["presence"],
    dependencies={"caller": Provide(provide_caller)},
    guards=[members],
)
async def presence(
    data: JSONBody[PresenceIn], uow: Uow, ctx: Ctx, caller: CallerDep
) -> PresenceOut:
    statuses, admins = await PresenceService(uow, ctx).statuses(data.user_ids)
    return PresenceOut(statuses=statuses, admins=admins)
