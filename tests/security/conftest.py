"""Security fixtures: apps with limits on, a real uvicorn server on a free port, a
recorder of the events the app publishes after commit, `dialtone serve` as a
subprocess, and a TCP proxy in front of PostgreSQL that a test can cut."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from litestar import Litestar

from dialtone.api.edge import DialtoneApp
from dialtone.config import Settings
from dialtone.logs import configure_logging
from dialtone.schemas.events import Event
from dialtone.server import uvicorn_config
from tests.conftest import ADMIN_TOKEN, PEPPER, make_settings


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """For tests about the edge rather than the database: SQLite only, no PostgreSQL rerun."""
    path = tmp_path / "dialtone.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def limited_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path, sqlite_url, rate_limits=True)


@dataclass
class LiveServer:
    url: str
    port: int
    app: Litestar
    server: uvicorn.Server

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10, **kwargs)


async def start_server(
    settings: Settings, **overrides: Any
) -> tuple[LiveServer, asyncio.Task[None]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(settings, host="127.0.0.1", port=port, **overrides)
    config.load()
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # Wait for the server's own flag; the generous bound only stops a broken run.
    deadline = asyncio.get_running_loop().time() + 60
    # uvicorn offers a flag, not an event, for "started".
    while not (server.started or task.done()) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    assert server.started, "uvicorn did not start"
    app = config.app
    assert isinstance(app, DialtoneApp)
    return LiveServer(f"http://127.0.0.1:{port}", port, app.litestar, server), task


async def stop_server(live: LiveServer, task: asyncio.Task[None]) -> None:
    live.server.should_exit = True
    await asyncio.wait_for(task, 15)


LiveFactory = Callable[..., Any]


@pytest.fixture
async def live_factory() -> AsyncIterator[LiveFactory]:
    running: list[tuple[LiveServer, asyncio.Task[None]]] = []

    async def factory(settings: Settings, **overrides: Any) -> LiveServer:
        live, task = await start_server(settings, **overrides)
        running.append((live, task))
        return live

    yield factory
    for live, task in running:
        await stop_server(live, task)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def record_events(app: Litestar, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Observe what the broker is asked to publish (i.e. only committed events)."""
    recorder = Recorder()
    broker = app.state.broker
    original = broker.publish

    async def publish(events: Any) -> None:
        recorder.events.extend(events)
        await original(events)

    monkeypatch.setattr(broker, "publish", publish)
    return recorder


@contextmanager
def threaded_server(settings: Settings) -> Iterator[str]:
    """A real uvicorn server on its own thread and loop, for synchronous clients
    (schemathesis calls endpoints with a blocking HTTP client)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(settings, host="127.0.0.1", port=port, loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # generous: only a broken start fails
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


# ---------------------------------------------------------------- processes and proxies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_serve(
    tmp_path: Path, db_url: str, port: int, **env_overrides: str
) -> subprocess.Popen[bytes]:
    """`dialtone serve` in its own process (limits off unless overridden)."""
    env = {
        **os.environ,
        "DIALTONE_LISTEN_ADDR": f"127.0.0.1:{port}",
        "DIALTONE_DATA_DIR": str(tmp_path),
        "DIALTONE_DB_URL": db_url,
        "DIALTONE_USERNAME_PEPPER": PEPPER.decode(),
        "DIALTONE_ADMIN_TOKEN": ADMIN_TOKEN,
        "DIALTONE_RATE_LIMITS": "off",
        **env_overrides,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "dialtone", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        deadline = asyncio.get_running_loop().time() + 90  # a cold start on a loaded machine
        while asyncio.get_running_loop().time() < deadline:
            assert proc.poll() is None, "dialtone serve exited"
            try:
                if (await http.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not come up")


class TcpProxy:
    """A forwarder to PostgreSQL that a test can cut (every connection dropped, new ones
    refused) and restore on the same port, without touching the shared server."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        # Blackhole: connections are accepted and bytes swallowed, nothing comes back
        # (a database host that hangs rather than refuses).
        self.blackhole = False

    @classmethod
    async def in_front_of(cls, db_url: str) -> tuple[TcpProxy, str]:
        """Start a proxy to ``db_url``'s server; return it and the URL that goes through it."""
        parts = urlsplit(db_url)
        proxy = cls((parts.hostname or "127.0.0.1", parts.port or 5432))
        await proxy.start()
        credentials = parts.netloc.rpartition("@")[0]
        netloc = (
            f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
        )
        return proxy, parts._replace(netloc=netloc).geturl()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()
        self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blackhole:
            self.writers.add(writer)
            while await reader.read(65536):
                pass
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.blackhole:
                        continue
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()
                self.writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """dialtone's own logging set-up (JSON lines, debug level), written to a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("json", "debug")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)
