from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.di import Provide
from litestar.params import QueryParameter

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.api.params import ChannelIdQuery, OptionalIdQuery
from dialtone.schemas.messages import MessageOut, MessagePage
from dialtone.services.messages import MessageService


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
) -> MessagePage:
    rows = await MessageService(uow, ctx).history(channel_id, limit, before, after)
    return MessagePage(
        channel_id=channel_id,
        messages=[
            MessageOut(id, channel_id, sender_id, sender_name_enc, body, sent_at)
            for id, sender_id, sender_name_enc, body, sent_at in rows
        ],
    )
