"""Keys that rotate, in Chromium (issue 16, "Done when"): a private team room of four —
Alice (owner) and Bob in real pages, Carol and Dave as Python clients of the scheme —
talks; Alice's page removes Dave and rotates the room's key by itself; Dave, with his old
key and a raw client, reads nothing said after and has no envelope of the new version;
the other three read the whole history, both key versions. Carol's Python client checks
the page's new key against the room's commitment, and the pages read what she sealed
with it. And the key backup holds both versions: a fresh browser restored from it reads
the whole history of a rotated room."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from websockets.sync.client import ClientConnection, connect

from tests.conftest import ADMIN_TOKEN
from tests.e2ee import DeviceKeys, commitment, matching_key, open_sealed, seal
from tests.key_backup import Secret, open_backup, parse_recovery_key
from tests.web.conftest import (
    PASSWORD,
    WebServer,
    python_member,
    register_in_browser,
    start_server,
    stop_server,
)
from tests.web.test_handover import session_of
from tests.web.test_key_backup import NO_BACKUP_YET, sign_in, sign_up_with_backup, sync_backup

try:
    from playwright.sync_api import Locator, Page, expect
except ImportError:  # pragma: no cover - the test extras install it
    pytest.skip("playwright is not installed", allow_module_level=True)


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A server of its own for each test: Alice, its first account, is its admin."""
    live = start_server(tmp_path_factory.mktemp("rotation"))
    yield live
    stop_server(live)


