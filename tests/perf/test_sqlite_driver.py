"""The lean SQLite connection: aiosqlite's results, reads on the loop, writes in its thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from dialtone.db.engine import create_engine, create_sessionmaker
from dialtone.db.migrate import upgrade
from dialtone.db.models import Channel
from tests.conftest import make_settings


@pytest.fixture
async def engine(tmp_path: Path) -> Any:
    url = f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(make_settings(tmp_path, url))

    @event.listens_for(engine.sync_engine, "connect")
    def add_thread_id(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("thread_id", 0, threading.get_ident)

    yield engine
    await engine.dispose()


async def count_channels(engine: AsyncEngine) -> int:
    async with create_sessionmaker(engine)() as session:
        return int((await session.execute(select(func.count()).select_from(Channel))).scalar_one())


async def test_reads_run_on_the_event_loop_and_writes_in_the_connection_thread(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        reader = (await conn.execute(text("SELECT thread_id()"))).scalar_one()
        await conn.execute(text("CREATE TEMP TABLE seen (thread INTEGER)"))
        await conn.execute(text("INSERT INTO seen VALUES (thread_id())"))
        writer = (await conn.execute(text("SELECT thread FROM seen"))).scalar_one()
    assert reader == threading.get_ident()
    assert writer != threading.get_ident()


async def test_commit_persists_and_rollback_discards(engine: AsyncEngine, tmp_path: Path) -> None:
    sessions = create_sessionmaker(engine)
    async with sessions() as session:
        session.add(Channel(name_enc="kept", created_by="u"))
        await session.commit()
    async with sessions() as session:
        session.add(Channel(name_enc="dropped", created_by="u"))
        await session.flush()
        # The uncommitted row is visible on its own connection only.
        assert len((await session.execute(select(Channel))).scalars().all()) == 2
        await session.rollback()
    # A new engine (new connections) sees exactly what was committed.
    url = str(engine.url)
    other = create_engine(make_settings(tmp_path, url))
    try:
        assert await count_channels(other) == 1
    finally:
        await other.dispose()


async def test_constraint_errors_surface_and_the_connection_recovers(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    async with sessions() as session:
        session.add(Channel(id="same", name_enc="a", created_by="u"))
        await session.commit()
    async with sessions() as session:
        session.add(Channel(id="same", name_enc="b", created_by="u"))
        with pytest.raises(IntegrityError):
            await session.flush()
        await session.rollback()
        session.add(Channel(id="other", name_enc="c", created_by="u"))
        await session.commit()
    assert await count_channels(engine) == 2


async def test_many_rows_and_rowcounts(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            Channel.__table__.insert(),
            [{"id": f"c{i}", "name_enc": "n", "created_by": "u"} for i in range(25)],
        )
        result = await conn.execute(text("UPDATE channels SET name_enc = 'm' WHERE id < 'c2'"))
        assert result.rowcount == 12  # c0, c1, c10..c19
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT id FROM channels ORDER BY id"))).all()
    assert len(rows) == 25


async def test_concurrent_writers_all_commit(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)

    async def write(index: int) -> None:
        async with sessions() as session:
            session.add(Channel(name_enc=f"n{index}", created_by="u"))
            await session.flush()
            await asyncio.sleep(0)  # let the others interleave inside their transactions
            await session.commit()

    await asyncio.gather(*(write(i) for i in range(30)))
    assert await count_channels(engine) == 30


async def test_pragmas_are_applied(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
