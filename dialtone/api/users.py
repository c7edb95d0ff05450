from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import JSONBody

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import admin_actor, admins, members
from dialtone.schemas.common import Status, rfc3339
from dialtone.schemas.users import ProfileIn, ProfileList, ProfileOut, UserCreate, UserOut
from dialtone.services.users import UserService


class UserController(Controller):
    path = "/users"
    tags = ["users"]

    @post("/", status_code=201, guards=[admins])
    async def reserve(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[UserCreate],
        uow: Uow,
        ctx: Ctx,
    ) -> UserOut:
        caller = admin_actor(request)
        user, name = await UserService(uow, ctx).reserve(caller, data.username)
        return UserOut(id=user.id, username=name, created_at=rfc3339(user.created_at))

    @get("/profiles", dependencies={"caller": Provide(provide_caller)}, guards=[members])
    async def profiles(self, uow: Uow, ctx: Ctx, caller: CallerDep) -> ProfileList:
        rows = await UserService(uow, ctx).list_profiles(caller)
        return ProfileList(
            profiles=[
                ProfileOut(user_id=p.user_id, name_enc=p.name_enc, updated_at=rfc3339(p.updated_at))
                for p in rows
            ]
        )

    @post(
        "/profiles",
        status_code=201,
        dependencies={"caller": Provide(provide_caller)},
        guards=[members],
    )
    async def set_profile(
        self, data: JSONBody[ProfileIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> Status:
        await UserService(uow, ctx).set_profile(caller, data.name_enc)
        return Status()
