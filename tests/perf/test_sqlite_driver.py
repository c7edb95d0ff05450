"""SQLite through aiosqlite as published: WAL, reads beside an open write, the busy timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from dialtone.db.engine import create_engine, create_sessionmaker
from dialtone.db.migrate import upgrade
from dialtone.db.models import Channel
from tests.conftest import make_settings


@pytest.fixture
async def engine(tmp_path: Path) -> Any:
    url = f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(make_settings(tmp_path, url, db_timeout=0.25))
    yield engine
    await engine.dispose()


async def count_channels(engine: AsyncEngine) -> int:
    async with create_sessionmaker(engine)() as session:
        return int((await session.execute(select(func.count()).select_from(Channel))).scalar_one())


async def test_reads_do_not_wait_for_an_open_write_transaction(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    async with sessions() as writer:
        writer.add(Channel(name_enc="pending", created_by="u"))
        await writer.flush()  # holds SQLite's write lock until it ends
        # Another pooled connection reads at once (WAL), seeing only what was committed;
        # were reads queued behind the writer this would wait for the busy timeout and fail.
        assert await count_channels(engine) == 0
        await writer.commit()
    assert await count_channels(engine) == 1


async def test_a_second_writer_waits_the_busy_timeout_then_fails(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    async with engine.connect() as conn:
        # sqlite3's timeout, from DIALTONE_DB_TIMEOUT, is the connection's busy timeout.
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() == 250
    async with sessions() as first, sessions() as second:
        first.add(Channel(name_enc="first", created_by="u"))
        await first.flush()
        second.add(Channel(name_enc="second", created_by="u"))
        with pytest.raises(OperationalError, match="database is locked"):
            await second.flush()
        await second.rollback()
        await first.commit()
    assert await count_channels(engine) == 1


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


async def test_a_connection_checked_in_mid_transaction_is_rolled_back(
    engine: AsyncEngine,
) -> None:
    """The pool's reset (db/engine.py) rolls back only when a transaction is open; one
    left open by a statement on the driver itself is rolled back, and its lock freed."""
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        await driver.execute(
            "INSERT INTO channels (id, name_enc, created_by, created_at) "
            "VALUES ('c1', 'n', 'u', '2026-01-01 00:00:00.000000')"
        )
        assert driver.in_transaction  # sqlite3 began one for the insert
    assert await count_channels(engine) == 0
    # The write lock went with the rollback: a writer does not wait the busy timeout.
    async with create_sessionmaker(engine)() as session:
        session.add(Channel(name_enc="next", created_by="u"))
        await session.commit()
    assert await count_channels(engine) == 1
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert not driver.in_transaction
