"""Run Alembic programmatically (``dialtone migrate``, start-up, tests).

The scripts live in ``migrations/`` at the top of the repository and ship inside the
package as ``dialtone.migrations`` (pyproject.toml maps the one onto the other), so an
installed wheel migrates without the source tree; ``alembic.ini`` at the repository root
points to the same folder for developers who run ``alembic`` by hand.
"""

from __future__ import annotations

import asyncio
import os
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

# Found through the import system: the checkout's migrations/ in an editable install,
# site-packages/dialtone/migrations in a wheel.
MIGRATIONS = Path(str(resources.files("dialtone.migrations")))


def alembic_config(db_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["db_url"] = db_url
    return config


def upgrade(db_url: str, revision: str = "head") -> None:
    """Blocking: runs its own event loop, so call it from a thread inside async code."""
    command.upgrade(alembic_config(db_url), revision)


def downgrade(db_url: str, revision: str) -> None:
    command.downgrade(alembic_config(db_url), revision)


def newest_revision() -> str | None:
    """The head revision the package ships."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current_revision(db_url: str) -> str | None:
    """The revision the database is at; None for a database never migrated.

    Blocking: runs its own event loop, like ``upgrade``."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async def run() -> str | None:
        engine = create_async_engine(db_url, poolclass=NullPool, hide_parameters=True)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def sqlite_path(db_url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def restrict_sqlite_files(db_url: str) -> None:
    """Owner-only database, WAL and shared-memory files (they hold every stored envelope).

    SQLite gives the -wal and -shm files it creates the mode of the database file, so
    tightening the files that exist is enough; the process umask covers new ones.
    """
    path = sqlite_path(db_url)
    if path is None:
        return
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists():
            os.chmod(candidate, 0o600)


def known_revision(revision: str) -> bool:
    """Whether this package ships the revision (a database migrated by a newer version
    of Dialtone is at one it does not)."""
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config("")).get_revision(revision) is not None
    except CommandError:
        return False


def refuse_newer_schema(db_url: str, current: str | None) -> None:
    """One clear line instead of Alembic's traceback when the database is ahead of the code."""
    if current is not None and not known_revision(current):
        from dialtone.errors import ConfigError

        raise ConfigError(
            f"the database is at schema revision {current}, which this version of Dialtone "
            f"does not know (its newest is {newest_revision()}): it was migrated by a newer "
            "version; run that version, or restore a backup made before the upgrade"
        )
