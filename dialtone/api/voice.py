from __future__ import annotations

from litestar import get
from litestar.di import Provide

from dialtone.api.dependencies import CallerDep, Ctx, provide_caller
from dialtone.api.guards import members
from dialtone.schemas.voice import TurnCredentialsOut
from dialtone.services.voice import VoiceService


@get(
    "/voice/turn",
    tags=["voice"],
    dependencies={"caller": Provide(provide_caller)},
    guards=[members],
)
async def turn_credentials(ctx: Ctx, caller: CallerDep) -> TurnCredentialsOut:
    creds = VoiceService(ctx).turn_credentials(caller)
    return TurnCredentialsOut(
        username=creds.username, credential=creds.credential, ttl=creds.ttl, uris=creds.uris
    )
