"""The key backup: one opaque, client-encrypted blob per user, written by compare-and-swap.

The server cannot read the blob (its key is derived on the client from a recovery key or
passphrase the server never sees); it only bounds its size and keeps writers from
overwriting each other. The blob is never logged.
"""

from __future__ import annotations

import base64
import binascii

from dialtone.db.models import KeyBackup
from dialtone.db.repositories.key_backups import KeyBackupRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.db.upsert import ReferenceGone
from dialtone.errors import Conflict, InvalidInput, NotFound, TooLarge, Unauthorized
from dialtone.services.auth import rate_limit
from dialtone.services.context import Caller, ServerContext


def decoded_size(backup: str) -> int | None:
    """The blob's size in bytes if ``backup`` is canonical, non-empty standard base64."""
    try:
        raw = base64.b64decode(backup, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw or base64.b64encode(raw).decode("ascii") != backup:
        return None
    return len(raw)


def encoded_limit(max_bytes: int) -> int:
    """The longest request body a blob of ``max_bytes`` can arrive in: its base64 plus
    room for the JSON around it, so the edge refuses anything larger before decoding."""
    return 4 * -(-max_bytes // 3) + 1024


class KeyBackupService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.backups = KeyBackupRepository(uow.session)

    async def get(self, caller: Caller) -> KeyBackup:
        await rate_limit(self.ctx, "key_backup", caller.user_id)
        backup = await self.backups.get(caller.user_id)
        if backup is None:
            raise NotFound("no key backup stored for this account", code="no_backup")
        return backup

    async def put(self, caller: Caller, backup: str, version: int) -> int:
        """Store the blob if ``version`` is the one stored (0: none); the new version."""
        await rate_limit(self.ctx, "key_backup", caller.user_id)
        # A cheap bound before decoding: base64 is 4 characters per 3 bytes.
        limit = self.ctx.settings.key_backup_max_bytes
        if len(backup) > 4 * -(-limit // 3):
            raise too_large(limit)
        size = decoded_size(backup)
        if size is None:
            raise InvalidInput(
                "backup must be non-empty standard base64 (with padding)", code="invalid_backup"
            )
        if size > limit:
            raise too_large(limit)
        try:
            stored = await self.backups.swap(caller.user_id, backup, version, self.ctx.clock())
        except ReferenceGone:
            await self.uow.session.rollback()
            raise Unauthorized("missing or invalid bearer token", code="unauthorized") from None
        if stored is None:
            current = await self.backups.current_version(caller.user_id)
            raise Conflict(
                f"the key backup has changed (now version {current}): "
                "read it, merge, and write again with that version",
                code="backup_conflict",
                extra={"version": current},
            )
        return stored

    async def delete(self, caller: Caller) -> None:
        await rate_limit(self.ctx, "key_backup", caller.user_id)
        await self.backups.delete(caller.user_id)


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"a key backup may be at most {limit} bytes", code="backup_too_large")
