"""Moderation any member may use (deleting messages, the deletions feed, the staff list)
and the public server information."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, delete, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import QueryParameter

from dialtone import __version__
from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.api.params import ChannelIdQuery, CursorQuery, LimitQuery, TextQuery
from dialtone.db.repositories.messages import Tombstone
from dialtone.schemas.admin import (
    DeletionOut,
    DeletionPage,
    ModeratorList,
    ServerInfoOut,
    StaffMember,
)
from dialtone.schemas.common import rfc3339
from dialtone.services.admin import AdminService
from dialtone.services.maintenance import checkpoint_sqlite

MessageIdQuery = Annotated[str, QueryParameter(min_length=1, max_length=64, pattern=r"^[^\x00]*$")]
_caller = {"caller": Provide(provide_caller)}
_members = [members]


@delete(
    "/channels/messages",
    status_code=204,
    tags=["messages"],
    dependencies=_caller,
    guards=_members,
)
async def delete_message(
    request: Request[Any, State, Any],
    message_id: MessageIdQuery,
    uow: Uow,
    ctx: Ctx,
    caller: CallerDep,
) -> None:
    if await AdminService(uow, ctx).delete_message(caller, message_id):
        await uow.commit()
        await checkpoint_sqlite(request.app.state.sessionmaker)


@get("/channels/messages/deleted", tags=["messages"], dependencies=_caller, guards=_members)
async def deleted_messages(
    channel_id: ChannelIdQuery,
    uow: Uow,
    ctx: Ctx,
    caller: CallerDep,
    since: TextQuery = None,
    limit: LimitQuery = None,
    cursor: CursorQuery = None,
) -> DeletionPage:
    page = await AdminService(uow, ctx).deletions(channel_id, since, limit, cursor, caller)
    return DeletionPage(
        channel_id=channel_id,
        deletions=[deletion_out(t) for t in page.items],
        next_cursor=page.next_cursor,
    )


def deletion_out(t: Tombstone) -> DeletionOut:
    """One deleted message as the deletions feed and ``/sync`` show it."""
    return DeletionOut(
        message_id=t.id,
        channel_id=t.channel_id,
        sender_id=t.sender_id,
        sent_at=rfc3339(t.sent_at),
        deleted_at=rfc3339(t.deleted_at),
        deleted_by=t.deleted_by,
    )


@get("/moderators", tags=["users"], dependencies=_caller, guards=_members)
async def moderators(uow: Uow, ctx: Ctx, caller: CallerDep) -> ModeratorList:
    staff = await AdminService(uow, ctx).moderators()
    return ModeratorList(
        moderators=[
            StaffMember(user_id=user_id, is_admin=admin, is_moderator=moderator)
            for user_id, admin, moderator in staff
        ]
    )


@get("/server/info", tags=["server"])
async def server_info(ctx: Ctx) -> ServerInfoOut:
    live = ctx.live_settings
    return ServerInfoOut(
        server_title=live.server_title,
        welcome_message=live.welcome_message,
        registration_open=live.registration_open,
        version=__version__,
        directory_key_commitment=ctx.directory_commitment,
    )
