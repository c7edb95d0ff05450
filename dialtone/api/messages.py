from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.di import Provide
from litestar.params import QueryParameter

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.api.params import ChannelIdQuery, OptionalIdQuery
from dialtone.schemas.messages import MessagePage
from dialtone.services.messages import MessageService, message_out


@get(
    "/channels/messages",
    tags=["messages"],
    dependencies={"caller": Provide(provide_caller)},
    guards=[members],
)
async def channel_history(
    channel_id: ChannelIdQuery,
    uow: Uow,
    ctx: Ctx,
    caller: CallerDep,
    limit: Annotated[int | None, QueryParameter(ge=-(2**31), le=2**31)] = None,
    before: OptionalIdQuery = None,
    after: OptionalIdQuery = None,
    after_seq: Annotated[int | None, QueryParameter(ge=0, le=2**62)] = None,
) -> MessagePage:
    rows = await MessageService(uow, ctx).history(
        channel_id, limit, before, after, after_seq, caller=caller
    )
    return MessagePage(
        channel_id=channel_id,
        messages=[message_out(channel_id, row) for row in rows],
    )
