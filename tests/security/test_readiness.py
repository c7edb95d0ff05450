"""``GET /health/ready`` follows storage, not Redis: 503 when the node cannot store
(database away, writes failing on a full disk), 200 with ``degraded`` when only
cross-node delivery (Redis) is down. Real faults: a Redis of the test's own that is
killed, PostgreSQL behind a proxy that is cut, SQLite on a 2 MB tmpfs that fills up.
The server log written during the full disk reaches the database once space returns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from litestar.testing import AsyncTestClient

from tests.conftest import Member, app_client, make_settings, register_member, truncate_all
from tests.security.conftest import TcpProxy, free_port


async def ready(client: Any) -> tuple[int, dict[str, Any]]:
    response = await client.get("/health/ready")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def until_ready_status(client: Any, status: int, within: float = 60.0) -> dict[str, Any]:
    """Poll readiness as a balancer would, until it answers ``status``."""
    async with asyncio.timeout(within):
        while True:
            code, body = await ready(client)
            if code == status:
                return body
            await asyncio.sleep(0.1)


async def test_ready_names_nothing_degraded_when_all_works(client: AsyncTestClient[Any]) -> None:
    code, body = await ready(client)
    assert (code, body) == (200, {"status": "ready"})


# ---------------------------------------------------------------- Redis down: degraded


class OwnRedis:
    """A redis-server of this test's own on a free port (never the shared one)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self.spawn()
        client: Any = redis.from_url(self.url)
        try:
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(redis.ConnectionError):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(free_port())
    await server.start()
    yield server
    server.kill()


async def test_redis_down_is_ready_but_degraded(
    tmp_path: Path, db_url: str, own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, db_url, redis_url=own_redis.url)
    async with app_client(settings) as client:
        assert await ready(client) == (200, {"status": "ready"})
        member = await register_member(client)

        own_redis.kill()
        with caplog.at_level(logging.WARNING, logger="dialtone.health"):
            code, body = await ready(client)
        assert code == 200, body
        assert body == {"status": "ready", "degraded": ["redis"]}
        assert any("degraded" in r.getMessage() for r in caplog.records)
        readiness = client.app.state.readiness
        assert readiness.degraded_total == 1
        # What readiness claims holds: this node still logs in and stores.
        login = await client.post(
            "/auth/login",
            json={
                "username": member.username,
                "password": member.password,
                "public_key": member.keys.public_b64,
            },
        )
        assert login.status_code == 200, login.text
        created = await client.post("/channels", json={"name_enc": "eA=="}, headers=member.auth)
        assert created.status_code == 201, created.text

        await own_redis.start()
        assert await until_degraded_cleared(client) == {"status": "ready"}


async def until_degraded_cleared(client: AsyncTestClient[Any]) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            code, body = await ready(client)
            if code == 200 and "degraded" not in body:
                return body
            await asyncio.sleep(0.1)


# ---------------------------------------------------------------- database away: not ready


@pytest.mark.postgres
async def test_postgres_away_is_not_ready(
    tmp_path: Path, pg_database: str, live_factory: Any
) -> None:
    await truncate_all(pg_database)
    proxy, url = await TcpProxy.in_front_of(pg_database)
    settings = make_settings(tmp_path, url, db_timeout=2.0)
    live = await live_factory(settings)
    try:
        async with live.client() as http:
            assert await ready(http) == (200, {"status": "ready"})
            await proxy.stop()
            code, body = await ready(http)
            assert code == 503
            assert body == {
                "status": "database unavailable",
                "error": "database unavailable",
                "code": "not_ready",
            }
            await proxy.start()
            assert await until_ready_status(http, 200) == {"status": "ready"}
    finally:
        if proxy.server is not None:
            await proxy.stop()


async def test_sqlite_file_gone_is_not_ready(tmp_path: Path, sqlite_template: Path) -> None:
    path = tmp_path / "dialtone.db"
    shutil.copyfile(sqlite_template, path)
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{path}")
    path.rename(tmp_path / "aside.db")
    path.mkdir()  # something SQLite cannot open
    async with app_client(settings) as client:
        code, body = await ready(client)
        assert code == 503
        assert body["code"] == "not_ready"
        assert body["status"] == "database unavailable"


# ---------------------------------------------------------------- disk full: not ready


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "2m") -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Write until the filesystem is full; the file that filled it."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 4096)
    return filler


async def test_disk_full_is_not_ready_and_the_server_log_survives(
    tmp_path: Path, sqlite_template: Path
) -> None:
    with small_filesystem(tmp_path / "small") as small:
        path = small / "dialtone.db"
        shutil.copyfile(sqlite_template, path)
        settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{path}")
        async with app_client(settings) as client:
            state = client.app.state
            state.readiness.storage.hold = 0.5  # the test need not wait out the default
            member: Member = await register_member(client)
            assert await ready(client) == (200, {"status": "ready"})

            filler = fill(small)
            # Writes fail: each one a 503 (never a 500), and readiness follows them.
            refused = 0
            for _ in range(20):
                created = await client.post(
                    "/channels", json={"name_enc": "eA=="}, headers=member.auth
                )
                assert created.status_code in (201, 503), created.text
                if created.status_code == 503:
                    refused += 1
                    break
            assert refused, "the full disk never refused a write"
            code, body = await ready(client)
            assert code == 503, body
            assert body["status"] == "storage failing"
            assert state.readiness.storage.failures >= 1

            # The server log taken during the fault is kept, not dropped.
            server_log = state.ctx.server_log
            server_log.record("drain", message="written during disk full")
            async with asyncio.timeout(60):  # the writer tries, and fails, at least once
                while not (server_log.failed_writes or logged(path, "written during disk full")):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

            filler.unlink()
            assert await until_ready_status(client, 200) == {"status": "ready"}
            async with asyncio.timeout(60):
                while not logged(path, "written during disk full"):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            created = await client.post("/channels", json={"name_enc": "eA=="}, headers=member.auth)
            assert created.status_code == 201, created.text


def logged(path: Path, message: str) -> bool:
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as con:
        rows = con.execute("SELECT count(*) FROM server_log WHERE message = ?", (message,))
        return bool(rows.fetchone()[0])
