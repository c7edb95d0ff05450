"""Shared fixtures: settings on a real, migrated database; the app; clients named by role.

Every HTTP test runs on SQLite and, when DIALTONE_TEST_DATABASE_URL is set, again on
PostgreSQL (a database of its own for this test run, emptied between tests).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from dialtone.app import create_app
from dialtone.config import Settings, normalise_db_url
from dialtone.db.base import Base
from dialtone.db.migrate import upgrade
from tests.e2ee import DeviceKeys

PG_URL = os.environ.get("DIALTONE_TEST_DATABASE_URL", "").strip()
REDIS_URL = os.environ.get("DIALTONE_TEST_REDIS_URL", "").strip()
PEPPER = b"test-pepper-0123456789abcdef"
ADMIN_TOKEN = "test-admin-token-0123456789"
CLUSTER_SECRET = "test-cluster-secret-0123456789abcdef"


def pytest_report_header(config: pytest.Config) -> list[str]:
    pg = f"on {PG_URL}" if PG_URL else "skipped (DIALTONE_TEST_DATABASE_URL unset)"
    redis = f"on {REDIS_URL}" if REDIS_URL else "skipped (DIALTONE_TEST_REDIS_URL unset)"
    return [f"PostgreSQL tests: {pg}", f"Redis tests: {redis}"]


# ---------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test gets a copy (migrating per test is slow)."""
    path = tmp_path_factory.mktemp("template") / "dialtone.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def _pg_admin(sql: str, url: str) -> None:
    admin = create_async_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test run's own, migrated once."""
    if not PG_URL:
        pytest.skip("PostgreSQL tests need DIALTONE_TEST_DATABASE_URL")
    base = normalise_db_url(PG_URL)
    name = f"dialtone_test_{os.getpid()}_{secrets.token_hex(3)}"
    url = base.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}"', base))
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"', base))
    upgrade(url)
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', base))


async def truncate_all(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "dialtone.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(truncate_all(url))
    return url


TEST_ARGON2_MEMORY_KIB = 1024


def make_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "db_url": db_url,
        "username_pepper": PEPPER,
        "admin_token": ADMIN_TOKEN,
        "cluster_secret": CLUSTER_SECRET.encode(),
        "rate_limits": False,
        "ws_ping_interval": 25.0,
        # A cheap argon2id cost: the suite registers and signs in thousands of times, and
        # every app hashes a timing dummy at start. The hashing code is the same; the
        # production cost has its own tests (tests/http/test_auth.py, config tests).
        "argon2_memory_kib": TEST_ARGON2_MEMORY_KIB,
        "argon2_time_cost": 1,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


# ---------------------------------------------------------------- app and clients


def app_client(settings: Settings) -> AsyncTestClient[Any]:
    """A test client on the whole ASGI app uvicorn serves (the edge around Litestar).

    ``client.app`` is that app, so ``client.app.state`` reaches the Litestar state: the
    test client wraps an app that is not a Litestar instance only to add
    ``scope["state"]``, which the Litestar app inside adds itself.
    """
    app = create_app(settings)
    test_client: AsyncTestClient[Any] = AsyncTestClient(app=app)
    test_client.app = app
    return test_client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with app_client(settings) as test_client:
        yield test_client


@dataclass
class Member:
    """A registered user with one device, as a real client would hold it."""

    username: str
    password: str
    token: str
    user_id: str
    device_id: str
    is_admin: bool
    keys: DeviceKeys = field(default_factory=DeviceKeys)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def new_invite(client: AsyncTestClient[Any]) -> str:
    response = await client.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


Register = Callable[..., Awaitable[Member]]


async def register_member(
    http: Any, username: str | None = None, password: str = "password1"
) -> Member:
    """Invite (with the operator's admin token) and register a new account through any
    HTTP client: the in-process test client or an httpx client of a live server."""
    invite = await http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})
    assert invite.status_code == 201, invite.text
    name = username or f"user{secrets.token_hex(4)}"
    keys = DeviceKeys()
    response = await http.post(
        "/auth/register",
        json={
            "username": name,
            "password": password,
            "public_key": keys.public_b64,
            "invite_token": invite.json()["token"],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Member(
        username=name.strip().lower(),
        password=password,
        token=body["token"],
        user_id=body["user_id"],
        device_id=body["device_id"],
        is_admin=body["is_admin"],
        keys=keys,
    )


@pytest.fixture
def register(client: AsyncTestClient[Any]) -> Register:
    async def _register(username: str | None = None, password: str = "password1") -> Member:
        return await register_member(client, username, password)

    return _register


@pytest.fixture
async def admin(register: Register) -> Member:
    """The first account registered: the server's admin."""
    member = await register("admin")
    assert member.is_admin
    return member


@pytest.fixture
async def member(admin: Member, register: Register) -> Member:
    return await register("bob")


def decode(response: Any, type_: type[Any]) -> Any:
    return msgspec.json.decode(response.content, type=type_)
