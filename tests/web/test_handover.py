"""Issue 15 in Chromium: any member hands channel and directory keys on, checked against
the key commitments; a page without a key says why and fills in by itself; presence and
role changes arrive as events.

Each test has a server of its own: who is the first user (the admin) and who is online
matter here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect
from websockets.sync.client import connect

from tests.conftest import ADMIN_TOKEN
from tests.web.conftest import (
    WebServer,
    python_member,
    register_in_browser,
    start_server,
    stop_server,
)

LOCKED = "this channel's key has not reached this device"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebServer]:
    live = start_server(tmp_path)
    yield live
    stop_server(live)


def channels(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Channels")


def make_channel(page: Page, name: str, first_message: str) -> None:
    page.get_by_label("New channel name").fill(name)
    page.get_by_role("button", name="Create channel").click()
    expect(page.get_by_role("heading", name=f"# {name}")).to_be_visible()
    composer = page.get_by_label("Message", exact=True)
    composer.fill(first_message)
    composer.press("Enter")
    expect(page.locator("li.msg[data-status=sent]", has_text=first_message)).to_be_visible()


def session_of(page: Page) -> dict[str, Any]:
    """The signed-in session the page keeps in IndexedDB (its user and device ids)."""
    session: dict[str, Any] = page.evaluate(
        """async () => {
            const db = await new Promise((ok, fail) => {
              const r = indexedDB.open("dialtone"); r.onsuccess = () => ok(r.result);
              r.onerror = () => fail(r.error);
            });
            return new Promise((ok) => {
              const r = db.transaction("kv").objectStore("kv").get("session");
              r.onsuccess = () => ok(r.result);
            });
        }"""
    )
    return session


def go_away(page: Page) -> None:
    """Close the page's socket as closing its tab would (IndexedDB stays for coming back)."""
    page.goto("about:blank")


def come_back(page: Page, server: WebServer) -> None:
    page.goto(server.base)
    expect(page.locator(".conn")).to_have_text("Connected")


def online(server: WebServer, http: httpx.Client) -> Any:
    """A Python member's socket: online while the block runs."""
    url = f"{server.base.replace('http', 'ws')}/ws"
    return connect(url, additional_headers={"Authorization": http.headers["Authorization"]})


def device_ids(http: httpx.Client) -> set[str]:
    return {d["device_id"] for d in http.get("/devices/keys", params={"all": 1}).json()["keys"]}


def alice_and_bob(server: WebServer, new_page: Any) -> tuple[Page, Page]:
    """Alice (the first account: the admin) makes a channel and writes in it; Bob, an
    ordinary member, joins while she is online and gets every key from her page."""
    a = new_page().page
    register_in_browser(a, server, "alice", "Alice Liddell")
    make_channel(a, "tea party", "Have some wine")
    b = new_page().page
    register_in_browser(b, server, "bob", "Bob Builder")
    expect(channels(b).get_by_role("link", name="tea party")).to_be_visible()
    expect(b.locator(".people li", has_text="Alice Liddell")).to_be_visible()
    return a, b


def test_a_newcomer_reads_everything_while_only_an_ordinary_member_is_online(
    server: WebServer, new_page: Any
) -> None:
    a, b = alice_and_bob(server, new_page)
    a.get_by_label("New channel name").fill("croquet")
    a.get_by_role("button", name="Create channel").click()
    expect(a.get_by_role("heading", name="# croquet")).to_be_visible()
    a.get_by_label("Message", exact=True).fill("Off with their heads")
    a.get_by_label("Message", exact=True).press("Enter")
    expect(channels(b).get_by_role("link", name="croquet")).to_be_visible()

    # The creator and only admin goes away; Bob's page sees it at once (an event).
    go_away(a)
    expect(b.locator(".people li.offline", has_text="Alice Liddell")).to_be_visible()

    # Carol registers while only Bob, an ordinary member, has a page open: his page hands
    # her every key (they match the channels' commitments), and she reads everything.
    c = new_page().page
    with b.expect_response(
        lambda r: r.url.endswith("/channels/keys") and r.request.method == "POST"
    ) as shared:
        register_in_browser(c, server, "carol", "Carol")
    assert shared.value.status == 201
    for name in ("tea party", "croquet"):
        expect(channels(c).get_by_role("link", name=name)).to_be_visible()
    channels(c).get_by_role("link", name="tea party").click()
    expect(c.locator("li.msg", has_text="Have some wine")).to_contain_text("Alice Liddell")
    channels(c).get_by_role("link", name="croquet").click()
    expect(c.locator("li.msg", has_text="Off with their heads")).to_contain_text("Alice Liddell")
    expect(c.locator(".people li", has_text="Alice Liddell")).to_be_visible()
    expect(c.locator(".people li", has_text="Bob Builder")).to_be_visible()
    expect(c.locator(".key-banner")).to_be_hidden()
    expect(c.get_by_label("Message", exact=True)).to_be_enabled()
    # Bob sees Carol's name too: she sealed it with the directory key Bob handed her.
    expect(b.locator(".people li.online", has_text="Carol")).to_be_visible()


