"""Faults: the database goes away and comes back (PostgreSQL behind a TCP proxy we can
cut; SQLite with its file replaced), and kill -9 in the middle of registrations."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, app_client, make_settings, truncate_all
from tests.e2ee import DeviceKeys
from tests.security.conftest import TcpProxy, free_port, start_serve, wait_healthy

DB_DOWN = "database unavailable, try again shortly"


async def register_admin(http: Any) -> str:
    invite = (await http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})).json()
    response = await http.post(
        "/auth/register",
        json={
            "username": "admin",
            "password": "password1",
            "public_key": DeviceKeys().public_b64,
            "invite_token": invite["token"],
        },
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


@pytest.mark.postgres
async def test_postgres_outage_gives_503_then_recovers(
    tmp_path: Path, pg_database: str, live_factory: Any
) -> None:
    await truncate_all(pg_database)
    proxy, url = await TcpProxy.in_front_of(pg_database)
    settings = make_settings(tmp_path, url, db_timeout=2.0, request_timeout=8.0)
    live = await live_factory(settings)
    async with live.client() as http:
        auth = {"Authorization": f"Bearer {await register_admin(http)}"}
        assert (await http.get("/channels", headers=auth)).status_code == 200

        await proxy.stop()
        for _ in range(3):
            response = await http.get("/channels", headers=auth)
            assert response.status_code == 503, response.text
            # Ended by the database timeout (2 s), not by the request deadline (8 s): the
            # answer says which, so no wall-clock bound is needed on a loaded machine.
            assert response.json()["error"] == DB_DOWN
            assert response.headers["retry-after"]
        # A write during the outage fails cleanly too.
        down = await http.post("/channels", json={"name_enc": "eA=="}, headers=auth)
        assert down.status_code == 503

        await proxy.start()
        deadline = time.monotonic() + 60  # generous: only a server that never recovers fails
        status = 0
        while time.monotonic() < deadline:
            status = (await http.get("/channels", headers=auth)).status_code
            if status == 200:
                break
            await asyncio.sleep(0.2)
        assert status == 200, "did not recover after the database came back"
        created = await http.post("/channels", json={"name_enc": "eA=="}, headers=auth)
        assert created.status_code == 201
    await proxy.stop()


@pytest.mark.postgres
async def test_hanging_database_does_not_hang_requests(
    tmp_path: Path, pg_database: str, live_factory: Any
) -> None:
    """The database host stops answering without closing anything: every request still
    ends, with a 503, within the request deadline; then service resumes by itself."""
    await truncate_all(pg_database)
    proxy, url = await TcpProxy.in_front_of(pg_database)
    settings = make_settings(tmp_path, url, db_timeout=1.0, request_timeout=3.0)
    live = await live_factory(settings)
    async with live.client() as http:
        auth = {"Authorization": f"Bearer {await register_admin(http)}"}
        assert (await http.get("/channels", headers=auth)).status_code == 200
        proxy.blackhole = True
        for _ in range(2):
            response = await http.get("/channels", headers=auth)
            assert response.status_code == 503, response.text
            # Either the database timeout or the request deadline ended it; both are
            # bounded answers (a hang would end the test run instead).
            assert response.json()["error"] in {DB_DOWN, "request timed out"}
        proxy.blackhole = False
        await proxy.stop()  # drop the hung connections
        await proxy.start()
        deadline = time.monotonic() + 60  # generous: only a server that never recovers fails
        status = 0
        while time.monotonic() < deadline:
            status = (await http.get("/channels", headers=auth)).status_code
            if status == 200:
                break
            await asyncio.sleep(0.2)
        assert status == 200
    await proxy.stop()


async def test_sqlite_file_gone_gives_503_then_recovers(
    tmp_path: Path, sqlite_template: Path
) -> None:
    path = tmp_path / "dialtone.db"
    shutil.copyfile(sqlite_template, path)
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{path}")
    async with app_client(settings) as client:
        token = await register_admin(client)
    auth = {"Authorization": f"Bearer {token}"}

    # The file is replaced by something SQLite cannot open.
    aside = tmp_path / "aside.db"
    path.rename(aside)
    path.mkdir()
    async with app_client(settings) as client:
        for _ in range(2):
            response = await client.get("/channels", headers=auth)
            assert response.status_code == 503, response.text
            assert response.json()["error"]
        path.rmdir()
        aside.rename(path)
        response = await client.get("/channels", headers=auth)
        assert response.status_code == 200, response.text


# ---------------------------------------------------------------- kill -9


@pytest.mark.slow
async def test_kill_9_during_registrations_leaves_no_half_user(tmp_path: Path) -> None:
    db_path = tmp_path / "crash.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(tmp_path, f"sqlite:///{db_path}", port)
    accepted: list[str] = []
    try:
        await wait_healthy(url, proc)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            invites = []
            for _ in range(40):
                response = await http.post(
                    "/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN}
                )
                invites.append(response.json()["token"])

            async def register(i: int, invite: str) -> None:
                name = f"u{i}{secrets.token_hex(3)}"
                try:
                    response = await http.post(
                        "/auth/register",
                        json={
                            "username": name,
                            "password": "password1",
                            "public_key": DeviceKeys().public_b64,
                            "invite_token": invite,
                        },
                    )
                except httpx.TransportError:
                    return
                if response.status_code == 201:
                    accepted.append(name)
                    if len(accepted) == 5:
                        enough.set()

            enough = asyncio.Event()
            tasks = [asyncio.create_task(register(i, inv)) for i, inv in enumerate(invites)]
            await asyncio.wait_for(enough.wait(), 30)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            await asyncio.gather(*tasks)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert len(accepted) >= 5
    assert len(accepted) < 40, "the kill came too late to cut anything"

    proc = start_serve(tmp_path, f"sqlite:///{db_path}", port)
    try:
        await wait_healthy(url, proc)
        con = sqlite3.connect(db_path)
        try:
            users = {row[0] for row in con.execute("SELECT id FROM users")}
            with_device = {row[0] for row in con.execute("SELECT DISTINCT user_id FROM devices")}
            consumed = dict(
                con.execute(
                    "SELECT consumed_by, token_hash FROM invites WHERE consumed_at IS NOT NULL"
                ).fetchall()
            )
            spent_by_nobody = con.execute(
                "SELECT count(*) FROM invites WHERE consumed_at IS NOT NULL AND consumed_by IS NULL"
            ).fetchone()[0]
        finally:
            con.close()
        assert users == with_device, "a user without a device"
        assert set(consumed) == users, "a user without a spent invite, or the reverse"
        assert spent_by_nobody == 0
        assert len(users) >= len(accepted)
        # Every acknowledged registration survived the crash and can log in.
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for name in accepted:
                response = await http.post(
                    "/auth/login",
                    json={
                        "username": name,
                        "password": "password1",
                        "public_key": DeviceKeys().public_b64,
                    },
                )
                assert response.status_code == 200, response.text
    finally:
        proc.kill()
        proc.wait(10)


async def test_locked_sqlite_answers_503_after_the_db_timeout(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """Another process holds the write lock: requests wait DIALTONE_DB_TIMEOUT, not longer."""
    path = tmp_path / "dialtone.db"
    shutil.copyfile(sqlite_template, path)
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{path}", db_timeout=0.5)
    async with app_client(settings) as client:
        auth = {"Authorization": f"Bearer {await register_admin(client)}"}
        # Taken in a thread: if the server's background writer holds the lock at that
        # moment, waiting on the event loop would stop it from ever releasing it.
        holder = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
            started = time.monotonic()
            response = await client.post("/channels", json={"name_enc": "eA=="}, headers=auth)
            elapsed = time.monotonic() - started
            assert response.status_code == 503, response.text
            # It waited the busy timeout (a lower bound holds however loaded the machine),
            # and the database timeout, not the request deadline, answered.
            assert elapsed > 0.4, f"gave up after {elapsed:.2f}s"
            assert response.json()["error"] == DB_DOWN
        finally:
            holder.rollback()
            holder.close()
        created = await client.post("/channels", json={"name_enc": "eA=="}, headers=auth)
        assert created.status_code == 201
