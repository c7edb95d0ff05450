from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import ChannelKeyEnvelope, DirectoryKeyEnvelope


class KeyEnvelopeRepository:
    """Channel and directory key envelopes: sealed blobs addressed to devices."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def channel_envelope(self, channel_id: str, device_id: str) -> ChannelKeyEnvelope | None:
        return await self.session.get(ChannelKeyEnvelope, (channel_id, device_id))

    async def put_channel_envelopes(self, envelopes: Sequence[ChannelKeyEnvelope]) -> None:
        # Last write wins per (channel, device): key rotation replaces the old envelope.
        for envelope in envelopes:
            await self.session.merge(envelope)
        await self.session.flush()

    async def directory_envelope(self, device_id: str) -> DirectoryKeyEnvelope | None:
        return await self.session.get(DirectoryKeyEnvelope, device_id)

    async def put_directory_envelopes(self, envelopes: Sequence[DirectoryKeyEnvelope]) -> None:
        for envelope in envelopes:
            await self.session.merge(envelope)
        await self.session.flush()

    async def delete_for_device(self, device_id: str) -> None:
        await self.session.execute(
            delete(ChannelKeyEnvelope).where(ChannelKeyEnvelope.device_id == device_id)
        )
        await self.session.execute(
            delete(DirectoryKeyEnvelope).where(DirectoryKeyEnvelope.device_id == device_id)
        )
