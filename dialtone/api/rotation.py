from __future__ import annotations

from litestar import post
from litestar.di import Provide
from litestar.params import JSONBody

from dialtone.api.channels import channel_out
from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.schemas.channels import ChannelEnvelope
from dialtone.schemas.rotation import RotateIn
from dialtone.services.rotation import RotationService


@post(
    "/channels/rotate",
    status_code=200,
    tags=["keys"],
    guards=[members],
    dependencies={"caller": Provide(provide_caller)},
)
async def rotate_key(
    data: JSONBody[RotateIn], uow: Uow, ctx: Ctx, caller: CallerDep
) -> ChannelEnvelope:
    """A private room's next key version (docs/API.md, "Key rotation")."""
    channel, role = await RotationService(uow, ctx).rotate(
        caller, data.channel_id, data.key_version, data.key_commitment
    )
    peer = None
    if channel.direct_key is not None:  # "uidA:uidB": the caller's view is the other one
        peer = next((u for u in channel.direct_key.split(":") if u != caller.user_id), None)
    return ChannelEnvelope(channel=channel_out(channel, role=role, peer_user_id=peer))
