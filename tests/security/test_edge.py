"""Security headers and CORS on every response, and the bounds of a real uvicorn server:
oversized and slow request heads, slow bodies, and a per-address concurrency cap."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from dialtone import server as server_module
from dialtone.config import Settings
from tests.conftest import Member, app_client, make_settings

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_secured(response: Any) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)


async def test_security_headers_everywhere(client: AsyncTestClient[Any], member: Member) -> None:
    responses = [
        await client.get("/health"),
        await client.get("/channels", headers=member.auth),
        await client.get("/channels"),  # 401
        await client.get("/no/such/route"),  # 404 from the router
        await client.put("/channels", json={}),  # 405
        await client.post("/auth/login", content=b"{not json"),  # 400
    ]
    for response in responses:
        assert_secured(response)
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert "strict-transport-security" not in response.headers
    assert responses[1].headers["cache-control"] == "no-store"
    assert responses[3].status_code == 404
    assert responses[3].json()["error"]
    assert responses[4].status_code == 405
    assert responses[4].json()["error"]


async def test_hsts_when_tls_is_on(tmp_path: Path, sqlite_url: str) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    settings = make_settings(tmp_path, sqlite_url, tls_cert=str(cert), tls_key=str(cert))
    async with app_client(settings) as client:
        response = await client.get("/health")
        assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_cors_off_by_default(client: AsyncTestClient[Any]) -> None:
    response = await client.options(
        "/channels",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers
    response = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_allows_only_configured_origins(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url, cors_origins=("https://chat.example",))
    async with app_client(settings) as client:
        preflight = await client.options(
            "/channels",
            headers={
                "Origin": "https://chat.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "https://chat.example"
        assert_secured(preflight)
        other = await client.get("/health", headers={"Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


# ---------------------------------------------------------------- a real server


async def raw_request(port: int, payload: bytes, *, read_timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), read_timeout)
    finally:
        writer.close()


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path, sqlite_url)


async def test_oversized_headers_are_refused(sqlite_settings: Settings, live_factory: Any) -> None:
    live = await live_factory(sqlite_settings)
    big = b"x-filler: " + b"a" * (server_module.MAX_HEADER_BYTES + 10) + b"\r\n"
    answer = await raw_request(live.port, b"GET /health HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    assert b'"error"' in answer
    # The server is still fine.
    async with live.client() as http:
        assert (await http.get("/health")).status_code == 200


async def test_slow_request_head_is_cut(
    sqlite_settings: Settings, live_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "HEADER_TIMEOUT", 0.3)
    live = await live_factory(sqlite_settings)
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n")  # ...and never finish the head
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 5)
    assert answer.startswith(b"HTTP/1.1 408")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()


async def test_slow_body_times_out(
    tmp_path: Path, sqlite_settings: Settings, live_factory: Any
) -> None:
    import msgspec

    settings = msgspec.structs.replace(sqlite_settings, request_timeout=0.5)
    live = await live_factory(settings)
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(
        b"POST /auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b'content-length: 100\r\n\r\n{"user'
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 5)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"error"' in answer
    writer.close()


async def test_concurrency_cap_per_address(sqlite_settings: Settings, live_factory: Any) -> None:
    import msgspec

    # A request deadline far beyond the test: only closing them ends the held requests.
    settings = msgspec.structs.replace(
        sqlite_settings, max_connections_per_address=3, request_timeout=120.0, rate_limits=True
    )
    live = await live_factory(settings)
    held = await hold_requests(live.port, 3)  # three requests stuck sending their body
    async with live.client() as http:
        # Probes are answered until the server has taken in all three, then refused.
        refused = await status_becomes(http, 429)
        assert refused.json()["code"] == "rate_limited"
        assert refused.headers["retry-after"]
        for writer in held:
            writer.close()
        # The server sees the closes and frees the slots: no fixed wait for it.
        await status_becomes(http, 200)


async def status_becomes(http: Any, status: int, within: float = 60.0) -> Any:
    """Probe /health until it answers ``status`` (the bound only stops a broken run)."""
    async with asyncio.timeout(within):
        while True:
            response = await http.get("/health")
            if response.status_code == status:
                return response
            await asyncio.sleep(0.02)


async def hold_requests(port: int, count: int) -> list[asyncio.StreamWriter]:
    """Open ``count`` requests that stay in flight (their body never finishes)."""
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100\r\n\r\n{"
        )
        await writer.drain()
        writers.append(writer)
    return writers


async def test_no_concurrency_cap_with_rate_limits_off(
    sqlite_settings: Settings, live_factory: Any
) -> None:
    import msgspec

    assert sqlite_settings.rate_limits is False
    settings = msgspec.structs.replace(
        sqlite_settings, max_connections_per_address=2, request_timeout=120.0
    )
    live = await live_factory(settings)
    writers = await hold_requests(live.port, 3)
    edge = live.server.config.app
    async with asyncio.timeout(60):  # until all three are in flight, past the cap of 2
        while edge.active.get("127.0.0.1", 0) < 3:  # noqa: ASYNC110  (no event for it)
            await asyncio.sleep(0.005)
    async with live.client() as http:
        assert (await http.get("/health")).status_code == 200
    for writer in writers:
        writer.close()


async def test_connection_flood_is_survived_and_reaped(
    sqlite_settings: Settings, live_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of connections that never send a byte: the server keeps answering,
    and closes them all once the head timeout passes."""
    monkeypatch.setattr(server_module, "HEADER_TIMEOUT", 0.5)
    live = await live_factory(sqlite_settings)
    conns = [await asyncio.open_connection("127.0.0.1", live.port) for _ in range(300)]
    async with live.client() as http:
        assert (await http.get("/health")).status_code == 200
    answers = await asyncio.gather(*[asyncio.wait_for(r.read(), 5) for r, _ in conns])
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers)
    for _, writer in conns:
        writer.close()


async def test_oversized_body_is_413(client: AsyncTestClient[Any]) -> None:
    response = await client.post(
        "/auth/login",
        content=b'{"username": "' + b"a" * (1024 * 1024 + 10) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]
    assert_secured(response)


async def test_refused_websocket_handshake_carries_the_headers_and_a_code(
    sqlite_settings: Settings, live_factory: Any
) -> None:
    """The 401 comes from the gateway through Litestar's send (the before_send hook)."""
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    live = await live_factory(sqlite_settings)
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{live.port}/ws", open_timeout=5)
    response = refused.value.response
    assert response.status_code == 401
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert response.headers["cache-control"] == "no-store"
    assert json.loads(response.body)["code"] == "unauthorized"
