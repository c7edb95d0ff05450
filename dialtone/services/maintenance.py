"""Housekeeping that runs in the background of every node: purge what has expired."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.repositories.invites import InviteRepository
from dialtone.db.repositories.sessions import SessionRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.services.context import LAST_SEEN_EVERY, ServerContext

log = logging.getLogger("dialtone.maintenance")


async def _no_events(_: list[Any]) -> None:
    return None


async def purge_expired(sessionmaker: async_sessionmaker[AsyncSession], ctx: ServerContext) -> int:
    """Delete expired sessions and expired, unredeemed invites. Returns rows removed."""
    now = ctx.clock()
    async with UnitOfWork(sessionmaker, _no_events) as uow:
        sessions = await SessionRepository(uow.session).purge_expired(now)
        invites = await InviteRepository(uow.session).purge_expired(now)
    # Forget throttle entries old enough to be useless, so the map stays small.
    horizon = time.monotonic() - LAST_SEEN_EVERY
    for device_id in [d for d, stamp in ctx.seen.items() if stamp < horizon]:
        ctx.seen.pop(device_id, None)
    if sessions or invites:
        log.info("purged expired rows", extra={"sessions": sessions, "invites": invites})
    return sessions + invites


async def purge_forever(
    sessionmaker: async_sessionmaker[AsyncSession],
    ctx: ServerContext,
    interval: float,
    stop: asyncio.Event,
) -> None:
    """Purge every ``interval`` seconds until ``stop`` is set.

    Stopping is cooperative, never a cancellation mid-transaction: a cancelled
    DELETE could leave its connection idle in a transaction, holding row locks.
    """
    while not stop.is_set():
        try:
            await purge_expired(sessionmaker, ctx)
        except Exception as exc:  # a DB outage must not end the loop; try again next time
            log.warning("purge failed", extra={"error": type(exc).__name__})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
