"""The key backup in the browser: set up at sign-up, restored on a fresh browser with every
other device closed, a wrong recovery key explained, two pages writing at once, what the
server receives, and interop with the Python client of the scheme (tests/key_backup.py)."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from playwright.sync_api import Page, Request, Route, expect

from tests.e2ee import open_sealed, unb64
from tests.key_backup import (
    BackupKeys,
    Secret,
    WrongSecret,
    format_recovery_key,
    hkdf_backup_key,
    make_backup,
    open_backup,
    parse_recovery_key,
    passphrase_ikm,
)
from tests.web.conftest import PASSWORD, Watched, WebServer, start_server, stop_server


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A server of its own for each test: each one starts with the first account."""
    live = start_server(tmp_path_factory.mktemp("backup"))
    yield live
    stop_server(live)


@dataclass
class Traffic:
    """Every request a browser context sent: method, URL, headers and body."""

    requests: list[tuple[str, str, dict[str, str], str]] = field(default_factory=list)

    def record(self, request: Request) -> None:
        body = request.post_data or ""
        self.requests.append((request.method, request.url, dict(request.headers), body))

    def text(self) -> str:
        return "\n".join(f"{m} {u} {json.dumps(h)} {b}" for m, u, h, b in self.requests)

    def backups_sent(self) -> list[str]:
        return [
            json.loads(body)["backup"]
            for method, url, _, body in self.requests
            if method == "PUT" and url.endswith("/keys/backup")
        ]

    def token(self) -> str:
        for _, _, headers, _ in self.requests:
            if headers.get("authorization", "").startswith("Bearer "):
                return headers["authorization"].removeprefix("Bearer ")
        raise AssertionError("no authenticated request recorded")


def recorded(watched: Watched) -> Traffic:
    traffic = Traffic()
    watched.context.on("request", traffic.record)
    return traffic


def create_channel(page: Page, name: str, message: str) -> None:
    page.get_by_label("New channel name").fill(name)
    page.get_by_role("button", name="Create channel").click()
    expect(page.get_by_role("heading", name=f"# {name}")).to_be_visible()
    sent = page.locator("li.msg[data-status=sent]")
    before = sent.count()
    page.get_by_label("Message", exact=True).fill(message)
    page.get_by_label("Message", exact=True).press("Enter")
    expect(sent).to_have_count(before + 1)


def sign_in(page: Page, server: WebServer, username: str) -> None:
    page.goto(server.base)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".conn")).to_have_text("Connected")


def sync_backup(page: Page) -> int:
    """Have the page write what it holds into the backup now; the backup's version."""
    version: int = page.evaluate(
        """async () => {
            const src = document.querySelector("script[type=module]").src;
            const backup = await import(new URL("backup.js", src));
            return backup.syncNow();
        }"""
    )
    return version


def set_up_with_recovery_key(page: Page) -> str:
    """On the key backup page: create a recovery key, note it, confirm, turn it on."""
    page.get_by_role("button", name="Set up key backup with a recovery key").click()
    shown = page.get_by_label("Your recovery key", exact=True)
    text = shown.input_value()
    assert re.fullmatch(r"([A-Z2-7]{4}-){12}[A-Z2-7]{4}", text), text
    confirm = page.get_by_role("button", name="Turn on key backup")
    expect(confirm).to_be_disabled()
    page.get_by_label("I saved my recovery key").check()
    confirm.click()
    expect(page.locator("#backup-status")).to_contain_text("Key backup is on in this browser")
    # Shown once: gone once the backup is on.
    expect(page.get_by_label("Your recovery key", exact=True)).to_have_count(0)
    return text


def sign_up_with_backup(page: Page, server: WebServer, username: str, display: str) -> str:
    """Register with the key backup offer taken; the recovery key shown."""
    page.goto(f"{server.base}/#invite={server.invite()}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Display name").fill(display)
    page.get_by_label("Next, set up a key backup").check()
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".conn")).to_have_text("Connected")
    expect(page.get_by_role("heading", name="Key backup", exact=True)).to_be_visible()
    return set_up_with_recovery_key(page)


