"""The same call forced through a real TURN relay: coturn on loopback with the REST-API
credential scheme (`use-auth-secret`, `static-auth-secret` = the server's
DIALTONE_TURN_SECRET), both browsers set to "relay only". The call connects only if the
credentials of GET /voice/turn are right; with a server whose secret differs from the
relay's, the relay answers 401 and nobody connects."""

from __future__ import annotations

import queue
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.web.conftest import WebServer, start_server, stop_server
from tests.web.voice_helpers import (
    CONNECT_MS,
    SELECTED_PAIRS,
    Caller,
    expect_audio_flows,
    expect_connected,
    fresh_dir,
    join,
    set_relay_only,
    two_people_in_a_channel,
)

TURN_SECRET = "turn-secret-" + secrets.token_hex(12)
READY = "UDP listener opened on"


@dataclass
class Coturn:
    port: int
    proc: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


def free_udp_and_tcp_port() -> int:
    """A loopback port free for both UDP and TCP (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no free port")


def start_coturn(workdir: Path, secret: str) -> Coturn:
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("coturn is not installed: run `make browser-deps`")
    port = free_udp_and_tcp_port()
    proc = subprocess.Popen(
        [
            # coturn's log is block-buffered on a pipe: line-buffer it to see it start.
            "stdbuf",
            "-oL",
            binary,
            "-n",  # no configuration file: everything is on this line
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            "--use-auth-secret",
            f"--static-auth-secret={secret}",
            "--realm=dialtone.test",
            # Both browsers are on this machine, so their relayed peer addresses are
            # loopback ones, which coturn refuses by default.
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--log-file=stdout",
            "--simple-log",
            "--verbose",  # says when its listeners are open, and logs each allocation
            f"--pidfile={workdir / 'turnserver.pid'}",
            f"--db={workdir / 'turndb'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    turn = Coturn(port, proc)
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            turn.log.append(line.rstrip())
            lines.put(line)
        lines.put(None)

    turn.reader = threading.Thread(target=drain, daemon=True)
    turn.reader.start()
    # Ready when it says its UDP listener is open (or fail with what it said).
    try:
        while True:
            line = lines.get(timeout=60)
            if line is None:
                raise AssertionError("coturn exited:\n" + "\n".join(turn.log[-40:]))
            if READY in line:
                return turn
    except BaseException:
        stop_coturn(turn)
        raise


def stop_coturn(turn: Coturn) -> None:
    turn.proc.terminate()
    try:
        turn.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        turn.proc.kill()
        turn.proc.wait()
    if turn.reader is not None:
        turn.reader.join(timeout=15)
    if turn.proc.stdout is not None:
        turn.proc.stdout.close()


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    turn = start_coturn(tmp_path_factory.mktemp("coturn"), TURN_SECRET)
    yield turn
    stop_coturn(turn)


def turn_env(turn: Coturn, secret: str) -> dict[str, str]:
    return {"DIALTONE_TURN_SECRET": secret, "DIALTONE_TURN_URIS": turn.uri}


@pytest.fixture
def server(tmp_path: Path, coturn: Coturn) -> Iterator[WebServer]:
    """A fresh server per test (its first account is the admin who creates the channel),
    handing out credentials for the relay above."""
    live = start_server(fresh_dir(tmp_path / "web"), turn_env(coturn, TURN_SECRET))
    yield live
    stop_server(live)


def relay_only_call(server: WebServer, new_page: Any, channel: str) -> tuple[Caller, Caller]:
    alice, bob = two_people_in_a_channel(server, new_page, channel)
    for caller in (alice, bob):
        set_relay_only(caller)
        join(caller)
    return alice, bob


def test_call_through_the_turn_relay(server: WebServer, coturn: Coturn, new_page: Any) -> None:
    alice, bob = relay_only_call(server, new_page, "relay room")

    expect_connected(alice, bob)
    expect_audio_flows(alice, bob)
    for me, other in ((alice, bob), (bob, alice)):
        assert me.eval("() => window.__pcs[0].getConfiguration().iceTransportPolicy") == "relay"
        # Both ends of the pair in use are relayed candidates: the media went via coturn.
        assert me.wait_async(SELECTED_PAIRS) == [["relay", "relay"]]
        expect(me.row(other).locator(".voice-state")).to_contain_text("connected via relay")
    # coturn accepted allocations for both people's REST usernames (<expiry>:<user id>).
    for caller, other in ((alice, bob), (bob, alice)):
        user_id = other.row(caller).get_attribute("data-user-id")
        assert user_id
        assert any(user_id in line and "ALLOCATE processed, success" in line for line in coturn.log)

    for caller in (alice, bob):
        caller.panel().get_by_role("button", name="Leave voice").click()
        caller.wait(
            "() => window.__pcs.every((pc) => pc.connectionState === 'closed')"
            " && window.__tracks.every((t) => t.readyState === 'ended')"
        )


def test_wrong_turn_secret_connects_nobody(tmp_path: Path, coturn: Coturn, new_page: Any) -> None:
    """A server whose DIALTONE_TURN_SECRET is not the relay's: its credentials are refused."""
    wrong = start_server(
        fresh_dir(tmp_path / "wrong-secret"), turn_env(coturn, "not-the-relay-secret-0123")
    )
    try:
        alice, bob = relay_only_call(wrong, new_page, "no relay")
        for me in (alice, bob):
            # The relay refused the allocation (401) and gathering ended with no candidate.
            me.wait(
                "() => window.__candidateErrors.some((e) => e.code === 401)"
                " && window.__pcs.length === 1"
                " && window.__pcs[0].iceGatheringState === 'complete'"
            )
            expect(me.panel().locator(".voice-status")).to_contain_text(
                "The TURN relay refused", timeout=CONNECT_MS
            )
        for me in (alice, bob):
            local = me.wait_async(
                """async () => {
                  const stats = await window.__pcs[0].getStats();
                  let n = 0;
                  stats.forEach((r) => { if (r.type === "local-candidate") n += 1; });
                  return { n };
                }"""
            )
            assert local == {"n": 0}
            assert me.eval("() => window.__pcs[0].connectionState") != "connected"
    finally:
        stop_server(wrong)
