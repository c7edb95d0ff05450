"""Security fixtures: apps with limits on, a real uvicorn server on a free port, and a
recorder of the events the app publishes after commit."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar

from dialtone.config import Settings
from dialtone.schemas.events import Event
from dialtone.server import uvicorn_config
from tests.conftest import make_settings


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
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    app = config.loaded_app
    while not isinstance(app, Litestar):  # uvicorn wraps the app in its own adapters
        app = app.app
    return LiveServer(f"http://127.0.0.1:{port}", port, app, server), task


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
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
