"""The browser client under a real browser: Debian's chromium driven by Playwright, against
a real `dialtone serve` process (SQLite in a temporary directory), one per test module.

Browser tests skip, saying why, when Playwright or chromium is missing; `make browser-deps`
installs chromium (and `make test` calls it).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, PEPPER
from tests.e2ee import DeviceKeys

CHROMIUM = os.environ.get("DIALTONE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct horse 1"

try:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Page,
        Playwright,
        expect,
        sync_playwright,
    )

    # Waits end as soon as the page shows what is expected; the bound only matters on a
    # loaded machine, where key sharing between browsers can take seconds.
    expect.set_options(timeout=20_000)
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class WebServer:
    base: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    @property
    def db_path(self) -> Path:
        return self.data_dir / "dialtone.db"

    def log_tail(self) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")[-3000:]

    def invite(self) -> str:
        response = httpx.post(
            f"{self.base}/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN}, timeout=20
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None) -> WebServer:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "DIALTONE_DATA_DIR": str(data_dir),
            "DIALTONE_LISTEN_ADDR": f"127.0.0.1:{port}",
            "DIALTONE_USERNAME_PEPPER": PEPPER.decode(),
            "DIALTONE_ADMIN_TOKEN": ADMIN_TOKEN,
            "DIALTONE_RATE_LIMITS": "off",
            "DIALTONE_LOG_LEVEL": "warning",
        }
    )
    env.pop("DIALTONE_DB_URL", None)
    env.update(extra_env or {})
    # The server's log goes to a file (a pipe nobody reads could fill up and stall it).
    with (data_dir / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dialtone", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    server = WebServer(f"http://127.0.0.1:{port}", data_dir, proc, env)
    # Start-up only: wait until the port answers (migrations run first).
    with httpx.Client(base_url=server.base, timeout=5) as http:
        for _ in range(600):
            if proc.poll() is not None:
                err = (data_dir / "server.log").read_text(errors="replace")
                raise AssertionError(f"server exited: {err[-2000:]}")
            try:
                if http.get("/health").status_code == 200:
                    return server
            except httpx.HTTPError:
                time.sleep(0.05)
    proc.terminate()
    raise AssertionError("server did not start")


def stop_server(server: WebServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    live = start_server(tmp_path_factory.mktemp("web"))
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: run `make browser-deps`")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    instance = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )
    yield instance
    instance.close()


# Chromium logs every failed HTTP answer as a console error. The client asks for a new
# channel's key until its creator has posted it, so a 404 there is expected; every other
# failed response, and every other console error, fails the test.
EXPECTED_FAILURES = [
    re.compile(r"GET /channels/keys\?channel_id=[0-9a-f-]+(&all=1)? 404$"),
    # A page missing keys asks whether the account has a key backup to offer a restore
    # from; 404 is the documented "none".
    re.compile(r"GET /keys/backup 404$"),
]


@dataclass
class Watched:
    """A page with its console errors, failed responses and WebSocket frames recorded."""

    page: Page
    context: BrowserContext
    errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    frames_sent: list[str] = field(default_factory=list)
    frames_received: list[str] = field(default_factory=list)
    allowed_errors: list[re.Pattern[str]] = field(default_factory=list)
    allowed_failures: list[re.Pattern[str]] = field(default_factory=list)

    def problems(self) -> list[str]:
        expected = EXPECTED_FAILURES + self.allowed_failures
        failures = [f for f in self.failures if not any(p.search(f) for p in expected)]
        errors = [
            e
            for e in self.errors
            if not e.startswith("Failed to load resource")
            and not any(p.search(e) for p in self.allowed_errors)
        ]
        return failures + errors


def watch(context: BrowserContext) -> Watched:
    page = context.new_page()
    watched = Watched(page, context)

    def on_console(message: Any) -> None:
        if message.type == "error":
            watched.errors.append(message.text)

    def on_response(response: Any) -> None:
        if response.status >= 400:
            path = response.url.split("://", 1)[1].split("/", 1)[1]
            watched.failures.append(f"{response.request.method} /{path} {response.status}")

    def on_websocket(ws: Any) -> None:
        ws.on("framesent", lambda payload: watched.frames_sent.append(str(payload)))
        ws.on("framereceived", lambda payload: watched.frames_received.append(str(payload)))

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(f"page error: {error}"))
    page.on("response", on_response)
    page.on("websocket", on_websocket)
    return watched


@pytest.fixture
def new_page(browser: Browser, server: WebServer) -> Iterator[Any]:
    """Open pages in fresh browser contexts (separate storage: separate people)."""
    opened: list[Watched] = []

    def make(**options: Any) -> Watched:
        options.setdefault("viewport", {"width": 1200, "height": 760})
        context = browser.new_context(**options)
        watched = watch(context)
        opened.append(watched)
        return watched

    yield make
    problems = [p for w in opened for p in w.problems()]
    for watched in opened:
        watched.context.close()
    assert not problems, f"console errors or failed requests: {problems}\n{server.log_tail()}"


def register_in_browser(
    page: Page, server: WebServer, username: str, display: str, invite: str | None = None
) -> None:
    """Follow an invite link and create an account, as a person would."""
    page.goto(f"{server.base}/#invite={invite or server.invite()}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Display name").fill(display)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".conn")).to_have_text("Connected")


def python_member(
    server: WebServer, username: str
) -> tuple[httpx.Client, DeviceKeys, dict[str, Any]]:
    keys = DeviceKeys()
    http = httpx.Client(base_url=server.base, timeout=20)
    response = http.post(
        "/auth/register",
        json={
            "username": username,
            "password": PASSWORD,
            "public_key": keys.public_b64,
            "invite_token": server.invite(),
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    http.headers["Authorization"] = f"Bearer {body['token']}"
    return http, keys, body
