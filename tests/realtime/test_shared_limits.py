"""Limits that hold over every node and worker: open sockets per user
(DIALTONE_MAX_SOCKETS_PER_USER), open sockets per client address
(DIALTONE_MAX_CONNECTIONS_PER_ADDRESS) and the chat budget per user
(DIALTONE_WS_USER_CHAT_*), shared through Redis. Two `dialtone serve` processes on one
PostgreSQL and one Redis; a user's sockets are spread over both, so a limit kept per
process would let twice as much through."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.conftest import Member
from tests.realtime.conftest import chat_frame, next_of
from tests.realtime.test_multinode import Node, shared_db  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

LIMITS = {
    "DIALTONE_RATE_LIMITS": "on",
    "DIALTONE_MAX_SOCKETS_PER_USER": "2",
    "DIALTONE_MAX_CONNECTIONS_PER_ADDRESS": "4",
    # Three chat frames per user, then (practically) none.
    "DIALTONE_WS_USER_CHAT_BURST": "3",
    "DIALTONE_WS_USER_CHAT_RATE": "0.001",
    # The other limits out of the way of the set-up.
    "DIALTONE_REGISTER_BURST": "100",
    "DIALTONE_ADMIN_TOKEN_BURST": "100",
    "DIALTONE_LOGIN_BURST": "100",
}


@pytest.fixture
async def limited_nodes(shared_db: str, tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:  # noqa: F811
    prefix = f"dialtone-test-{secrets.token_hex(6)}:"
    first = Node(shared_db, prefix, tmp_path / "a", **LIMITS)
    started = [first]
    try:
        await first.ready()
        second = Node(shared_db, prefix, tmp_path / "b", **LIMITS)
        started.append(second)
        await second.ready()
        yield first, second
    finally:
        await asyncio.gather(*(node.stop() for node in started))


async def open_socket(node: Node, member: Member) -> ClientConnection:
    ws = await connect(node.ws_url, additional_headers={"Authorization": f"Bearer {member.token}"})
    await next_of(ws, "server.hello", 10)
    return ws


async def refused(node: Node, member: Member) -> dict[str, Any]:
    with pytest.raises(InvalidStatus) as caught:
        await open_socket(node, member)
    response = caught.value.response
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    body: dict[str, Any] = json.loads(response.body)
    assert body["code"] == "rate_limited"
    assert body["error"]
    return body


async def opens_again(node: Node, member: Member, within: float = 30.0) -> ClientConnection:
    """A socket opens once a closed one's slot is given back (that happens on the
    server after the close, so the first tries may still be refused)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await open_socket(node, member)
        except InvalidStatus as exc:
            if exc.response.status_code != 429 or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.05)


async def test_sockets_per_user_are_capped_over_both_nodes(
    limited_nodes: tuple[Node, Node],
) -> None:
    node_a, node_b = limited_nodes
    alice = await node_a.register("alice")
    # Six handshakes at once, three on each node: exactly two get in.
    tries = await asyncio.gather(
        *(open_socket(node, alice) for node in (node_a, node_b) * 3), return_exceptions=True
    )
    opened = [ws for ws in tries if isinstance(ws, ClientConnection)]
    assert len(opened) == 2, tries
    for failure in tries:
        if not isinstance(failure, ClientConnection):
            assert isinstance(failure, InvalidStatus), failure
            assert failure.response.status_code == 429
    for ws in opened:
        await ws.close()
    on_a = await opens_again(node_a, alice)
    on_b = await opens_again(node_b, alice)
    try:
        # Two open, one on each node: a third is refused on either node.
        for node in (node_a, node_b):
            assert "sockets" in (await refused(node, alice))["error"]
        # Closing one (on B) frees a slot for a socket on A.
        await on_b.close()
        again = await opens_again(node_a, alice)
        await again.close()
    finally:
        await on_a.close()


async def test_sockets_per_address_are_capped_over_both_nodes(
    limited_nodes: tuple[Node, Node],
) -> None:
    node_a, node_b = limited_nodes
    people = [await node_a.register(f"person{i}") for i in range(5)]
    # Four sockets from 127.0.0.1, two on each node (four users: no user is at its cap).
    opened = [
        await open_socket(node, person)
        for node, person in zip((node_a, node_b, node_a, node_b), people, strict=False)
    ]
    try:
        for node in (node_a, node_b):
            body = await refused(node, people[4])
            assert body["error"] == "too many concurrent connections"
    finally:
        for ws in opened:
            await ws.close()


async def test_the_chat_budget_per_user_is_shared_by_both_nodes(
    limited_nodes: tuple[Node, Node],
) -> None:
    node_a, node_b = limited_nodes
    alice = await node_a.register("alice")
    created = await node_a.http.post("/channels", json={"name_enc": "bmFtZQ=="}, headers=alice.auth)
    assert created.status_code == 201, created.text
    channel = created.json()["channel"]["id"]
    on_a = await open_socket(node_a, alice)
    on_b = await open_socket(node_b, alice)
    try:
        # Three messages (the user's whole budget) over both sockets: all stored.
        for ws, body in ((on_a, "b25l"), (on_b, "dHdv"), (on_a, "dGhyZWU=")):
            await ws.send(chat_frame(channel, body))
            while (await next_of(ws, "channel.message.new", 10))["body"] != body:
                pass
        # The fourth is refused on either node: each socket's own bucket is far from empty.
        for ws in (on_b, on_a):
            await ws.send(chat_frame(channel, "Zm91cg=="))
            error = await next_of(ws, "error", 10)
            assert error["code"] == "rate_limited"
    finally:
        await on_a.close()
        await on_b.close()
