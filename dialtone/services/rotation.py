"""Key rotation of private rooms (issue 16 item 4).

A private room is marked for rotation (``rekey_required`` and ``channel.rekey_required``
to its members) when someone can no longer be trusted with its key: a member left or
was removed, banned, locked or deleted, or a member's device was revoked. An owner's (or
an admin member's) device then makes a new key and posts ``POST /channels/rotate`` with
the next version and its commitment, followed by envelopes for the remaining members'
devices. The server keeps every version's envelopes for the members, so history stays
readable, and refuses envelopes for devices of anyone else.
"""

from __future__ import annotations

from collections.abc import Collection

from dialtone.db.models import Channel
from dialtone.db.repositories.members import OWNER, MemberRepository
from dialtone.db.repositories.rotation import KeyRotationRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Conflict, Forbidden, NotFound
from dialtone.schemas.events import ChannelRekeyRequired
from dialtone.services.channels import channel_updated, checked_commitment
from dialtone.services.context import Caller, ServerContext


def key_version_conflict() -> Conflict:
    """A key version that does not follow (a rotation), or that the channel does not have
    yet (an envelope or a message)."""
    return Conflict(
        "key_version does not match the channel's current key version",
        code="key_version_conflict",
    )


async def mark_for_rekey(uow: UnitOfWork, channel_ids: Collection[str]) -> list[str]:
    """Mark these rooms for rotation (public ones are skipped) and queue
    ``channel.rekey_required`` with the version to replace for each; the rooms marked.
    Marking a room already marked announces it again: harmless, the next rotation clears
    it."""
    marked = await KeyRotationRepository(uow.session).mark(channel_ids)
    for channel_id, key_version in marked:
        uow.emit(ChannelRekeyRequired(channel_id=channel_id, key_version=key_version))
    return [channel_id for channel_id, _ in marked]


async def mark_rooms_of(uow: UnitOfWork, user_id: str) -> list[str]:
    """Mark every private room ``user_id`` is a member of (banned, locked, deleted, or one
    of its devices revoked). Call it before a write that removes the member rows."""
    rooms = await KeyRotationRepository(uow.session).private_rooms_of(user_id)
    return await mark_for_rekey(uow, rooms)


class RotationService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.members = MemberRepository(uow.session)
        self.rotation = KeyRotationRepository(uow.session)

    async def rotate(
        self, caller: Caller, channel_id: str, key_version: int, commitment: str
    ) -> tuple[Channel, str]:
        """The rotated room and the caller's role in it."""
        checked_commitment(commitment)
        channel = await self.members.visible(channel_id, caller.user_id)
        if channel is None:
            raise NotFound("channel not found", code="channel_not_found")
        if not channel.private:
            raise Conflict("public channels have no key rotation", code="public_channel")
        role = await self.members.role(channel_id, caller.user_id)
        if role is None or (role != OWNER and not caller.is_admin):
            raise Forbidden(
                "only an owner of the room, or an admin who is a member, may rotate its key",
                code="not_owner",
            )
        if key_version != channel.key_version + 1:
            raise key_version_conflict()
        rotated = await self.rotation.rotate(channel_id, key_version, commitment, self.ctx.clock())
        if rotated is None:
            # Another device rotated first (or the room went away) since the read above.
            if await self.members.role(channel_id, caller.user_id) is None:
                raise NotFound("channel not found", code="channel_not_found")
            raise key_version_conflict()
        self.uow.emit(channel_updated(rotated))
        return rotated, role
