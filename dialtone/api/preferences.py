"""The caller's own preferences the server acts on: ``/users/preferences``."""

from __future__ import annotations

from litestar import Controller, get, put
from litestar.di import Provide
from litestar.params import JSONBody

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.schemas.direct import PreferencesIn, PreferencesOut
from dialtone.services.blocks import PreferenceService


class PreferenceController(Controller):
    path = "/users/preferences"
    tags = ["users"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]

    @get("/")
    async def read(self, uow: Uow, ctx: Ctx, caller: CallerDep) -> PreferencesOut:
        value = await PreferenceService(uow, ctx).direct_messages(caller)
        return PreferencesOut(direct_messages=value)

    @put("/")
    async def write(
        self, data: JSONBody[PreferencesIn], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> PreferencesOut:
        value = await PreferenceService(uow, ctx).set_direct_messages(caller, data.direct_messages)
        return PreferencesOut(direct_messages=value)
