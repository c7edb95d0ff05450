"""The same request from several clients at one instant, many rounds.

Every test runs on a real SQLite file and on PostgreSQL (the ``db_url`` parametrisation),
each against two servers: uvicorn in this process (real sockets, the test's event loop)
and ``dialtone serve`` in a process of its own (the server's loop runs in parallel with
the clients). A round fires its requests with ``asyncio.gather`` from separate, already
connected HTTP clients, so they reach the server together. What must hold: only 2xx or
the right 4xx, exactly the rows that should survive, and a server that still answers.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dialtone.config import Settings
from tests.conftest import ADMIN_TOKEN, Member, register_member
from tests.realtime.conftest import running_server
from tests.security.conftest import free_port, start_serve, wait_healthy

ROUNDS = 6
CLIENTS = 4


@dataclass
class Target:
    """A running server and direct access to its database (for the row counts)."""

    base: str
    engine: AsyncEngine
    http: httpx.AsyncClient
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/ws"

    async def register(self, username: str | None = None) -> Member:
        return await register_member(self.http, username)

    async def client(self) -> httpx.AsyncClient:
        """A client with its own connection, opened now so a burst does not wait on it."""
        http = httpx.AsyncClient(base_url=self.base, timeout=30)
        self.clients.append(http)
        assert (await http.get("/health")).status_code == 200
        return http

    async def pool(self, size: int = CLIENTS) -> list[httpx.AsyncClient]:
        return [await self.client() for _ in range(size)]

    async def count(self, sql: str, **params: Any) -> int:
        async with self.engine.connect() as conn:
            value = (await conn.execute(text(sql), params)).scalar_one()
        return int(value)

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())

    async def healthy(self, member: Member) -> None:
        """The server still answers, reads and writes after the burst."""
        assert (await self.http.get("/health")).status_code == 200
        listed = await self.http.get("/channels", headers=member.auth)
        assert listed.status_code == 200, listed.text
        profile = await self.http.post(
            "/users/profiles", json={"name_enc": "aGVhbHRoeQ=="}, headers=member.auth
        )
        assert profile.status_code == 201, profile.text

    async def invite(self) -> str:
        response = await self.http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


async def burst(requests: Iterable[Awaitable[httpx.Response]]) -> list[httpx.Response]:
    return list(await asyncio.gather(*requests))


def statuses(responses: Iterable[httpx.Response]) -> list[int]:
    return sorted(r.status_code for r in responses)


def assert_only(responses: Iterable[httpx.Response], allowed: set[int]) -> None:
    """Every answer is one of ``allowed``, and every error answer has the JSON error body."""
    for response in responses:
        assert response.status_code in allowed, (response.status_code, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert body["error"], body
            assert body["code"], body


@pytest.fixture(params=["inproc", "process"])
async def target(
    request: pytest.FixtureRequest, settings: Settings, db_url: str, tmp_path: Path
) -> AsyncIterator[Target]:
    engine = create_async_engine(db_url)
    try:
        if request.param == "inproc":
            async with running_server(settings) as live:
                found = Target(live.base, engine, live.http)
                try:
                    yield found
                finally:
                    for http in found.clients:
                        await http.aclose()
            return
        port = free_port()
        proc = start_serve(tmp_path / "served", db_url, port)
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(base, proc)
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                found = Target(base, engine, http)
                try:
                    yield found
                finally:
                    for client in found.clients:
                        await client.aclose()
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        await engine.dispose()