def test_alone_a_newcomer_is_told_why_and_fills_in_when_a_member_comes(
    server: WebServer, new_page: Any
) -> None:
    a, b = alice_and_bob(server, new_page)
    go_away(a)
    go_away(b)

    c = new_page().page
    register_in_browser(c, server, "carol", "Carol")
    banner = c.locator(".key-banner")
    expect(banner).to_contain_text(
        "Your keys arrive when another member is online — nobody else is now"
    )
    expect(channels(c).get_by_role("link", name="Channel 1, locked")).to_be_visible()
    composer = c.get_by_label("Message", exact=True)
    expect(composer).to_be_disabled()
    expect(c.locator(".lock-reason")).to_be_visible()
    expect(c.locator(".lock-reason")).to_contain_text(LOCKED)
    expect(c.locator("li.msg").first).to_contain_text("Waiting for the channel key")
    # Alice and Bob, whose names cannot be read yet, are told apart all the same.
    expect(c.locator(".people li", has_text="name locked")).to_have_count(2)

    # The restore action is offered once something (the key backup module) handles it.
    restore = banner.get_by_role("button", name="Restore from your recovery key")
    expect(restore).to_have_count(0)
    c.evaluate(
        """async () => {
            const app = document.querySelector("script[type=module]").src;
            const { currentClient } = await import(app.replace(/app\\.js$/, "client.js"));
            currentClient().on("restore-requested", () => { window.restoreAsked = true; });
        }"""
    )

    # Someone with no keys to give comes online, and leaves: the count follows live.
    dan_http, _, _ = python_member(server, "dan")
    with online(server, dan_http):
        expect(banner).to_contain_text("— 1 is now")
    expect(banner).to_contain_text("— nobody else is now")
    restore.click()
    assert c.evaluate("() => window.restoreAsked") is True
    dan_http.close()

    # Bob comes back: his page hands Carol the keys, and her page fills in by itself.
    come_back(b, server)
    expect(channels(c).get_by_role("link", name="tea party")).to_be_visible()
    expect(c.locator("li.msg", has_text="Have some wine")).to_contain_text("Alice Liddell")
    expect(banner).to_be_hidden()
    expect(composer).to_be_enabled()
    expect(c.locator(".lock-reason")).to_be_hidden()
    expect(c.locator(".people li", has_text="Alice Liddell")).to_be_visible()
    composer.fill("Hello, I am new here")
    composer.press("Enter")
    expect(b.locator("li.msg", has_text="Hello, I am new here")).to_contain_text("Carol")


def test_a_key_that_does_not_match_the_commitment_is_never_used(
    server: WebServer, new_page: Any
) -> None:
    a, b = alice_and_bob(server, new_page)
    mallory_http, mallory_keys, mallory = python_member(server, "mallory")
    go_away(a)
    go_away(b)
    before = device_ids(mallory_http)

    c = new_page().page
    register_in_browser(c, server, "carol", "Carol")
    expect(channels(c).get_by_role("link", name="Channel 1, locked")).to_be_visible()
    (carol_device,) = [
        d
        for d in mallory_http.get("/devices/keys", params={"all": 1}).json()["keys"]
        if d["device_id"] not in before
    ]
    (channel,) = mallory_http.get("/channels").json()["channels"]
    assert channel["key_commitment"]

    # Mallory, a member, hands Carol keys of her own choosing, for the channel and for the
    # directory, first; her page tries them, finds they do not match, and says so once.
    def forged(secret: bytes) -> dict[str, str]:
        return {
            "device_id": carol_device["device_id"],
            "sender_device_id": mallory["device_id"],
            "sender_public_key": mallory_keys.public_b64,
            "envelope": mallory_keys.wrap_for(carol_device["public_key"], secret),
        }

    with (
        c.expect_console_message(lambda m: "refused a channel key envelope" in m.text) as said,
        c.expect_console_message(lambda m: "refused a directory key envelope" in m.text),
    ):
        wrong = {"channel_id": channel["id"], "envelopes": [forged(b"\x42" * 32)]}
        response = mallory_http.post("/channels/keys", json=wrong)
        assert response.status_code == 201, response.text
        response = mallory_http.post("/directory/keys", json={"envelopes": [forged(b"\x43" * 32)]})
        assert response.status_code == 201, response.text
        # Mallory comes online: Carol's page asks again at once.
        with online(server, mallory_http):
            pass
    assert "does not match" in said.value.text
    mallory_http.close()
    expect(channels(c).get_by_role("link", name="Channel 1, locked")).to_be_visible()
    expect(c.get_by_label("Message", exact=True)).to_be_disabled()
    expect(c.locator(".people li", has_text="name locked")).to_have_count(3)

    # Bob's right key does not wait behind Mallory's wrong one.
    come_back(b, server)
    expect(channels(c).get_by_role("link", name="tea party")).to_be_visible()
    expect(c.locator("li.msg", has_text="Have some wine")).to_contain_text("Alice Liddell")
    expect(c.locator(".people li", has_text="Alice Liddell")).to_be_visible()
    expect(c.locator(".key-banner")).to_be_hidden()


