from __future__ import annotations

from litestar import Controller, Response, delete, get, patch, post, put
from litestar.di import Provide
from litestar.params import JSONBody

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.api.params import ChannelIdQuery, UserIdQuery
from dialtone.db.models import Channel
from dialtone.schemas.channels import (
    ChannelCreate,
    ChannelEnvelope,
    ChannelImageIn,
    ChannelList,
    ChannelOut,
    ChannelUpdate,
    CommitmentIn,
    MemberEnvelope,
    MemberIn,
    MemberItem,
    MemberList,
)
from dialtone.schemas.common import rfc3339
from dialtone.services.channels import ChannelService, Seen, peer_of
from dialtone.services.context import Caller
from dialtone.services.members import MemberService


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


def seen_out(seen: Seen, caller: Caller) -> ChannelOut:
    channel, role = seen
    return channel_out(channel, role, peer_of(channel, caller.user_id))


class ChannelController(Controller):
    path = "/channels"
    tags = ["channels"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @get("/")
    async def list_channels(self, uow: Uow, ctx: Ctx, caller: CallerDep) -> ChannelList:
        seen = await ChannelService(uow, ctx).list(caller)
        return ChannelList(channels=[seen_out(s, caller) for s in seen])

    @post("/", status_code=201)
    async def create(
        self, data: JSONBody[ChannelCreate], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> ChannelEnvelope:
        seen = await ChannelService(uow, ctx).create(
            caller, data.name_enc, data.key_commitment, data.private
        )
        return ChannelEnvelope(channel=seen_out(seen, caller))

    @put("/commitment")
    async def set_commitment(
        self, data: JSONBody[CommitmentIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> ChannelEnvelope:
        seen = await ChannelService(uow, ctx).set_commitment(
            caller, data.channel_id, data.key_commitment
        )
        return ChannelEnvelope(channel=seen_out(seen, caller))

    @patch("/")
    async def rename(
        self, data: JSONBody[ChannelUpdate], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> ChannelEnvelope:
        seen = await ChannelService(uow, ctx).rename(caller, data.channel_id, data.name_enc)
        return ChannelEnvelope(channel=seen_out(seen, caller))

    @put("/image")
    async def set_image(
        self, data: JSONBody[ChannelImageIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> ChannelEnvelope:
        seen = await ChannelService(uow, ctx).set_image(caller, data.channel_id, data.file_id)
        return ChannelEnvelope(channel=seen_out(seen, caller))

    @delete("/", status_code=204)
    async def remove(
        self, channel_id: ChannelIdQuery, uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> None:
        await ChannelService(uow, ctx).delete(caller, channel_id)


class MemberController(Controller):
    """Members of private rooms (issue 16)."""

    path = "/channels/members"
    tags = ["channels"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @get("/")
    async def list_members(
        self, channel_id: ChannelIdQuery, uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> MemberList:
        found = await MemberService(uow, ctx).list(caller, channel_id)
        return MemberList(
            members=[MemberItem(user_id=m.user_id, role=m.role) for m in found],
            member_count=len(found),
        )

    @post("/", status_code=201)
    async def add(
        self, data: JSONBody[MemberIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> Response[MemberEnvelope]:
        member, added = await MemberService(uow, ctx).add(
            caller, data.channel_id, data.user_id, data.role
        )
        body = MemberEnvelope(member=MemberItem(user_id=member.user_id, role=member.role))
        return Response(body, status_code=201 if added else 200)

    @delete("/", status_code=204)
    async def remove(
        self,
        channel_id: ChannelIdQuery,
        user_id: UserIdQuery,
        uow: Uow,
        ctx: Ctx,
        caller: CallerDep,
    ) -> None:
        await MemberService(uow, ctx).remove(caller, channel_id, user_id)