def restore(page: Page, secret: str) -> None:
    page.get_by_label("Recovery key or passphrase").fill(secret)
    page.get_by_role("button", name="Restore keys").click()


def reads_everything(page: Page, channels: dict[str, str], name: str) -> None:
    for channel, message in channels.items():
        page.get_by_role("link", name=channel).click()
        expect(page.get_by_role("heading", name=f"# {channel}")).to_be_visible()
        expect(page.locator("li.msg", has_text=message)).to_be_visible()
    expect(page.locator(".people li", has_text=name)).to_be_visible()


def backup_key_candidates(password: str, header: dict[str, Any]) -> list[bytes]:
    """Every key the login password could give for this blob's salt, by this scheme's own
    derivations and by plain HKDF: none may open it."""
    salt = unb64(header["salt"])
    secret = password.encode()
    plain = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=None).derive(secret)
    return [
        hkdf_backup_key(secret, salt),
        hkdf_backup_key(passphrase_ikm(password, salt, 600_000), salt),
        plain,
    ]


CHANNELS = {"rabbit hole": "Down, down, down.", "tea party": "No room! No room!"}


# Setting up reads the backup first: none yet.
NO_BACKUP_YET = re.compile(r"GET /keys/backup 404$")
# Another page wrote first: the page reads, merges and writes again.
CONFLICT = re.compile(r"PUT /keys/backup 409$")


def alice_with_backup(watched: Watched, server: WebServer) -> str:
    """Alice signs up taking the backup offer, then makes two channels with a message each;
    the page keeps the backup up to date. Her recovery key."""
    watched.allowed_failures.append(NO_BACKUP_YET)
    page = watched.page
    recovery_key = sign_up_with_backup(page, server, "alice", "Alice Liddell")
    for name, message in CHANNELS.items():
        create_channel(page, name, message)
    assert sync_backup(page) >= 2
    return recovery_key


def test_restore_on_a_fresh_browser_with_every_other_device_closed(
    server: WebServer, new_page: Any
) -> None:
    first = new_page()
    first_traffic = recorded(first)
    recovery_key = alice_with_backup(first, server)
    token = first_traffic.token()
    first.page.close()  # her only other device: closed, and nobody else is a member

    fresh = new_page()
    traffic = recorded(fresh)
    page = fresh.page
    sign_in(page, server, "alice")
    expect(page.locator(".channel-list li", has_text="rabbit hole")).to_have_count(0)
    # The key banner offers the restore, since the account has a backup.
    page.get_by_role("button", name="Restore from your recovery key").click()
    expect(page).to_have_url(re.compile(r"#/restore$"))

    # A wrong recovery key, and something that is not one at all: said clearly.
    restore(page, format_recovery_key(os.urandom(32)))
    expect(page.locator("#restore-error")).to_have_text(
        "Wrong recovery key: it does not open your key backup. Check it and try again."
    )
    restore(page, "my password")
    expect(page.locator("#restore-error")).to_contain_text("That is not a recovery key")

    # Typed loosely: lower case, spaces for dashes.
    restore(page, recovery_key.lower().replace("-", " "))
    expect(page.locator("#restore-done")).to_have_text(
        "Restored 2 channel keys and the key to members' names from your key backup."
    )
    reads_everything(page, CHANNELS, "Alice Liddell")

    # What the server received: never the recovery key in any form, nor a backup that the
    # login password opens. The page's backup opens with the Python client.
    raw = parse_recovery_key(recovery_key)
    sent = first_traffic.text() + traffic.text()
    for form in (
        recovery_key,
        recovery_key.replace("-", ""),
        recovery_key.lower(),
        base64.b64encode(raw).decode(),
        raw.hex(),
    ):
        assert form not in sent
    backups = first_traffic.backups_sent()
    assert len(backups) >= 2
    for blob in backups:
        header = json.loads(base64.b64decode(blob))
        assert header["kdf"] == "recovery-key"
        backup_key = hkdf_backup_key(raw, unb64(header["salt"]))
        assert base64.b64encode(backup_key).decode() not in sent
        assert backup_key.hex() not in sent
        for candidate in backup_key_candidates(PASSWORD, header):
            with pytest.raises(WrongSecret):
                open_backup(blob, Secret(recovery_key=candidate))
        with pytest.raises(WrongSecret):
            open_backup(blob, Secret(passphrase=PASSWORD))
    keys = open_backup(backups[-1], Secret(recovery_key=raw))
    http = httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {token}"})
    with http:
        channels = http.get("/channels").json()["channels"]
        profiles = http.get("/users/profiles").json()["profiles"]
    names = {open_sealed(keys.channels[c["id"]]["1"], c["name_enc"]).decode() for c in channels}
    assert names == set(CHANNELS)
    assert keys.directory is not None
    assert open_sealed(keys.directory, profiles[0]["name_enc"]) == b"Alice Liddell"


