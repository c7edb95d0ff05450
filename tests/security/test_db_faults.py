"""A PostgreSQL of the test's own that starts up (refusing connections with SQLSTATE
57P03, asyncpg's CannotConnectNowError) or hangs (every process stopped with SIGSTOP):
both history paths (the fast path and Litestar's) and ordinary requests answer the
documented 503, and a hang is ended by the database timeout, not the request deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dialtone.db.migrate import upgrade
from tests.conftest import make_settings
from tests.security.conftest import free_port
from tests.security.own_postgres import OwnPostgres, own_postgres_cluster
from tests.security.test_faults import DB_DOWN, register_admin
from tests.security.test_readiness import fill


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    with own_postgres_cluster(free_port()) as cluster:
        upgrade(cluster.url)
        yield cluster


async def until_status(http: Any, path: str, auth: dict[str, str], status: int) -> None:
    deadline = time.monotonic() + 90  # generous: only a server that never recovers fails
    code = 0
    while time.monotonic() < deadline:
        code = (await http.get(path, headers=auth)).status_code
        if code == status:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} stayed {code}")


async def history_setup(http: Any) -> tuple[dict[str, str], str]:
    auth = {"Authorization": f"Bearer {await register_admin(http)}"}
    created = await http.post("/channels", json={"name_enc": "eA=="}, headers=auth)
    assert created.status_code == 201, created.text
    channel_id: str = created.json()["channel"]["id"]
    return auth, f"/channels/messages?channel_id={channel_id}&limit=5"


async def test_a_database_starting_up_is_503_on_every_path(
    tmp_path: Path, own_pg: OwnPostgres, live_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, own_pg.url, db_timeout=5.0, request_timeout=30.0)
    live = await live_factory(settings)
    async with live.client() as http:
        auth, history = await history_setup(http)
        # Served by the fast path once the caller is in the session cache.
        assert (await http.get(history, headers=auth)).status_code == 200

        await asyncio.to_thread(own_pg.stop)
        await asyncio.to_thread(own_pg.start_refusing)
        caplog.clear()
        for path, headers in [
            (history, auth),  # the fast path, then Litestar's
            (history, {**auth, "Origin": "http://elsewhere"}),  # Litestar's alone
            ("/channels", auth),
        ]:
            response = await http.get(path, headers=headers)
            assert response.status_code == 503, response.text
            assert response.json() == {"error": DB_DOWN, "code": "unavailable"}
            assert response.headers["retry-after"]
        written = await http.post("/channels", json={"name_enc": "eA=="}, headers=auth)
        assert written.status_code == 503, written.text
        assert not [r for r in caplog.records if r.getMessage().startswith("unhandled error")]

        await asyncio.to_thread(own_pg.stop)
        await asyncio.to_thread(own_pg.start_normally)
        await until_status(http, history, auth, 200)
        await until_status(http, "/channels", auth, 200)


async def test_a_hung_database_is_503_by_the_database_timeout(
    tmp_path: Path, own_pg: OwnPostgres, live_factory: Any
) -> None:
    # The request deadline is far away: the answer must come from the database timeout
    # (its message says so), so no wall-clock bound is needed on a loaded machine.
    settings = make_settings(tmp_path, own_pg.url, db_timeout=1.0, request_timeout=60.0)
    live = await live_factory(settings)
    async with httpx.AsyncClient(base_url=live.url, timeout=120) as http:
        auth, history = await history_setup(http)
        assert (await http.get(history, headers=auth)).status_code == 200

        own_pg.freeze()
        try:
            for path in (history, "/channels", history):
                response = await http.get(path, headers=auth)
                assert response.status_code == 503, response.text
                assert response.json()["error"] == DB_DOWN, response.text
            written = await http.post("/channels", json={"name_enc": "eA=="}, headers=auth)
            assert written.status_code == 503, written.text
            assert written.json()["error"] == DB_DOWN
            ready = await http.get("/health/ready")
            assert ready.status_code == 503
        finally:
            own_pg.resume()
        await until_status(http, history, auth, 200)
        await until_status(http, "/channels", auth, 200)


async def test_postgres_out_of_disk_is_503_and_not_ready(tmp_path: Path, live_factory: Any) -> None:
    """PostgreSQL's disk fills up: writes are 503 (never 500), readiness goes 503, and
    both come back once space is freed."""
    with own_postgres_cluster(free_port(), tmpfs_size="96m") as pg:
        await asyncio.to_thread(upgrade, pg.url)
        settings = make_settings(tmp_path, pg.url, db_timeout=5.0)
        live = await live_factory(settings)
        live.server.config.app.state.readiness.storage.hold = 0.5
        async with live.client() as http:
            auth, _ = await history_setup(http)
            assert (await http.get("/health/ready")).status_code == 200

            filler = fill(pg.folder)
            statuses: list[int] = []
            for _ in range(2000):  # until a write meets the full disk
                response = await http.post(
                    "/channels", json={"name_enc": "eA==" * 50}, headers=auth
                )
                statuses.append(response.status_code)
                if response.status_code != 201:
                    break
            assert statuses[-1] == 503, statuses[-1]
            assert 500 not in statuses
            ready = await http.get("/health/ready")
            assert ready.status_code == 503, ready.text

            filler.unlink()
            await until_status(http, "/health/ready", {}, 200)
            await until_status(http, "/channels", auth, 200)
            created = await http.post("/channels", json={"name_enc": "eA=="}, headers=auth)
            assert created.status_code == 201, created.text
