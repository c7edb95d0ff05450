from __future__ import annotations

from litestar import post
from litestar.di import Provide
from litestar.params import JSONBody

from dialtone.api.channels import channel_out
from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.api.moderation import deletion_out
from dialtone.db.repositories.direct import peer_of
from dialtone.schemas.sync import SyncChannelOut, SyncIn, SyncOut
from dialtone.services.messages import message_out
from dialtone.services.sync import SyncCursor, SyncService


@post(
    "/sync",
    status_code=200,
    tags=["messages"],
    dependencies={"caller": Provide(provide_caller)},
    guards=[members],
)
async def sync(data: JSONBody[SyncIn], uow: Uow, ctx: Ctx, caller: CallerDep) -> SyncOut:
    result = await SyncService(uow, ctx).catch_up(
        caller,
        [SyncCursor(c.channel_id, c.last_message_id, c.last_deletion_at) for c in data.channels],
        data.limit,
    )
    return SyncOut(
        channels=[
            SyncChannelOut(
                channel_id=c.channel_id,
                messages=[message_out(c.channel_id, row) for row in c.messages],
                more=c.more,
                deleted=[deletion_out(t) for t in c.deleted],
                deleted_more=c.deleted_more,
            )
            for c in result.channels
        ],
        gone=result.gone,
        added=[
            channel_out(
                channel,
                role,
                peer_of(channel.direct_key, caller.user_id) if channel.direct_key else None,
            )
            for channel, role in result.added
        ],
    )