def test_a_backup_made_by_the_python_client_restores_in_the_page(
    server: WebServer, new_page: Any
) -> None:
    first = new_page()
    traffic = recorded(first)
    recovery_key = alice_with_backup(first, server)
    first.page.close()
    http = httpx.Client(
        base_url=server.base, headers={"Authorization": f"Bearer {traffic.token()}"}
    )
    with http:
        stored = http.get("/keys/backup").json()
        keys = open_backup(stored["backup"], Secret(recovery_key=parse_recovery_key(recovery_key)))
        # Python seals the same keys with a passphrase (600000 rounds) and replaces it.
        words = "mock turtle lobster quadrille"
        remade = make_backup(BackupKeys(keys.channels, keys.directory), Secret(passphrase=words))
        answer = http.put("/keys/backup", json={"backup": remade, "version": stored["version"]})
        assert answer.json() == {"version": stored["version"] + 1}

    fresh = new_page()
    page = fresh.page
    sign_in(page, server, "alice")
    page.goto(f"{server.base}/#/restore")
    restore(page, "mock turtle lobster quadrillE")
    expect(page.locator("#restore-error")).to_have_text(
        "Wrong passphrase: it does not open your key backup. Check it and try again."
    )
    restore(page, words)
    expect(page.locator("#restore-done")).to_contain_text("Restored 2 channel keys")
    reads_everything(page, CHANNELS, "Alice Liddell")


