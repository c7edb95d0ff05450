"""One address cannot starve the others: connections are counted per address from their
accept (dialtone.accept), heads cannot be stretched, and the descriptor limit is raised.

The in-process tests pin the contract with uvicorn that dialtone.accept depends on: the
HTTP protocol class given as ``http=`` sees each connection at accept (before a byte),
and after a WebSocket upgrade the class given as ``ws=`` is told when it ends. `make
test-lowest` runs them on the lowest uvicorn of the declared range as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

import dialtone.accept as accept_module
import dialtone.server as server_module
from dialtone.accept import AcceptGate
from dialtone.config import Settings
from tests.conftest import ADMIN_TOKEN, PEPPER, register_member
from tests.security.conftest import free_port, wait_healthy

ATTACKER = "127.0.0.2"  # any 127/8 address is the loopback on Linux


async def idle_from(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from ``source`` that sends nothing."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def until(condition: Any, within: float = 30.0) -> None:
    """Wait for a condition on the server's counters (they have no event to wait on)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def closed_unread(reader: asyncio.StreamReader) -> bool:
    """The server ended the connection without answering anything."""
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return True
    return data == b""


async def test_an_address_over_its_cap_is_closed_at_accept_and_others_are_served(
    limited_settings: Settings, live_factory: Any
) -> None:
    settings = msgspec.structs.replace(limited_settings, max_open_connections_per_address=5)
    live = await live_factory(settings)
    gate: AcceptGate = live.server.config.app.state.accept_gate
    held = [await idle_from(ATTACKER, live.port) for _ in range(5)]
    await until(lambda: gate.by_key.get(ATTACKER) == 5)

    # The sixth is closed before it sends anything: no request head is needed.
    reader, writer = await idle_from(ATTACKER, live.port)
    assert await closed_unread(reader)
    await close(writer)
    assert gate.refused == 1
    assert gate.by_key[ATTACKER] == 5

    # Another address is served meanwhile.
    async with live.client() as http:
        assert (await http.get("/health")).status_code == 200

    # Closing them gives the count back; the address is served again.
    for _, held_writer in held:
        await close(held_writer)
    await until(lambda: ATTACKER not in gate.by_key)
    reader, writer = await idle_from(ATTACKER, live.port)
    writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    await close(writer)


async def test_an_upgraded_connection_is_counted_until_the_websocket_ends(
    limited_settings: Settings, live_factory: Any
) -> None:
    """After the upgrade the transport belongs to the WebSocket protocol: its end must
    still give the count back (else a reconnecting client would be locked out)."""
    settings = msgspec.structs.replace(limited_settings, max_open_connections_per_address=2)
    live = await live_factory(settings)
    gate: AcceptGate = live.server.config.app.state.accept_gate
    async with live.client() as http:
        member = await register_member(http)
    await until(lambda: gate.open == 0)
    ws_url = f"ws://127.0.0.1:{live.port}/ws"
    auth = {"Authorization": f"Bearer {member.token}"}
    for _ in range(4):  # twice the cap, one after the other
        async with connect(ws_url, additional_headers=auth, open_timeout=10) as ws:
            await asyncio.wait_for(ws.recv(), 10)
            assert gate.by_key["127.0.0.1"] == 1
        await until(lambda: gate.open == 0)
    held = [await idle_from("127.0.0.1", live.port) for _ in range(2)]
    await until(lambda: gate.open == 2)
    with pytest.raises((InvalidStatus, InvalidMessage, OSError, EOFError, TimeoutError)):
        async with connect(ws_url, additional_headers=auth, open_timeout=10):
            pass
    for _, writer in held:
        await close(writer)


async def test_trusted_proxy_is_not_capped_at_accept(
    limited_settings: Settings, live_factory: Any
) -> None:
    settings = msgspec.structs.replace(
        limited_settings, max_open_connections_per_address=2, trusted_proxies=(ATTACKER,)
    )
    live = await live_factory(settings)
    gate: AcceptGate = live.server.config.app.state.accept_gate
    held = [await idle_from(ATTACKER, live.port) for _ in range(4)]
    await until(lambda: gate.open == 4)
    assert gate.refused == 0
    for _, writer in held:
        await close(writer)