def channels(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Channels")


def texts(page: Page) -> Locator:
    return page.locator("li.msg")


def send(page: Page, text: str) -> None:
    composer = page.get_by_label("Message", exact=True)
    composer.fill(text)
    composer.press("Enter")
    expect(page.locator("li.msg[data-status=sent]", has_text=text)).to_be_visible()


def socket_of(server: WebServer, http: httpx.Client) -> ClientConnection:
    return connect(
        f"{server.base.replace('http', 'ws')}/ws",
        additional_headers={"Authorization": str(http.headers["Authorization"])},
    )


def post_message(ws: ClientConnection, room: str, key: bytes, text: str, version: int) -> None:
    frame: dict[str, Any] = {
        "type": "channel.message.send",
        "channel_id": room,
        "body": seal(key, text.encode()),
        "sender_name_enc": seal(key, b"Carol Python"),
    }
    if version != 1:
        frame["key_version"] = version
    ws.send(json.dumps(frame))


def frames_until(ws: ClientConnection, done: Any) -> list[dict[str, Any]]:
    """The socket's events up to and including the first for which ``done`` holds."""
    seen = []
    while True:
        event = json.loads(ws.recv(timeout=30))
        seen.append(event)
        if done(event):
            return seen


def key_of(http: httpx.Client, keys: DeviceKeys, room: str, version: int | None = None) -> bytes:
    """A Python member takes the room's key (of ``version``, default the current one),
    checking it against the commitment the server serves for that version."""
    listed = http.get("/channels").json()["channels"]
    (channel,) = [c for c in listed if c["id"] == room]
    params: dict[str, Any] = {"channel_id": room, "all": 1}
    if version is not None:
        params["key_version"] = version
    answer = http.get("/channels/keys", params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = body.get("key_commitment") if version is not None else channel["key_commitment"]
    assert expected, body
    key = matching_key(keys, body["envelopes"], expected)
    assert key is not None, "no envelope whose key matches the commitment"
    return key


@dataclass
class Room:
    room: str
    key1: bytes
    devices: list[dict[str, Any]]
    owner_http: httpx.Client
    owner_keys: DeviceKeys


def make_room(server: WebServer, member_ids: list[str]) -> Room:
    """Alice's second device (Python, never online) makes a private room and its first key,
    adds the members and seals the key for every member's device, her page's included."""
    second = DeviceKeys()
    login = httpx.post(
        f"{server.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "public_key": second.public_b64},
        timeout=20,
    ).json()
    http = httpx.Client(
        base_url=server.base, timeout=20, headers={"Authorization": f"Bearer {login['token']}"}
    )
    key1 = os.urandom(32)
    made = http.post(
        "/channels",
        json={"name_enc": seal(key1, b"team"), "key_commitment": commitment(key1), "private": True},
    )
    assert made.status_code == 201, made.text
    room = made.json()["channel"]["id"]
    assert made.json()["channel"]["role"] == "owner"
    for user_id in member_ids:
        added = http.post("/channels/members", json={"channel_id": room, "user_id": user_id})
        assert added.status_code == 201, added.text
    wanted = {login["user_id"], *member_ids}
    devices = [
        d
        for d in http.get("/devices/keys", params={"all": 1}).json()["keys"]
        if d["user_id"] in wanted
    ]
    assert {d["user_id"] for d in devices} == wanted
    stored = http.post(
        "/channels/keys",
        json={
            "channel_id": room,
            "envelopes": [
                {
                    "device_id": d["device_id"],
                    "sender_device_id": login["device_id"],
                    "sender_public_key": second.public_b64,
                    "envelope": second.wrap_for(d["public_key"], key1),
                    "key_version": 1,
                }
                for d in devices
            ],
        },
    )
    assert stored.status_code == 201, stored.text
    return Room(room, key1, devices, http, second)


def remove_from_page(page: Page, room: str, user_id: str) -> None:
    """The owner's page removes a member (DELETE /channels/members with its session)."""
    page.evaluate(
        """async ([room, user]) => {
            const src = document.querySelector("script[type=module]").src;
            const { currentClient } = await import(new URL("client.js", src));
            await currentClient().api.request("DELETE", "/channels/members",
              { query: { channel_id: room, user_id: user } });
        }""",
        [room, user_id],
    )


def holds_version(page: Page, room: str, version: int) -> None:
    """Wait until the page writes in the room with the key of ``version``."""
    page.evaluate(
        """async () => {
            const src = document.querySelector("script[type=module]").src;
            window.dialtoneClient = (await import(new URL("client.js", src))).currentClient();
        }"""
    )
    page.wait_for_function(
        "([room, v]) => window.dialtoneClient.channels.get(room)?.keyVersion === v"
        " && Boolean(window.dialtoneClient.channels.get(room)?.key)",
        arg=[room, version],
        timeout=20_000,
    )


def new_version(response: Any) -> bool:
    """POST /channels/keys with the envelopes of version 2 for the room's devices."""
    if response.request.method != "POST" or response.status != 201:
        return False
    items = json.loads(response.request.post_data or "{}").get("envelopes", [])
    return len(items) > 1 and all(e.get("key_version") == 2 for e in items)


def test_a_room_of_four_removes_dave_and_the_page_rotates_its_key(
    server: WebServer, new_page: Any
) -> None:
    # Alice registers first: the server's first account is its admin; she owns the room.
    alice = new_page()
    a = alice.page
    register_in_browser(a, server, "alice", "Alice Liddell")
    bob = new_page()
    b = bob.page
    register_in_browser(b, server, "bob", "Bob Builder")
    carol_http, carol_keys, carol = python_member(server, "carol")
    dave_http, dave_keys, dave = python_member(server, "dave")

    # Alice's second device (Python, never online) makes the private room and its first
    # key, adds the three others and seals the key for every member's device.
    made = make_room(server, [session_of(b)["user_id"], carol["user_id"], dave["user_id"]])
    room, key1, devices = made.room, made.key1, made.devices

    # Both pages show the room, with its name, and write in it with version 1.
    for page in (a, b):
        link = channels(page).get_by_role("link", name=re.compile("team"))
        expect(link).to_be_visible()
        link.click()
        expect(page.get_by_label("Message", exact=True)).to_be_enabled()
    send(a, "v1 from Alice")
    send(b, "v1 from Bob")
    assert key_of(carol_http, carol_keys, room) == key1
    dave_key = key_of(dave_http, dave_keys, room)
    assert dave_key == key1
    with socket_of(server, carol_http) as ws:
        post_message(ws, room, key1, "v1 from Carol", 1)
        for page in (a, b):
            expect(texts(page).filter(has_text="v1 from Carol")).to_be_visible()

    # Every envelope upload of both pages, from here on.
    uploads: list[dict[str, Any]] = []
    for page in (a, b):
        page.on(
            "request",
            lambda r: (
                uploads.append(json.loads(r.post_data or "{}"))
                if r.method == "POST" and r.url.endswith("/channels/keys")
                else None
            ),
        )
    # A page handing the room's old key on to Dave's device while his removal is on its
    # way is refused (403 not_a_member_device): the server's guard, allowed here; what
    # matters is checked below (no envelope of version 2 for him, made or tried).
    for watched in (alice, bob):
        watched.allowed_failures.append(re.compile(r"POST /channels/keys 403$"))

    # Dave stays connected with a raw client: after his removal nothing of the room reaches it.
    sockets = ExitStack()
    dave_ws = sockets.enter_context(socket_of(server, dave_http))

    # Alice's page removes Dave; the server asks for a new key and her page makes it, by
    # itself: POST /channels/rotate, then envelopes of version 2 for the others' devices.
    with (
        a.expect_response(lambda r: r.url.endswith("/channels/rotate") and r.status == 200),
        a.expect_response(lambda r: r.url.endswith("/channels/keys") and new_version(r)) as handed,
        a.expect_response(
            lambda r: (
                r.url.endswith("/channels") and r.request.method == "PATCH" and r.status == 200
            )
        ),
    ):
        remove_from_page(a, room, dave["user_id"])
    posted = json.loads(handed.value.request.post_data or "{}")
    recipients = {e["device_id"] for e in posted["envelopes"]}
    dave_devices = {d["device_id"] for d in devices if d["user_id"] == dave["user_id"]}
    assert recipients, posted
    assert not recipients & dave_devices
    assert {e["key_version"] for e in posted["envelopes"]} == {2}

    # The room is at version 2; Carol's Python client checks the page's key against the
    # commitment (key_of refuses any other), and it is a new key.
    (row,) = [c for c in carol_http.get("/channels").json()["channels"] if c["id"] == room]
    assert row["key_version"] == 2
    assert row["rekey_required"] is False
    key2 = key_of(carol_http, carol_keys, room)
    assert key2 != key1
    assert commitment(key2) == row["key_commitment"]
    # The page sealed the room's name again with the new key.
    assert open_sealed(key2, row["name_enc"]) == b"team"
    # Older history stays readable: version 1's key, against version 1's commitment.
    assert key_of(carol_http, carol_keys, room, version=1) == key1

    # Version 2 from the pages and from Python; every page reads all of it.
    send(a, "v2 from Alice")
    sends = [json.loads(f) for f in alice.frames_sent if '"channel.message.send"' in f]
    assert [f.get("key_version", 1) for f in sends if f["channel_id"] == room] == [1, 2]
    send(b, "v2 from Bob")
    with socket_of(server, carol_http) as ws:
        post_message(ws, room, key2, "v2 from Carol", 2)
        for page in (a, b):
            expect(texts(page).filter(has_text="v2 from Carol")).to_be_visible()
    for page in (a, b):
        for text in (
            "v1 from Alice",
            "v1 from Bob",
            "v1 from Carol",
            "v2 from Alice",
            "v2 from Bob",
        ):
            expect(texts(page).filter(has_text=text)).to_be_visible()

    # Carol (Python) reads the whole history too, each message with the key of its version.
    history = carol_http.get("/channels/messages", params={"channel_id": room, "limit": 50}).json()
    by_version = {1: key1, 2: key2}
    read = [
        open_sealed(by_version[m.get("key_version", 1)], m["body"]).decode()
        for m in history["messages"]
    ]
    assert sorted(read) == sorted(
        [
            "v1 from Alice",
            "v1 from Bob",
            "v1 from Carol",
            "v2 from Alice",
            "v2 from Bob",
            "v2 from Carol",
        ]
    )
    later = [m for m in history["messages"] if m.get("key_version", 1) == 2]
    assert len(later) == 3

    # Dave: the room is gone for him on every route, no envelope of version 2 was ever
    # made for his device, and his old key opens nothing said after.
    assert all(c["id"] != room for c in dave_http.get("/channels").json()["channels"])
    assert dave_http.get("/channels/messages", params={"channel_id": room}).status_code == 404
    assert (
        dave_http.get(
            "/channels/keys", params={"channel_id": room, "all": 1, "key_version": 2}
        ).status_code
        == 404
    )
    with sqlite3.connect(server.db_path) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM channel_key_envelopes WHERE channel_id = ? AND key_version = 2"
            f" AND device_id IN ({','.join('?' * len(dave_devices))})",
            [room, *dave_devices],
        ).fetchone()
    assert count == 0
    # Nor did any page try to make one: no upload of version 2 names his device.
    assert not [
        e
        for body in uploads
        for e in body.get("envelopes", [])
        if e.get("key_version") == 2 and e["device_id"] in dave_devices
    ]
    for m in later:
        with pytest.raises(InvalidTag):
            open_sealed(dave_key, m["body"])
    # His raw socket got the removal, then nothing of the room: a public announcement
    # after everything above arrives, and no message of the room came before it.
    announced = httpx.post(
        f"{server.base}/admin/announce",
        headers={"X-Admin-Token": ADMIN_TOKEN},
        json={"text": "end of test"},
        timeout=20,
    )
    assert announced.status_code == 200, announced.text
    got = frames_until(dave_ws, lambda e: e.get("type") == "server.announcement")
    sockets.close()
    assert any(e.get("type") == "channel.member.removed" for e in got)
    assert not [
        e for e in got if e.get("type") == "channel.message.new" and e.get("channel_id") == room
    ]

    # Bob's page again after a reload: both versions' keys kept on the device.
    b.reload()
    expect(b.locator(".conn")).to_have_text("Connected")
    channels(b).get_by_role("link", name=re.compile("team")).click()
    for text in ("v1 from Alice", "v1 from Carol", "v2 from Alice", "v2 from Carol"):
        expect(texts(b).filter(has_text=text)).to_be_visible()
    carol_http.close()
    dave_http.close()
    made.owner_http.close()


def test_the_key_backup_holds_every_version_of_a_rotated_room(
    server: WebServer, new_page: Any
) -> None:
    first = new_page()
    first.allowed_failures.append(NO_BACKUP_YET)
    a = first.page
    recovery_key = sign_up_with_backup(a, server, "alice", "Alice Liddell")
    bob_http, _, bob = python_member(server, "bob")
    made = make_room(server, [bob["user_id"]])
    room = made.room
    link = channels(a).get_by_role("link", name=re.compile("team"))
    expect(link).to_be_visible()
    link.click()
    expect(a.get_by_label("Message", exact=True)).to_be_enabled()
    send(a, "before Bob left")
    with socket_of(server, bob_http) as ws:
        post_message(ws, room, made.key1, "Bob, with version 1", 1)
        expect(texts(a).filter(has_text="Bob, with version 1")).to_be_visible()

    # Bob is removed from Alice's page; it rotates; she writes with version 2.
    with (
        a.expect_response(lambda r: r.url.endswith("/channels/rotate") and r.status == 200),
        a.expect_response(lambda r: r.url.endswith("/channels/keys") and new_version(r)),
    ):
        remove_from_page(a, room, bob["user_id"])
    send(a, "after Bob left")
    key2 = key_of(made.owner_http, made.owner_keys, room)

    # The backup holds both versions, as the Python client of the backup reads it.
    sync_backup(a)
    blob = made.owner_http.get("/keys/backup").json()["backup"]
    held = open_backup(blob, Secret(recovery_key=parse_recovery_key(recovery_key)))
    assert held.channels[room] == {"1": made.key1, "2": key2}

    # A fresh browser with every other device closed: restored, it reads all of it.
    a.close()
    fresh = new_page()
    page = fresh.page
    sign_in(page, server, "alice")
    page.get_by_role("button", name="Restore from your recovery key").click()
    page.get_by_label("Recovery key or passphrase").fill(recovery_key)
    page.get_by_role("button", name="Restore keys").click()
    expect(page.locator("#restore-done")).to_contain_text("Restored")
    channels(page).get_by_role("link", name=re.compile("team")).click()
    for text in ("before Bob left", "Bob, with version 1", "after Bob left"):
        expect(texts(page).filter(has_text=text)).to_be_visible()
    send(page, "from the restored browser")
    bob_http.close()
    made.owner_http.close()


def test_two_owners_pages_rotate_once_and_both_write_with_the_new_key(
    server: WebServer, new_page: Any
) -> None:
    alice = new_page()
    a = alice.page
    register_in_browser(a, server, "alice", "Alice Liddell")
    bob = new_page()
    b = bob.page
    register_in_browser(b, server, "bob", "Bob Builder")
    carol_http, _, carol = python_member(server, "carol")
    bob_id = session_of(b)["user_id"]
    made = make_room(server, [bob_id, carol["user_id"]])
    room = made.room
    # Bob owns the room too: both pages answer the rotation request.
    promoted = made.owner_http.post(
        "/channels/members", json={"channel_id": room, "user_id": bob_id, "role": "owner"}
    )
    assert promoted.status_code in (200, 201), promoted.text
    rotations: list[int] = []
    for watched in (alice, bob):
        # Of two owners' pages racing, the server lets one win; the other's 409 is the
        # documented answer, after which it takes the winner's key.
        watched.allowed_failures.append(re.compile(r"POST /channels/rotate 409$"))
        watched.page.on(
            "response",
            lambda r: rotations.append(r.status) if r.url.endswith("/channels/rotate") else None,
        )
    for page in (a, b):
        link = channels(page).get_by_role("link", name=re.compile("team"))
        expect(link).to_be_visible()
        link.click()
        expect(page.get_by_label("Message", exact=True)).to_be_enabled()
    send(a, "before Carol left")

    # Carol leaves (a raw client): both owners' pages hear it.
    left = carol_http.delete(
        "/channels/members", params={"channel_id": room, "user_id": carol["user_id"]}
    )
    assert left.status_code == 204, left.text
    # Both pages come to hold version 2 (one made it, the other took it), then each
    # writes with it and reads the other's.
    for page in (a, b):
        holds_version(page, room, 2)
    for watched, text in ((alice, "Alice, version 2"), (bob, "Bob, version 2")):
        send(watched.page, text)
        sends = [json.loads(f) for f in watched.frames_sent if '"channel.message.send"' in f]
        assert sends[-1].get("key_version") == 2, sends[-1]
    for page in (a, b):
        for text in ("before Carol left", "Alice, version 2", "Bob, version 2"):
            expect(texts(page).filter(has_text=text)).to_be_visible()
    (row,) = [c for c in made.owner_http.get("/channels").json()["channels"] if c["id"] == room]
    assert row["key_version"] == 2
    assert rotations.count(200) == 1, rotations
    assert key_of(made.owner_http, made.owner_keys, room) is not None
    carol_http.close()
    made.owner_http.close()
