"""The one Alembic history: up, down, up again, and it matches the models exactly."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
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


def _seed_0003(conn: Connection) -> None:
    """Rows as a server at revision 0003 holds them: one envelope per recipient."""
    at = datetime(2026, 12, 1, 10)
    conn.execute(
        text(
            "INSERT INTO users (id, username_hash, password_hash, is_admin, is_trusted,"
            " created_at, is_moderator, is_locked) VALUES"
            " ('u-admin', 'h1', NULL, true, true, :at, false, false),"
            " ('u-bob', 'h2', NULL, false, true, :at, false, false)"
        ),
        {"at": at},
    )
    conn.execute(
        text(
            "INSERT INTO devices (id, user_id, public_key, created_at, last_seen_at) VALUES"
            " ('d-admin', 'u-admin', 'pk', :at, :at), ('d-bob', 'u-bob', 'pk', :at, :at)"
        ),
        {"at": at},
    )
    conn.execute(
        text(
            "INSERT INTO channels (id, name_enc, created_by, created_at)"
            " VALUES ('c1', 'bmFtZQ==', 'u-admin', :at)"
        ),
        {"at": at},
    )
    # To bob from the admin's device; to the admin from a device revoked since.
    conn.execute(
        text(
            "INSERT INTO channel_key_envelopes (channel_id, device_id, sender_device_id,"
            " sender_public_key, envelope, created_at) VALUES"
            " ('c1', 'd-bob', 'd-admin', 'pk', 'env1', :at),"
            " ('c1', 'd-admin', 'd-gone', 'pk', 'env2', :at)"
        ),
        {"at": at},
    )
    conn.execute(
        text(
            "INSERT INTO directory_key_envelopes (device_id, sender_device_id,"
            " sender_public_key, envelope, created_at)"
            " VALUES ('d-bob', 'd-admin', 'pk', 'dir', :at)"
        ),
        {"at": at},
    )


def _rows(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    def all_of(sql: str) -> list[tuple[Any, ...]]:
        return sorted(tuple(row) for row in conn.execute(text(sql)))

    return {
        "channels": all_of("SELECT id, key_commitment, key_version FROM channels"),
        "channel_keys": all_of(
            "SELECT device_id, sender_device_id, key_version, sender_user_id, envelope"
            " FROM channel_key_envelopes"
        ),
        "directory_keys": all_of(
            "SELECT device_id, sender_device_id, sender_user_id, envelope"
            " FROM directory_key_envelopes"
        ),
    }


def _add_second_senders(conn: Connection) -> None:
    """Under 0004: bob also hands the admin's device a key, newer than the first; the
    admin also hands bob's device one (preferred over nothing older)."""
    conn.execute(
        text(
            "INSERT INTO channel_key_envelopes (channel_id, device_id, sender_device_id,"
            " key_version, sender_user_id, sender_public_key, envelope, created_at) VALUES"
            " ('c1', 'd-admin', 'd-bob', 1, 'u-bob', 'pk', 'env3', :at),"
            " ('c1', 'd-bob', 'd-bob', 1, 'u-bob', 'pk', 'env4', :at)"
        ),
        {"at": datetime(2026, 12, 2, 10)},
    )
    conn.execute(
        text(
            "INSERT INTO directory_key_envelopes (device_id, sender_device_id, sender_user_id,"
            " sender_public_key, envelope, created_at)"
            " VALUES ('d-bob', 'd-bob', 'u-bob', 'pk', 'dir2', :at)"
        ),
        {"at": datetime(2026, 12, 2, 10)},
    )


async def _run(url: str, fn: Any) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def test_0004_keeps_existing_channels_and_envelopes(empty_db: str) -> None:
    """Existing channels get version 1 and no commitment; existing envelopes become
    version 1 with their sender's user (NULL when the sending device is gone). Going
    back keeps, per recipient, the envelope the default read answered."""
    upgrade(empty_db, "0003_admin")
    asyncio.run(_run(empty_db, _seed_0003))
    upgrade(empty_db)
    assert asyncio.run(_run(empty_db, _rows)) == {
        "channels": [("c1", None, 1)],
        "channel_keys": [
            ("d-admin", "d-gone", 1, None, "env2"),
            ("d-bob", "d-admin", 1, "u-admin", "env1"),
        ],
        "directory_keys": [("d-bob", "d-admin", "u-admin", "dir")],
    }
    asyncio.run(_run(empty_db, _add_second_senders))
    downgrade(empty_db, "0003_admin")

    def old_rows(conn: Connection) -> list[list[tuple[Any, ...]]]:
        return [
            sorted(
                tuple(r)
                for r in conn.execute(
                    text("SELECT device_id, sender_device_id, envelope FROM channel_key_envelopes")
                )
            ),
            sorted(
                tuple(r)
                for r in conn.execute(
                    text(
                        "SELECT device_id, sender_device_id, envelope FROM directory_key_envelopes"
                    )
                )
            ),
        ]

    # The admin's device: bob's (a member, newer) beats the unknown sender's (rank 2,
    # older) — both plain, the newest wins. Bob's device: the admin's (the creator) beats
    # bob's own. The directory: the admin's beats bob's own.
    assert asyncio.run(_run(empty_db, old_rows)) == [
        [("d-admin", "d-bob", "env3"), ("d-bob", "d-admin", "env1")],
        [("d-bob", "d-admin", "dir")],
    ]
    upgrade(empty_db)
