"""``/admin/*``: the operator's surface. Every handler first checks the credentials:
the ``X-Admin-Token`` or an admin's bearer token (401 without or with a wrong one,
403 for anyone else's); the moderator endpoints accept a moderator's token too."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from dialtone.api.dependencies import Ctx, Uow
from dialtone.api.guards import admin_actor, admins, staff
from dialtone.api.params import (
    CursorQuery,
    ItemIdPath,
    LimitQuery,
    OptionalIdQuery,
    TextQuery,
    UserIdPath,
    tristate,
)
from dialtone.db.models import Ban, Invite, ServerLogEntry
from dialtone.db.repositories.invites import invite_state
from dialtone.errors import InvalidInput
from dialtone.schemas.admin import (
    AdminInviteOut,
    AdminUserOut,
    AdminUserPage,
    AnnounceIn,
    BanIn,
    BanOut,
    BanPage,
    DeletedCount,
    DrainOut,
    InvitePage,
    LogEntryOut,
    LogPage,
    SettingsOut,
    StatsOut,
    UserFlagsIn,
    VoiceRoomStats,
)
from dialtone.schemas.common import Status, rfc3339
from dialtone.security.headers import scope_address
from dialtone.services.admin import AdminService, UserRow, ban_rule
from dialtone.services.context import ServerContext
from dialtone.services.maintenance import checkpoint_sqlite

Req = Request[Any, State, Any]
# ``state`` is a reserved handler argument in Litestar, hence the alias.
StateQuery = Annotated[str | None, QueryParameter(name="state", max_length=16)]


def user_out(row: UserRow) -> AdminUserOut:
    user = row.user
    return AdminUserOut(
        id=user.id,
        created_at=rfc3339(user.created_at),
        is_admin=user.is_admin,
        is_moderator=user.is_moderator,
        is_trusted=user.is_trusted,
        is_locked=user.is_locked,
        device_count=row.device_count,
        online=row.online,
        last_seen_at=rfc3339(row.last_seen_at) if row.last_seen_at else None,
        storage_bytes=row.storage_bytes,
    )


def ban_out(ban: Ban, ctx: ServerContext) -> BanOut:
    return BanOut(
        id=ban.id,
        user_id=ban.user_id,
        address=ban.address,
        expires_at=rfc3339(ban.expires_at) if ban.expires_at else None,
        comment=ban.comment,
        created_by=ban.created_by,
        created_at=rfc3339(ban.created_at),
        active=ban.expires_at is None or ban.expires_at > ctx.clock(),
    )


def invite_out(invite: Invite, ctx: ServerContext) -> AdminInviteOut:
    return AdminInviteOut(
        id=invite.id,
        created_at=rfc3339(invite.created_at),
        expires_at=rfc3339(invite.expires_at),
        uses=invite.uses,
        max_uses=invite.max_uses,
        state=invite_state(invite, ctx.clock()),
        revoked_at=rfc3339(invite.revoked_at) if invite.revoked_at else None,
    )


def log_out(entry: ServerLogEntry) -> LogEntryOut:
    return LogEntryOut(
        id=entry.id,
        at=rfc3339(entry.at),
        level=entry.level,
        topic=entry.topic,
        user_id=entry.user_id,
        device_id=entry.device_id,
        actor_id=entry.actor_id,
        address=entry.address,
        message=entry.message,
    )


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]

    # ------------------------------------------------------------ overview

    @get("/stats", guards=[admins])
    async def stats(self, uow: Uow, ctx: Ctx) -> StatsOut:
        values = await AdminService(uow, ctx).stats()
        values["voice_rooms"] = [VoiceRoomStats(**room) for room in values["voice_rooms"]]
        return StatsOut(**values)

    # ------------------------------------------------------------ users

    @get("/users", guards=[staff])
    async def users(
        self,
        uow: Uow,
        ctx: Ctx,
        limit: LimitQuery = None,
        cursor: CursorQuery = None,
        online: TextQuery = None,
        locked: TextQuery = None,
        role: TextQuery = None,
    ) -> AdminUserPage:
        page = await AdminService(uow, ctx).list_users(
            limit,
            cursor,
            online=tristate(online, "online"),
            locked=tristate(locked, "locked"),
            role=role,
        )
        return AdminUserPage(users=[user_out(r) for r in page.items], next_cursor=page.next_cursor)

    @patch("/users/{user_id:str}", guards=[admins])
    async def update_user(
        self, request: Req, user_id: UserIdPath, data: JSONBody[UserFlagsIn], uow: Uow, ctx: Ctx
    ) -> AdminUserOut:
        actor = admin_actor(request)
        changes = {
            name: value
            for name in ("is_admin", "is_moderator", "is_trusted", "is_locked")
            if (value := getattr(data, name)) is not None
        }
        row = await AdminService(uow, ctx).update_user(actor, user_id, changes)
        return user_out(row)

    @post("/users/{user_id:str}/kick", status_code=200, guards=[staff])
    async def kick(self, request: Req, user_id: UserIdPath, uow: Uow, ctx: Ctx) -> Status:
        actor = admin_actor(request)
        await AdminService(uow, ctx).kick(actor, user_id)
        return Status()

    @delete("/users/{user_id:str}/sessions", status_code=200, guards=[admins])
    async def end_sessions(self, request: Req, user_id: UserIdPath, uow: Uow, ctx: Ctx) -> Status:
        actor = admin_actor(request)
        await AdminService(uow, ctx).end_sessions(actor, user_id)
        return Status()

    @delete("/users/{user_id:str}", status_code=200, guards=[admins])
    async def delete_user(
        self,
        request: Req,
        user_id: UserIdPath,
        uow: Uow,
        ctx: Ctx,
        messages: TextQuery = None,
    ) -> DeletedCount:
        actor = admin_actor(request)
        if messages not in (None, "keep", "delete"):
            raise InvalidInput("messages must be keep or delete", code="invalid_input")
        erased = await AdminService(uow, ctx).delete_user(
            actor, user_id, messages=messages == "delete"
        )
        if erased:
            await uow.commit()
            await checkpoint_sqlite(request.app.state.sessionmaker)
        return DeletedCount(deleted=erased)

    @delete("/users/{user_id:str}/messages", status_code=200, guards=[staff])
    async def delete_messages(
        self,
        request: Req,
        user_id: UserIdPath,
        uow: Uow,
        ctx: Ctx,
        channel_id: OptionalIdQuery = None,
    ) -> DeletedCount:
        actor = admin_actor(request)
        erased = await AdminService(uow, ctx).erase_messages(actor, user_id, channel_id)
        if erased:
            await uow.commit()
            await checkpoint_sqlite(request.app.state.sessionmaker)
        return DeletedCount(deleted=erased)

    # ------------------------------------------------------------ bans

    @post("/bans", status_code=201, guards=[staff])
    async def ban(self, request: Req, data: JSONBody[BanIn], uow: Uow, ctx: Ctx) -> BanOut:
        actor = admin_actor(request)
        ban = await AdminService(uow, ctx).ban(
            actor,
            user_id=data.user_id,
            address=data.address,
            expires_at=data.expires_at,
            duration_seconds=data.duration_seconds,
            comment=data.comment,
            client=scope_address(request.scope, ctx.trusted_proxies),
        )
        # Stored: refuse on this node from now on, before the broker's event arrives.
        await uow.commit()
        ctx.bans.add(ban_rule(ban))
        return ban_out(ban, ctx)

    @get("/bans", guards=[staff])
    async def bans(
        self,
        uow: Uow,
        ctx: Ctx,
        limit: LimitQuery = None,
        cursor: CursorQuery = None,
        active: TextQuery = None,
        user_id: OptionalIdQuery = None,
    ) -> BanPage:
        page = await AdminService(uow, ctx).list_bans(
            limit, cursor, active=tristate(active, "active"), user_id=user_id
        )
        return BanPage(bans=[ban_out(b, ctx) for b in page.items], next_cursor=page.next_cursor)

    @delete("/bans/{ban_id:str}", status_code=200, guards=[staff])
    async def unban(self, request: Req, ban_id: ItemIdPath, uow: Uow, ctx: Ctx) -> Status:
        actor = admin_actor(request)
        await AdminService(uow, ctx).unban(actor, ban_id)
        await uow.commit()
        ctx.bans.remove(ban_id)
        return Status()

    # ------------------------------------------------------------ invites

    @get("/invites", guards=[admins])
    async def invites(
        self,
        uow: Uow,
        ctx: Ctx,
        limit: LimitQuery = None,
        cursor: CursorQuery = None,
        invite_state: StateQuery = None,
    ) -> InvitePage:
        page = await AdminService(uow, ctx).list_invites(limit, cursor, invite_state)
        return InvitePage(
            invites=[invite_out(i, ctx) for i in page.items], next_cursor=page.next_cursor
        )

    @delete("/invites/{invite_id:str}", status_code=200, guards=[admins])
    async def revoke_invite(
        self, request: Req, invite_id: ItemIdPath, uow: Uow, ctx: Ctx
    ) -> Status:
        actor = admin_actor(request)
        await AdminService(uow, ctx).revoke_invite(actor, invite_id)
        return Status()

    # ------------------------------------------------------------ log, settings

    @get("/log", guards=[admins])
    async def server_log(
        self,
        uow: Uow,
        ctx: Ctx,
        limit: LimitQuery = None,
        cursor: CursorQuery = None,
        topic: TextQuery = None,
        user_id: OptionalIdQuery = None,
        after: TextQuery = None,
    ) -> LogPage:
        # What this node still holds in memory goes in first, so the page is current.
        await ctx.server_log.flush()
        page = await AdminService(uow, ctx).read_log(
            limit, cursor, topic=topic, user_id=user_id, after=after
        )
        return LogPage(entries=[log_out(e) for e in page.items], next_cursor=page.next_cursor)

    @get("/settings", guards=[admins])
    async def settings(self, ctx: Ctx) -> SettingsOut:
        return SettingsOut(settings=dict(ctx.live_settings.values))

    @put("/settings", guards=[admins])
    async def change_settings(
        self, request: Req, data: JSONBody[dict[str, Any]], uow: Uow, ctx: Ctx
    ) -> SettingsOut:
        actor = admin_actor(request)
        changed = await AdminService(uow, ctx).change_settings(actor, data)
        await uow.commit()
        ctx.apply_settings({**ctx.live_settings.values, **changed})
        return SettingsOut(settings=dict(ctx.live_settings.values))

    # ------------------------------------------------------------ announcements, drain

    @post("/announce", status_code=200, guards=[admins])
    async def announce(
        self, request: Req, data: JSONBody[AnnounceIn], uow: Uow, ctx: Ctx
    ) -> Status:
        actor = admin_actor(request)
        await AdminService(uow, ctx).announce(actor, data.text, data.alert)
        return Status()

    @post("/drain", status_code=200, guards=[admins])
    async def drain(self, request: Req, uow: Uow, ctx: Ctx) -> DrainOut:
        actor = admin_actor(request)
        closed = request.app.state.hub.drain()
        ctx.server_log.record(
            "drain", actor_id=actor.user_id if actor else "operator", message=f"{closed} sockets"
        )
        return DrainOut(status="draining", closed_sockets=closed)
