"""DIALTONE_WORKERS=2: two worker processes on one port, fanning out through Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import (
    ADMIN_TOKEN,
    CLUSTER_SECRET,
    PEPPER,
    REDIS_URL,
    register_member,
    truncate_all,
)
from tests.realtime.conftest import chat_frame, next_of

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DIALTONE_REDIS_URL", None)
    env.update(
        {
            "DIALTONE_LISTEN_ADDR": f"127.0.0.1:{port}",
            "DIALTONE_DATA_DIR": str(data_dir),
            "DIALTONE_USERNAME_PEPPER": PEPPER.decode(),
            "DIALTONE_ADMIN_TOKEN": ADMIN_TOKEN,
            "DIALTONE_RATE_LIMITS": "off",
            "DIALTONE_LOG_LEVEL": "info",
            "DIALTONE_NODE_HEARTBEAT": "0.5",
            **extra,
        }
    )
    return env


def worker_pids(parent: int) -> list[int]:
    """The parent's children that are spawned workers (not multiprocessing's helpers)."""
    found = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            with suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spawn_main" in cmdline:
                    found.append(int(pid))
    return sorted(found)


def established_on(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` process ``pid`` holds (its socket
    inodes matched against /proc/net/tcp): which worker accepted which socket."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


class Workers:
    def __init__(self, db_url: str, data_dir: Path) -> None:
        self.port = free_port()
        self.db_url = db_url
        env = server_env(
            data_dir,
            self.port,
            DIALTONE_DB_URL=db_url,
            DIALTONE_REDIS_URL=REDIS_URL or "",
            DIALTONE_REDIS_PREFIX=f"dialtone-test-{secrets.token_hex(6)}:",
            DIALTONE_CLUSTER_SECRET=CLUSTER_SECRET,
            DIALTONE_WORKERS="2",
        )
        self.log = data_dir / "server.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dialtone", "serve"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=20)
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    async def ready(self) -> None:
        # Both workers answer once two of them listen: poll /health until each worker
        # holds a listening socket, i.e. until two spawned children exist and answer.
        for _ in range(600):
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            with suppress(httpx.HTTPError):
                if (await self.http.get("/health")).status_code == 200 and len(
                    worker_pids(self.proc.pid)
                ) == 2:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError("workers did not start")

    async def stop(self) -> int:
        await self.http.aclose()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = await asyncio.to_thread(self.proc.wait)
        return code


async def advisory_locks_held(db_url: str) -> int:
    """Advisory locks granted in this database right now (other test runs use others)."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                    "database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )
    finally:
        await engine.dispose()
    return int(count or 0)


@pytest.fixture
async def workers(pg_database: str, tmp_path: Path) -> AsyncIterator[Workers]:
    if not REDIS_URL:
        pytest.skip("needs DIALTONE_TEST_REDIS_URL")
    await truncate_all(pg_database)
    server = Workers(pg_database, tmp_path)
    try:
        await server.ready()
        yield server
    finally:
        await server.stop()


async def open_socket(url: str, token: str) -> ClientConnection:
    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
    assert json.loads(await ws.recv())["type"] == "voice.presence.snapshot"
    return ws


async def test_every_socket_on_either_worker_gets_every_message(workers: Workers) -> None:
    pids = worker_pids(workers.proc.pid)
    assert len(pids) == 2
    alice = await register_member(workers.http, "alice")
    bob = await register_member(workers.http, "bob")
    created = await workers.http.post(
        "/channels", json={"name_enc": "bmFtZQ=="}, headers=alice.auth
    )
    assert created.status_code == 201
    channel = created.json()["channel"]["id"]

    # The kernel picks the worker for each connection (SO_REUSEPORT); open sockets until
    # both workers hold some, so that delivery between them is what is tested.
    sockets: list[ClientConnection] = []
    try:
        while len(sockets) < 8 or min(established_on(p, workers.port) for p in pids) == 0:
            assert len(sockets) < 200, "the kernel never spread the sockets"
            member = (alice, bob)[len(sockets) % 2]
            sockets.append(await open_socket(workers.ws_url, member.token))
        # (the HTTP client's keep-alive connection is counted too)
        assert sum(established_on(p, workers.port) for p in pids) >= len(sockets)

        # Each socket sends one message in turn; every socket receives each of them.
        senders = sockets[:4] + sockets[-2:]
        for index, sender in enumerate(senders):
            body = base64.b64encode(f"message {index}".encode()).decode()
            await sender.send(chat_frame(channel, body))
            for number, ws in enumerate(sockets):
                try:
                    event = await next_of(ws, "channel.message.new", within=20)
                except TimeoutError:
                    raise AssertionError(
                        f"socket {number} missed message {index} (close code {ws.close_code}); "
                        f"server log: {workers.log.read_text()[-3000:]}"
                    ) from None
                assert event["body"] == body
        # Each channel lock was released once its message was published: none stays
        # held by a pooled connection, where it would block the other worker.
        assert await advisory_locks_held(workers.db_url) == 0
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))

    # SIGTERM to the parent stops both workers gracefully; the parent exits 0.
    assert await workers.stop() == 0
    assert all(gone(pid) for pid in pids)


def gone(pid: int) -> bool:
    """The process has exited (no longer exists, or is a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat.split(b") ", 1)[1][:1] == b"Z"


async def test_a_worker_that_dies_stops_the_server_with_an_error(workers: Workers) -> None:
    first, second = worker_pids(workers.proc.pid)
    os.kill(first, signal.SIGKILL)
    code = await asyncio.to_thread(workers.proc.wait, 60)
    assert code != 0
    assert gone(second)


def test_more_than_one_worker_needs_redis(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dialtone", "serve"],
        env=server_env(tmp_path, free_port(), DIALTONE_WORKERS="2"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "dialtone: configuration error: DIALTONE_WORKERS=2 needs DIALTONE_REDIS_URL: "
        "the worker processes deliver each other's events through Redis"
    ]
    assert not any(tmp_path.iterdir())  # refused before creating first-run secrets
