"""A client that leaves in the middle of its request body is a client disconnect in the
access log (status 499), never a 500: anyone could otherwise fill the log with 5xx and
fire an operator's alerts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from dialtone.config import Settings
from tests.conftest import register_member


async def request_lines(caplog: pytest.LogCaptureFixture, path: str) -> list[logging.LogRecord]:
    """The access-log lines for ``path`` once there is one (no event tells when)."""
    async with asyncio.timeout(30):
        while True:
            lines = [
                r
                for r in caplog.records
                if r.name == "dialtone.http"
                and r.getMessage() == "request"
                and getattr(r, "path", None) == path
            ]
            if lines:
                return lines
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("path", ["/auth/login", "/channels"])
async def test_a_client_gone_mid_body_is_logged_as_a_disconnect(
    limited_settings: Settings,
    live_factory: Any,
    caplog: pytest.LogCaptureFixture,
    path: str,
) -> None:
    live = await live_factory(limited_settings)
    # A signed-in route reads its body only after the credentials pass (a bad token is
    # a 401 before any body): sign in for real so the body is what the client leaves.
    token = "nothing"
    if path == "/channels":
        async with live.client() as http:
            token = (await register_member(http)).token
    with caplog.at_level(logging.INFO):
        _, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(
            b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer %s\r\ncontent-length: 1000\r\n\r\n"
            b'{"username": "' % (path.encode(), token.encode())
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        lines = await request_lines(caplog, path)
    assert [getattr(r, "status", None) for r in lines] == [499]
    assert getattr(lines[0], "client_disconnect", False) is True
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The server is none the worse for it.
    async with live.client() as http:
        assert (await http.get("/health")).status_code == 200