def test_roles_and_presence_change_live(server: WebServer, new_page: Any) -> None:
    a, b = alice_and_bob(server, new_page)
    bob_id = session_of(b)["user_id"]
    admin = httpx.Client(base_url=server.base, headers={"X-Admin-Token": ADMIN_TOKEN}, timeout=20)
    bob_in_alices_list = a.locator(f'.people li[data-user-id="{bob_id}"]')
    expect(bob_in_alices_list).to_have_class("online")
    expect(b.get_by_role("link", name="Admin", exact=True)).to_be_hidden()
    expect(b.get_by_label("New channel name")).to_have_count(0)
    expect(bob_in_alices_list.locator(".tag")).to_have_count(0)

    # Promoted while online: his controls appear without a reload, and Alice sees the badge.
    response = admin.patch(f"/admin/users/{bob_id}", json={"is_admin": True})
    assert response.status_code == 200, response.text
    expect(b.get_by_role("link", name="Admin", exact=True)).to_be_visible()
    expect(b.get_by_role("button", name="Rename channel tea party")).to_be_visible()
    expect(bob_in_alices_list.locator(".tag")).to_have_text("admin")
    make_channel(b, "chess", "Your move")
    expect(channels(a).get_by_role("link", name="chess")).to_be_visible()

    # Demoted: gone again, at once.
    response = admin.patch(f"/admin/users/{bob_id}", json={"is_admin": False})
    assert response.status_code == 200, response.text
    expect(b.get_by_label("New channel name")).to_have_count(0)
    expect(b.get_by_role("link", name="Admin", exact=True)).to_be_hidden()
    expect(b.get_by_role("button", name="Rename channel chess")).to_have_count(0)
    expect(bob_in_alices_list.locator(".tag")).to_have_count(0)
    admin.close()

    # Presence: Bob leaving and coming back shows in Alice's page as it happens.
    go_away(b)
    expect(bob_in_alices_list).to_have_class("offline")
    come_back(b, server)
    expect(bob_in_alices_list).to_have_class("online")


def test_a_newcomer_confirms_its_keys_and_a_later_sharer_skips_it(
    server: WebServer, new_page: Any
) -> None:
    """Carol's page seals each key it accepted for itself (GET /keys/held lists it), so
    Alice, coming online after Bob handed Carol the keys, wraps nothing for her."""
    a, b = alice_and_bob(server, new_page)
    go_away(a)
    go_away(b)
    c = new_page().page
    register_in_browser(c, server, "carol", "Carol")
    expect(channels(c).get_by_role("link", name="Channel 1, locked")).to_be_visible()
    carol_device = session_of(c)["device_id"]

    # Bob comes back and hands Carol the keys; her page confirms both (self-envelopes).
    def confirms(path: str) -> Any:
        def sealed_for_herself(response: Any) -> bool:
            request = response.request
            if not (request.url.endswith(path) and request.method == "POST"):
                return False
            items = request.post_data_json["envelopes"]
            return all(e["device_id"] == e["sender_device_id"] == carol_device for e in items)

        return sealed_for_herself

    with (
        c.expect_response(confirms("/channels/keys")) as channel_confirmed,
        c.expect_response(confirms("/directory/keys")) as directory_confirmed,
    ):
        come_back(b, server)
        expect(c.locator("li.msg", has_text="Have some wine")).to_contain_text("Alice Liddell")
    for answer in (channel_confirmed.value, directory_confirmed.value):
        assert answer.status == 201
        assert len(answer.request.post_data_json["envelopes"]) == 1

    dan_http, _, _ = python_member(server, "dan")
    held = dan_http.get("/keys/held", params={"device_id": carol_device})
    assert held.status_code == 200, held.text
    (channel,) = dan_http.get("/channels").json()["channels"]
    expected = {"device_id": carol_device, "channels": [channel["id"]], "directory": True}
    assert held.json() == expected
    dan_http.close()

    # Alice comes online later: her page reads what Carol holds and uploads nothing for her.
    uploads: list[Any] = []
    a.on(
        "request",
        lambda r: (
            uploads.append(r)
            if r.method == "POST" and r.url.endswith(("/channels/keys", "/directory/keys"))
            else None
        ),
    )
    with a.expect_response(lambda r: "/keys/held" in r.url and carol_device in r.url) as asked:
        come_back(a, server)
    assert asked.value.status == 200
    a.evaluate(
        """async () => {
            const app = document.querySelector("script[type=module]").src;
            const { currentClient } = await import(app.replace(/app\\.js$/, "client.js"));
            window.dialtoneClient = currentClient();
        }"""
    )
    # Her hand-on round (the one that read /keys/held) is over.
    a.wait_for_function("() => window.dialtoneClient.sharesDone >= 1")
    for request in uploads:
        targets = {e["device_id"] for e in request.post_data_json["envelopes"]}
        assert carol_device not in targets, request.url
