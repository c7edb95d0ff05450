from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, put
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.errors import InvalidInput
from dialtone.schemas.key_backups import KeyBackupIn, KeyBackupOut, KeyBackupVersion
from dialtone.services.key_backups import KeyBackupService, encoded_limit, too_large

_decoder = msgspec.json.Decoder(KeyBackupIn)


async def read_backup_body(request: Request[Any, Any, State], max_bytes: int) -> KeyBackupIn:
    """The PUT body, refused with 413 ``backup_too_large`` as soon as it is longer than a
    blob of ``max_bytes`` can be (by Content-Length, else while streaming), before any
    decoding. The limit follows the live settings, which a route's fixed
    ``request_max_body_size`` could not."""
    limit = encoded_limit(max_bytes)
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(max_bytes)
        chunks.append(chunk)
    try:
        return _decoder.decode(b"".join(chunks))
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), code="invalid_input") from None
    except msgspec.DecodeError:
        raise InvalidInput("the body must be a JSON object", code="invalid_input") from None


class KeyBackupController(Controller):
    path = "/keys/backup"
    tags = ["keys"]
    dependencies = {"caller": Provide(provide_caller)}
    guards = [members]
    # The body is bounded by DIALTONE_KEY_BACKUP_MAX_BYTES in read_backup_body instead.
    request_max_body_size = None

    @get("/", responses={404: ResponseSpec(None, description="no_backup: none stored")})
    async def get_backup(self, uow: Uow, ctx: Ctx, caller: CallerDep) -> KeyBackupOut:
        backup = await KeyBackupService(uow, ctx).get(caller)
        return KeyBackupOut(backup=backup.backup, version=backup.version)

    @put(
        "/",
        responses={
            409: ResponseSpec(None, description="backup_conflict: stale version (body has it)"),
            413: ResponseSpec(None, description="backup_too_large"),
        },
    )
    async def put_backup(
        self, request: Request[Any, Any, State], uow: Uow, ctx: Ctx, caller: CallerDep
    ) -> KeyBackupVersion:
        data = await read_backup_body(request, ctx.settings.key_backup_max_bytes)
        version = await KeyBackupService(uow, ctx).put(caller, data.backup, data.version)
        return KeyBackupVersion(version=version)

    @delete("/", status_code=204)
    async def delete_backup(self, uow: Uow, ctx: Ctx, caller: CallerDep) -> None:
        await KeyBackupService(uow, ctx).delete(caller)
