from __future__ import annotations

from litestar import Controller, post
from litestar.di import Provide
from litestar.params import JSONBody

from dialtone.api.dependencies import (
    CallerDep,
    ClientDep,
    Ctx,
    Uow,
    provide_caller,
    provide_client,
)
from dialtone.api.guards import members
from dialtone.api.params import AllFlagQuery, flag
from dialtone.schemas.auth import AuthOut, LoginIn, RegisterIn
from dialtone.schemas.common import Status, rfc3339
from dialtone.services.auth import AuthResult, AuthService


def auth_out(result: AuthResult) -> AuthOut:
    return AuthOut(
        token=result.token,
        user_id=result.user.id,
        device_id=result.device.id,
        expires_at=rfc3339(result.expires_at),
        username=result.username,
        device_public_key=result.device.public_key,
        is_admin=result.user.is_admin,
        is_trusted=result.user.is_trusted,
        is_moderator=result.user.is_moderator,
    )


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post("/register", status_code=201, dependencies={"client": Provide(provide_client)})
    async def register(
        self, data: JSONBody[RegisterIn], uow: Uow, ctx: Ctx, client: ClientDep
    ) -> AuthOut:
        result = await AuthService(uow, ctx).register(
            data.username, data.password, data.public_key, data.invite_token, client=client
        )
        return auth_out(result)

    @post("/login", status_code=200, dependencies={"client": Provide(provide_client)})
    async def login(
        self, data: JSONBody[LoginIn], uow: Uow, ctx: Ctx, client: ClientDep
    ) -> AuthOut:
        result = await AuthService(uow, ctx).login(
            data.username, data.password, data.public_key, client=client
        )
        return auth_out(result)

    @post(
        "/logout",
        status_code=200,
        dependencies={"caller": Provide(provide_caller)},
        guards=[members],
    )
    async def logout(
        self,
        uow: Uow,
        ctx: Ctx,
        caller: CallerDep,
        everywhere: AllFlagQuery = None,
    ) -> Status:
        await AuthService(uow, ctx).logout(caller, everywhere=flag(everywhere))
        return Status()
