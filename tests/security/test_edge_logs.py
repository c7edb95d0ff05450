"""Log hygiene at the edge: paths cannot forge lines, no bearer token at debug level
(uvicorn and the websockets library print handshake headers there), and an exception
that escapes /ws is logged by type and place, without its text."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from dialtone.config import Settings
from dialtone.logs import configure_logging
from tests.conftest import app_client, make_settings, register_member

LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


@pytest.fixture
def text_logs() -> Iterator[io.StringIO]:
    """dialtone's own logging set-up (text lines, debug level), written to a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in ("uvicorn.error", "websockets")}
    configure_logging("text", "debug")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, previous in levels.items():
        logging.getLogger(name).setLevel(previous)


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path, sqlite_url)


def assert_every_line_is_a_record(output: str) -> None:
    lines = [line for line in output.splitlines() if line]
    assert lines
    for line in lines:
        assert LINE_START.match(line), f"a line that is not a log record: {line!r}"


FORGED = "/x%0a2026-01-01 00:00:00,000 WARNING dialtone.http: forged%0d%0a%1b[31m"


async def test_control_characters_in_paths_cannot_forge_log_lines(
    sqlite_settings: Settings, text_logs: io.StringIO
) -> None:
    async with app_client(sqlite_settings) as client:
        assert (await client.get(FORGED)).status_code == 404
    output = text_logs.getvalue()
    assert_every_line_is_a_record(output)
    assert "path=/x\\x0a2026-01-01" in output
    assert "\x1b" not in output


async def test_uvicorn_lines_cannot_be_forged_either(
    sqlite_settings: Settings, live_factory: Any, text_logs: io.StringIO
) -> None:
    live = await live_factory(sqlite_settings)
    # uvicorn itself logs each refused WebSocket handshake with its path (it
    # percent-encodes it again: this holds uvicorn to that).
    with pytest.raises(InvalidStatus):
        await connect(f"ws://127.0.0.1:{live.port}/ws%0aforged", open_timeout=5)
    output = text_logs.getvalue()
    assert "forged" in output
    assert_every_line_is_a_record(output)


async def test_no_bearer_token_reaches_the_log_at_debug_level(
    sqlite_settings: Settings, live_factory: Any, text_logs: io.StringIO
) -> None:
    live = await live_factory(sqlite_settings)
    async with live.client() as http:
        member = await register_member(http)
        assert (await http.get("/channels", headers=member.auth)).status_code == 200
    # Both ways a client can present its token on the handshake, and a refused one.
    async with connect(
        f"ws://127.0.0.1:{live.port}/ws", additional_headers=member.auth, open_timeout=5
    ) as ws:
        await ws.recv()
    async with connect(
        f"ws://127.0.0.1:{live.port}/ws",
        subprotocols=[f"dialtone.bearer.{member.token}"],  # type: ignore[list-item]
        open_timeout=5,
    ) as ws:
        await ws.recv()
    with pytest.raises(InvalidStatus):
        await connect(
            f"ws://127.0.0.1:{live.port}/ws",
            additional_headers={"Authorization": f"Bearer {member.token}x"},
            open_timeout=5,
        )
    output = text_logs.getvalue()
    assert "dialtone.http" in output  # the debug-level set-up was in force
    assert member.token not in output


async def test_an_exception_escaping_the_websocket_endpoint_is_logged_without_its_text(
    sqlite_settings: Settings,
    live_factory: Any,
    text_logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live = await live_factory(sqlite_settings)
    async with live.client() as http:
        member = await register_member(http)

    async def broken_attach(*args: Any) -> None:
        raise RuntimeError("secret-bits-of-state")

    monkeypatch.setattr(live.app.state.hub, "attach", broken_attach)
    async with connect(
        f"ws://127.0.0.1:{live.port}/ws", additional_headers=member.auth, open_timeout=5
    ) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    output = text_logs.getvalue()
    assert "websocket endpoint failed: RuntimeError at " in output
    assert "secret-bits-of-state" not in output
    assert member.token not in output
