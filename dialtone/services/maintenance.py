"""Housekeeping that runs in the background of every node: purge what has expired."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.repositories.admin import BanRepository, ServerLogRepository, SettingRepository
from dialtone.db.repositories.invites import InviteRepository
from dialtone.db.repositories.messages import MessageModeration
from dialtone.db.repositories.sessions import SessionRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.services.context import DIRECTORY_COMMITMENT, LAST_SEEN_EVERY, ServerContext
from dialtone.services.files import PARTIAL_UPLOAD_AGE, FileService

log = logging.getLogger("dialtone.maintenance")

# How often every node re-reads bans and live settings from the database: the broker
# carries each change at once; this heals a missed event or a change made by the CLI.
ADMIN_REFRESH_SECONDS = 10.0


async def _no_events(_: list[Any]) -> None:
    return None


async def purge_expired(sessionmaker: async_sessionmaker[AsyncSession], ctx: ServerContext) -> int:
    """Delete expired sessions and expired, unredeemed invites. Returns rows removed."""
    now = ctx.clock()
    live = ctx.live_settings
    async with UnitOfWork(sessionmaker, _no_events) as uow:
        sessions = await SessionRepository(uow.session).purge_expired(now)
        invites = await InviteRepository(uow.session).purge_expired(now)
        log_entries = await ServerLogRepository(uow.session).purge_older_than(
            now - timedelta(days=live.log_retention_days)
        )
        # Files first: retention finds them through their messages.
        files = await FileService(uow, ctx).prune()
        messages = 0
        if live.message_retention_days > 0:
            messages = await MessageModeration(uow.session).purge_older_than(
                now - timedelta(days=live.message_retention_days)
            )
    await ctx.files.sweep_partial(PARTIAL_UPLOAD_AGE)
    # Forget throttle entries old enough to be useless, so the map stays small.
    horizon = time.monotonic() - LAST_SEEN_EVERY
    for device_id in [d for d, stamp in ctx.seen.items() if stamp < horizon]:
        ctx.seen.pop(device_id, None)
    if sessions or invites or log_entries or messages or files:
        log.info(
            "purged expired rows",
            extra={
                "sessions": sessions,
                "invites": invites,
                "log_entries": log_entries,
                "messages": messages,
                "files": files,
            },
        )
    return sessions + invites + log_entries + messages + files


async def refresh_admin_state(
    sessionmaker: async_sessionmaker[AsyncSession], ctx: ServerContext
) -> None:
    """Load every ban and the stored live settings into this node's memory."""
    from dialtone.services.admin import ban_rule

    async with UnitOfWork(sessionmaker, _no_events) as uow:
        bans = await BanRepository(uow.session).all()
        stored = await SettingRepository(uow.session).all()
    ctx.bans.replace(ban_rule(ban) for ban in bans)
    ctx.apply_settings(stored)
    ctx.note_directory_commitment(stored.get(DIRECTORY_COMMITMENT))


async def refresh_forever(
    sessionmaker: async_sessionmaker[AsyncSession],
    ctx: ServerContext,
    interval: float,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            await refresh_admin_state(sessionmaker, ctx)
        except Exception as exc:
            log.warning("admin state refresh failed", extra={"error": type(exc).__name__})


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


async def checkpoint_sqlite(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """After erasing ciphertext on SQLite: copy the WAL into the database file and empty
    it, so the old pages (which still hold the erased text) leave the disk too.
    Best effort: a busy database is checkpointed later by SQLite itself."""
    async with sessionmaker() as session:
        if session.get_bind().dialect.name != "sqlite":
            return
        try:
            await session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            await session.commit()
        except Exception as exc:
            log.warning("checkpoint after erasure failed", extra={"error": type(exc).__name__})
