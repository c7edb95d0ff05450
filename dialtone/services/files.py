"""Encrypted files (issue 17): uploads, downloads, attachments' deletion and the sweep.

The server keeps opaque bytes: the client encrypted each file with a key it sends only
inside an encrypted message. A file belongs to a channel; whoever may see the channel
may read it, nobody else learns it exists.

An upload is judged before its body is read (length, quota, channel), streamed to the
storage (never whole in memory, no database connection held meanwhile), and only then
gets its row. Bytes leave the storage only after the transaction that deleted their
row has committed; a row that never commits takes its bytes with it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Collection
from dataclasses import dataclass
from datetime import timedelta

from dialtone.db.base import new_id
from dialtone.db.models import Channel, StoredFile
from dialtone.db.repositories.files import FileRepository
from dialtone.db.repositories.members import MemberRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.db.upsert import ReferenceGone
from dialtone.errors import DialtoneError, InvalidInput, NotFound, TooLarge
from dialtone.services.auth import rate_limit
from dialtone.services.context import Caller, ServerContext
from dialtone.storage import BodyTooLong, BodyTooShort, FileStorage

log = logging.getLogger("dialtone.files")

# Attachments one message may carry.
MAX_ATTACHMENTS = 10
# Unfinished uploads (a crash mid-body) older than this are removed by the sweep.
PARTIAL_UPLOAD_AGE = 3600.0


def file_not_found() -> NotFound:
    return NotFound("file not found", code="file_not_found")


def invalid_attachment() -> InvalidInput:
    return InvalidInput(
        "attachments must be your own uploads to this channel that no message carries yet",
        code="invalid_attachment",
    )


def forget_after_commit(uow: UnitOfWork, storage: FileStorage, keys: Collection[str]) -> None:
    """Remove these files' bytes once the transaction that deleted their rows commits."""
    if not keys:
        return
    pending = list(keys)

    async def remove() -> None:
        for key in pending:
            try:
                await storage.delete(key)
            except Exception as exc:  # the rows are gone; a leftover file is only space
                log.warning("could not remove a file: %s", type(exc).__name__)

    uow.after_commit(remove)


@dataclass(frozen=True, slots=True)
class Upload:
    """What an upload was admitted as (before its body is read)."""

    channel_id: str
    length: int


class FileService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.files = FileRepository(uow.session)
        self.members = MemberRepository(uow.session)

    async def admit(self, caller: Caller, channel_id: str, content_length: str | None) -> Upload:
        """Judge an upload by its headers alone: rate limit, length, channel, quota."""
        await rate_limit(self.ctx, "file_upload", caller.user_id)
        if content_length is None:
            raise DialtoneError(
                "give the file's size in Content-Length (no chunked uploads)",
                code="length_required",
                status=411,
            )
        text = content_length.strip()
        if not text.isdigit() or len(text) > 18:
            raise InvalidInput("Content-Length must be a whole number", code="invalid_length")
        length = int(text)
        if length == 0:
            raise InvalidInput("an empty file cannot be uploaded", code="invalid_length")
        limit = self.ctx.settings.max_file_bytes
        if length > limit:
            raise TooLarge(f"files may be at most {limit} bytes", code="file_too_large")
        if await self.members.visible(channel_id, caller.user_id) is None:
            raise NotFound("channel not found", code="channel_not_found")
        await self._check_quota(caller.user_id, length)
        # No connection is held while the body streams in.
        await self.uow.release_connection()
        return Upload(channel_id=channel_id, length=length)

    async def _check_quota(self, user_id: str, more: int) -> None:
        quota = self.ctx.settings.user_storage_quota_bytes
        if await self.files.used_by(user_id) + more > quota:
            raise TooLarge(
                f"this upload would take your stored files past your quota of {quota} bytes",
                code="storage_quota_exceeded",
            )

    async def store(
        self, caller: Caller, upload: Upload, chunks: AsyncIterable[bytes]
    ) -> StoredFile:
        """Stream the body into the storage, then record it (in this unit of work)."""
        storage = self.ctx.files
        file_id = new_id()
        try:
            stored = await storage.put(file_id, chunks, upload.length)
        except BodyTooLong:
            raise InvalidInput(
                "the body is longer than its Content-Length", code="invalid_length"
            ) from None
        except BodyTooShort:
            raise InvalidInput(
                "the body ended before its Content-Length", code="invalid_length"
            ) from None

        async def drop() -> None:
            await storage.delete(file_id)

        # From here the bytes go if the row does not commit.
        self.uow.after_rollback(drop)
        try:
            row = await self.files.add(
                StoredFile(
                    id=file_id,
                    channel_id=upload.channel_id,
                    uploader_id=caller.user_id,
                    size=stored.size,
                    sha256=stored.sha256,
                    storage_key=file_id,
                    created_at=self.ctx.clock(),
                )
            )
        except ReferenceGone:
            raise NotFound("channel not found", code="channel_not_found") from None
        # Two uploads at once may both have passed the check before their bodies:
        # counted again with this row in, so the quota holds at the commit.
        quota = self.ctx.settings.user_storage_quota_bytes
        if await self.files.used_by(caller.user_id) > quota:
            raise TooLarge(
                f"this upload would take your stored files past your quota of {quota} bytes",
                code="storage_quota_exceeded",
            )
        return row

    async def readable(self, caller: Caller, file_id: str) -> StoredFile:
        """The file, if the caller may see its channel; 404 otherwise (and when unknown)."""
        row = await self.files.visible(file_id, caller.user_id)
        if row is None:
            raise file_not_found()
        return row

    async def set_channel_image(
        self, caller: Caller, channel_id: str, file_id: str | None
    ) -> Channel:
        """An unclaimed upload of the caller's to this channel, or None to clear it; the
        image it replaces is deleted. Who may is ChannelService.set_image's rule (whoever
        may rename the channel)."""
        if await self.members.visible(channel_id, caller.user_id) is None:
            raise NotFound("channel not found", code="channel_not_found")
        outcome = await self.files.set_channel_image(channel_id, file_id, caller.user_id)
        if outcome is None:
            if await self.members.visible(channel_id, caller.user_id) is None:
                raise NotFound("channel not found", code="channel_not_found")
            raise InvalidInput(
                "the image must be your own upload to this channel that no message carries",
                code="invalid_image",
            )
        channel, replaced = outcome
        if replaced is not None:
            forget_after_commit(self.uow, self.ctx.files, await self.files.delete_ids([replaced]))
        return channel

    async def delete_for_messages(self, message_ids: Collection[str]) -> int:
        """The files of messages being deleted in this transaction."""
        keys = await self.files.delete_for_messages(message_ids)
        forget_after_commit(self.uow, self.ctx.files, keys)
        return len(keys)

    async def delete_for_channel(self, channel_id: str) -> None:
        """Before the channel goes (its rows go by the foreign key's cascade)."""
        forget_after_commit(self.uow, self.ctx.files, await self.files.keys_of_channel(channel_id))

    async def prune(self) -> int:
        """Retention and the orphan sweep: files of messages past retention, uploads no
        message claimed in time, and unfinished uploads a crash left behind."""
        now = self.ctx.clock()
        keys: list[str] = []
        days = self.ctx.live_settings.message_retention_days
        if days > 0:
            keys += await self.files.delete_for_messages_before(now - timedelta(days=days))
        keys += await self.files.delete_unclaimed_before(
            now - timedelta(seconds=self.ctx.settings.orphan_file_ttl)
        )
        forget_after_commit(self.uow, self.ctx.files, keys)
        return len(keys)
