"""The one Alembic history: up, down, up again, and it matches the models exactly."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import dialtone.db.models  # noqa: F401  (registers the tables)
from dialtone.config import normalise_db_url
from dialtone.db.base import Base
from dialtone.db.migrate import downgrade, upgrade
from tests.conftest import PG_URL, _pg_admin


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests need DIALTONE_TEST_DATABASE_URL")
    base = normalise_db_url(PG_URL)
    name = f"dialtone_mig_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"', base))
    yield base.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', base))


async def _inspect(url: str, fn: Any) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def test_upgrade_downgrade_upgrade(empty_db: str) -> None:
    model_tables = set(Base.metadata.tables)
    upgrade(empty_db)
    assert asyncio.run(_inspect(empty_db, _tables)) - {"alembic_version"} == model_tables
    downgrade(empty_db, "base")
    assert asyncio.run(_inspect(empty_db, _tables)) - {"alembic_version"} == set()
    upgrade(empty_db)
    assert asyncio.run(_inspect(empty_db, _tables)) - {"alembic_version"} == model_tables
    # Upgrading an up-to-date database is a no-op.
    upgrade(empty_db)


def test_models_match_migrations(empty_db: str) -> None:
    upgrade(empty_db)
    diff = asyncio.run(_inspect(empty_db, _diff))
    assert diff == [], f"models and migrations differ; write a migration: {diff}"