@pytest.mark.parametrize(
    "trickle",
    [b"\r\n", b"GET /health HTTP/1.1\r\nhost: x\r\n"],
    ids=["blank-lines", "one-byte-head"],
)
async def test_a_trickled_head_cannot_stretch_the_head_timeout(
    limited_settings: Settings, live_factory: Any, monkeypatch: pytest.MonkeyPatch, trickle: bytes
) -> None:
    """Slowloris: a byte at a time, or blank lines (which HTTP allows before a request and
    which start no head), never keep a connection past the head timeout."""
    monkeypatch.setattr(server_module, "HEADER_TIMEOUT", 0.5)
    live = await live_factory(limited_settings)
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)

    async def trickle_forever() -> None:
        while True:
            for i in range(len(trickle)):
                if writer.transport.is_closing():
                    return
                writer.write(trickle[i : i + 1])
                await asyncio.sleep(0.05)  # the attacker's pace, not a synchronisation

    sender = asyncio.create_task(trickle_forever())
    try:
        # Generous: only a connection that is never cut fails (the bound is 0.5 s).
        answer = await asyncio.wait_for(reader.read(), 30)
    except ConnectionResetError:
        answer = b""  # cut while a byte was on its way: the peer resets instead
    finally:
        sender.cancel()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    await close(writer)


async def test_descriptors_running_low_are_logged_and_counted(
    limited_settings: Settings,
    live_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "Low" from the first connection on, so the test needs no thousand sockets.
    monkeypatch.setattr(accept_module, "LOW_FRACTION", 0.0)
    live = await live_factory(limited_settings)
    gate: AcceptGate = live.server.config.app.state.accept_gate
    with caplog.at_level(logging.WARNING, logger="dialtone.accept"):
        async with live.client() as http:
            assert (await http.get("/health")).status_code == 200
    assert gate.descriptors_low >= 1
    assert any(r.getMessage().startswith("file descriptors running low") for r in caplog.records)


# ---------------------------------------------------------------- a real 1024-descriptor process


def serve_with_nofile(
    tmp_path: Path, db_url: str, port: int, soft: int, hard: int
) -> subprocess.Popen[bytes]:
    """`dialtone serve` with limits on and RLIMIT_NOFILE (soft, hard), as systemd's default."""
    env = {
        **os.environ,
        "DIALTONE_LISTEN_ADDR": f"127.0.0.1:{port}",
        "DIALTONE_DATA_DIR": str(tmp_path),
        "DIALTONE_DB_URL": db_url,
        "DIALTONE_USERNAME_PEPPER": PEPPER.decode(),
        "DIALTONE_ADMIN_TOKEN": ADMIN_TOKEN,
        "DIALTONE_RATE_LIMITS": "on",
    }

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.Popen(
        [sys.executable, "-m", "dialtone", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=limit,
    )


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.mark.slow
async def test_soft_descriptor_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    port = free_port()
    proc = serve_with_nofile(tmp_path, f"sqlite:///{tmp_path / 'd.db'}", port, 1024, 4096)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", proc)
        assert open_files_limit(proc.pid) == 4096
    finally:
        stop(proc)


@pytest.mark.slow
async def test_half_open_flood_from_one_address_leaves_others_their_handshakes(
    tmp_path: Path,
) -> None:
    """A 1024-descriptor server (hard limit too, so it cannot raise it); 1100 connections
    from one address that never send a byte; another address still completes its
    WebSocket handshakes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve_with_nofile(tmp_path, f"sqlite:///{tmp_path / 'd.db'}", port, 1024, 1024)
    flood: list[asyncio.StreamWriter] = []
    try:
        await wait_healthy(url, proc)
        assert open_files_limit(proc.pid) == 1024
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            member = await register_member(http)
        for _ in range(1100):
            try:
                _, writer = await idle_from(ATTACKER, port)
            except OSError:
                continue  # refused by a full backlog: the flood is the attacker's problem
            flood.append(writer)
        assert len(flood) >= 1000

        auth = {"Authorization": f"Bearer {member.token}"}
        completed = 0
        for _ in range(96):
            try:
                async with connect(
                    f"ws://127.0.0.1:{port}/ws", additional_headers=auth, open_timeout=10
                ) as ws:
                    await asyncio.wait_for(ws.recv(), 10)
                    completed += 1
            except (OSError, InvalidStatus, InvalidMessage, EOFError, TimeoutError):
                pass
        assert completed >= 92, f"{completed} of 96 handshakes completed"
        assert proc.poll() is None
    finally:
        for writer in flood:
            writer.transport.abort()
        stop(proc)