def test_two_pages_writing_the_backup_at_once_lose_nothing(
    server: WebServer, new_page: Any
) -> None:
    one = new_page()
    recovery_key = alice_with_backup(one, server)
    two = new_page()
    sign_in(two.page, server, "alice")
    two.page.goto(f"{server.base}/#/restore")
    restore(two.page, recovery_key)
    expect(two.page.locator("#restore-done")).to_contain_text("from your key backup")
    version = sync_backup(two.page)
    assert sync_backup(one.page) == version

    # Each page's next write is held until both are on their way with the same version.
    held: dict[str, list[Route]] = {"one": [], "two": []}
    bodies: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}

    def hold(name: str) -> Any:
        def handler(route: Route) -> None:
            if route.request.method != "PUT":
                route.continue_()
                return
            bodies[name].append(json.loads(route.request.post_data or "{}"))
            if len(held[name]) == 0:
                held[name].append(route)  # answered below
            else:
                route.continue_()

        return handler

    def is_put(response: Any) -> bool:
        return response.request.method == "PUT" and response.url.endswith("/keys/backup")

    # Meanwhile neither page fetches the other's new channel key, so each holds a key the
    # other lacks: only a merge keeps both.
    def no_envelope(route: Route) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        missing = {"error": "no key envelope for this device", "code": "envelope_not_found"}
        route.fulfill(status=404, json=missing)

    envelope_reads = re.compile(r"/channels/keys\?channel_id=")
    one.page.route(envelope_reads, no_envelope)
    two.page.route(envelope_reads, no_envelope)
    one.page.route("**/keys/backup", hold("one"))
    two.page.route("**/keys/backup", hold("two"))
    one.allowed_failures.append(CONFLICT)
    two.allowed_failures.append(CONFLICT)
    create_channel(one.page, "croquet", "Off with her head!")
    create_channel(two.page, "caucus race", "Everybody has won.")
    for name, page in (("one", one.page), ("two", two.page)):
        page.evaluate("1")  # events already in flight reach the route handlers first
        if not held[name]:
            with page.expect_request(lambda r: r.method == "PUT" and "/keys/backup" in r.url):
                pass
            page.evaluate("1")
    assert len(held["one"]) == len(held["two"]) == 1
    assert bodies["one"][0]["version"] == bodies["two"][0]["version"] == version

    with two.page.expect_response(lambda r: is_put(r) and r.status == 200):
        held["two"][0].continue_()
    # The page that wrote second is refused, reads the new version, merges, writes again.
    with (
        one.page.expect_response(lambda r: is_put(r) and r.status == 200),
        one.page.expect_response(lambda r: is_put(r) and r.status == 409),
    ):
        held["one"][0].continue_()
    secret = Secret(recovery_key=parse_recovery_key(recovery_key))
    first_one = open_backup(bodies["one"][0]["backup"], secret)
    first_two = open_backup(bodies["two"][0]["backup"], secret)
    assert set(first_one.channels) != set(first_two.channels)
    one.page.unroute(envelope_reads)
    two.page.unroute(envelope_reads)
    sync_backup(one.page)
    sync_backup(two.page)

    http = httpx.Client(base_url=server.base)
    with http:
        login = http.post(
            "/auth/login",
            json={
                "username": "alice",
                "password": PASSWORD,
                "public_key": base64.b64encode(os.urandom(32)).decode(),
            },
        )
        token = login.json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        stored = http.get("/keys/backup").json()
        channels = http.get("/channels").json()["channels"]
    keys = open_backup(stored["backup"], secret)
    assert set(keys.channels) == {c["id"] for c in channels}
    assert set(keys.channels) >= set(first_one.channels) | set(first_two.channels)
    names = {open_sealed(keys.channels[c["id"]]["1"], c["name_enc"]).decode() for c in channels}
    assert names == {*CHANNELS, "croquet", "caucus race"}


def test_setting_up_again_elsewhere_replaces_only_when_asked(
    server: WebServer, new_page: Any
) -> None:
    first = new_page()
    old_key = alice_with_backup(first, server)
    other = new_page()
    sign_in(other.page, server, "alice")
    page = other.page
    # The first browser hands this one the keys (after its jitter): wait until it reads.
    reads_everything(page, CHANNELS, "Alice Liddell")
    page.goto(f"{server.base}/#/backup")
    page.get_by_role("button", name="Set up key backup with a recovery key").click()
    new_key = page.get_by_label("Your recovery key", exact=True).input_value()
    page.get_by_label("I saved my recovery key").check()
    page.get_by_role("button", name="Turn on key backup").click()
    expect(page.locator("#setup-error")).to_contain_text("already has a key backup")
    page.get_by_role("button", name="Replace the existing backup").click()
    expect(page.locator("#backup-status")).to_contain_text("Key backup is on in this browser")
    # The first browser cannot open the new backup: it stops writing and says why.
    code = first.page.evaluate(
        """async () => {
            const src = document.querySelector("script[type=module]").src;
            const backup = await import(new URL("backup.js", src));
            return backup.syncNow().then(() => "written", (e) => e.code);
        }"""
    )
    assert code == "replaced"
    expect(first.page.locator(".notices")).to_contain_text("set up again on another device")
    with httpx.Client(base_url=server.base) as http:
        login = http.post(
            "/auth/login",
            json={
                "username": "alice",
                "password": PASSWORD,
                "public_key": base64.b64encode(os.urandom(32)).decode(),
            },
        )
        http.headers["Authorization"] = f"Bearer {login.json()['token']}"
        stored = http.get("/keys/backup").json()["backup"]
    with pytest.raises(WrongSecret):
        open_backup(stored, Secret(recovery_key=parse_recovery_key(old_key)))
    assert open_backup(stored, Secret(recovery_key=parse_recovery_key(new_key))).directory
