"""Issue 16 in the browser, as people would use it: a direct message two people share and
a third can neither see nor find, do-not-disturb greying out the DM button, a private
room made, joined, read and left, blocking hiding someone's messages, /sync catching a
page up after its socket was down, and all of it on a phone-sized screen."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.web.conftest import WebServer, register_in_browser, start_server, stop_server
from tests.web.test_phone import assert_fits

REFUSED = "This person does not accept direct messages from you."


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebServer]:
    live = start_server(tmp_path)
    yield live
    stop_server(live)


def channels(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Channels")


def directs(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Direct messages")


def people(page: Page) -> Locator:
    return page.get_by_role("list", name="People")


def send(page: Page, text: str) -> None:
    composer = page.get_by_label("Message", exact=True)
    composer.fill(text)
    composer.press("Enter")
    expect(page.locator("li.msg[data-status=sent]", has_text=text)).to_be_visible()


def texts(page: Page) -> Locator:
    return page.locator("ol.messages li.msg .text")


def session_of(page: Page) -> dict[str, Any]:
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


def raw_client(server: WebServer, page: Page) -> httpx.Client:
    """The page's own session over plain HTTP: what a raw client of that user sees."""
    token = session_of(page)["token"]
    return httpx.Client(
        base_url=server.base, timeout=20, headers={"Authorization": f"Bearer {token}"}
    )


def make_channel(page: Page, name: str, *, private: bool = False) -> None:
    page.get_by_label(re.compile(r"^New (channel|private room) name$")).fill(name)
    toggle = page.get_by_label("Private: members only")
    if private and toggle.count():
        toggle.check()
    page.get_by_role("button", name=re.compile(r"^Create (channel|private room)$")).click()
    mark = "🔒" if private else "#"
    expect(page.get_by_role("heading", name=f"{mark} {name}")).to_be_visible()


def open_card(page: Page, name: str) -> Locator:
    people(page).get_by_role("button", name=f"About {name}").click()
    card = page.get_by_role("dialog")
    expect(card.get_by_role("heading", name=name)).to_be_visible()
    return card


def test_a_direct_message_that_a_third_person_cannot_see_or_find(
    server: WebServer, new_page: Any
) -> None:
    a = new_page().page
    register_in_browser(a, server, "alice", "Alice Liddell")
    b = new_page().page
    register_in_browser(b, server, "bob", "Bob Builder")
    c = new_page().page
    register_in_browser(c, server, "carol", "Carol Cat")
    expect(people(a).get_by_text("Bob Builder")).to_be_visible()

    # Alice opens the conversation from the people list and writes.
    people(a).get_by_role("button", name="Direct message to Bob Builder").click()
    expect(a.get_by_role("heading", name="@ Bob Builder")).to_be_visible()
    send(a, "Meet me by the rabbit hole")

    # Bob's "Direct messages" section names it after Alice, with its unread count.
    expect(directs(b).get_by_role("link", name="Alice Liddell, 1 unread")).to_be_visible()
    directs(b).get_by_role("link", name=re.compile("^Alice Liddell")).click()
    expect(b.get_by_role("heading", name="@ Alice Liddell")).to_be_visible()
    expect(texts(b)).to_have_text(["Meet me by the rabbit hole"])
    send(b, "On my way")
    expect(texts(a)).to_have_text(["Meet me by the rabbit hole", "On my way"])
    # Not a channel: DMs stay out of the channel list.
    expect(channels(a).get_by_role("link")).to_have_count(0)

    # Carol: nothing in her page...
    expect(directs(c).get_by_role("link")).to_have_count(0)
    expect(channels(c).get_by_role("link")).to_have_count(0)
    # ...and nothing for a raw client with her session either.
    dm_id = a.evaluate("location.hash.slice(4)")
    with raw_client(server, c) as carol:
        assert carol.get("/channels").json()["channels"] == []
        for path, params in [
            ("/channels/messages", {"channel_id": dm_id}),
            ("/channels/members", {"channel_id": dm_id}),
            ("/channels/keys", {"channel_id": dm_id}),
        ]:
            response = carol.get(path, params=params)
            assert response.status_code == 404, (path, response.text)
        synced = carol.post("/sync", json={"channels": [{"channel_id": dm_id}]}).json()
        assert synced["gone"] == [dm_id]
        assert synced["added"] == []
    # Both sides read the whole conversation after a reload.
    b.reload()
    expect(b.locator(".conn")).to_have_text("Connected")
    directs(b).get_by_role("link", name=re.compile("^Alice Liddell")).click()
    expect(texts(b)).to_have_text(["Meet me by the rabbit hole", "On my way"])


def test_do_not_disturb_greys_out_the_dm_button(server: WebServer, new_page: Any) -> None:
    e = new_page().page
    register_in_browser(e, server, "erin", "Erin Eaglet")
    f = new_page().page
    register_in_browser(f, server, "frank", "Frank Frog")
    button = people(f).get_by_role("button", name="Direct message to Erin Eaglet")
    expect(button).to_be_enabled()

    e.get_by_role("link", name="erin", exact=True).click()
    e.get_by_label("Nobody: do not disturb").check()
    expect(e.get_by_text("Saved.")).to_be_visible()
    e.reload()
    expect(e.get_by_label("Nobody: do not disturb")).to_be_checked()

    # Frank looks at Erin: the card and the people list grey the button out, and say why.
    card = open_card(f, "Erin Eaglet")
    expect(card.get_by_role("button", name="Send a direct message")).to_be_disabled()
    expect(card.get_by_text(REFUSED)).to_be_visible()
    card.get_by_role("button", name="Close").click()
    expect(button).to_be_disabled()
    expect(button).to_have_attribute("title", REFUSED)
    # The server agrees: a raw call is refused with the code the page has a sentence for.
    with raw_client(server, f) as frank:
        erin_id = session_of(e)["user_id"]
        refused = frank.post("/channels/direct", json={"user_id": erin_id})
        assert refused.status_code == 403
        assert refused.json()["code"] == "direct_messages_refused"

    # Back to "anyone": after a reload Frank may write again.
    e.get_by_label("Anyone may message me").check()
    expect(e.get_by_text("Saved.")).to_be_visible()
    f.reload()
    expect(f.locator(".conn")).to_have_text("Connected")
    expect(people(f).get_by_role("button", name="Direct message to Erin Eaglet")).to_be_enabled()


def test_a_private_room_made_joined_read_and_left(server: WebServer, new_page: Any) -> None:
    admin = new_page().page
    register_in_browser(admin, server, "queen", "Queen of Hearts")
    b = new_page().page
    register_in_browser(b, server, "bob", "Bob Builder")
    c = new_page().page
    register_in_browser(c, server, "carol", "Carol Cat")
    d = new_page().page
    register_in_browser(d, server, "dave", "Dave Dodo")

    # Bob, an ordinary member, makes a private room and writes before anyone else is in.
    make_channel(b, "plotting", private=True)
    send(b, "Nobody else reads this yet")
    expect(channels(b).get_by_role("link", name=re.compile("^plotting"))).to_be_visible()

    # He adds Carol from the people list: the room appears for her, with its history.
    card = open_card(b, "Carol Cat")
    card.get_by_label("Private room").select_option(label="plotting")
    card.get_by_role("button", name="Add to room").click()
    expect(card.get_by_text("Carol Cat was added to plotting.")).to_be_visible()
    card.get_by_role("button", name="Close").click()
    expect(channels(c).get_by_role("link", name=re.compile("^plotting"))).to_be_visible()
    channels(c).get_by_role("link", name=re.compile("^plotting")).click()
    expect(c.get_by_role("heading", name="🔒 plotting")).to_be_visible()
    expect(texts(c)).to_have_text(["Nobody else reads this yet"])
    send(c, "Carol reads it")
    expect(texts(b)).to_have_text(["Nobody else reads this yet", "Carol reads it"])

    # And Dave from the room's member list; then removes him again.
    b.get_by_role("button", name="Members of plotting").click()
    members = b.get_by_role("dialog").get_by_role("list", name="Members")
    expect(members.get_by_role("listitem")).to_have_count(2)
    b.get_by_role("dialog").get_by_label("Invite").select_option(label="Dave Dodo")
    b.get_by_role("dialog").get_by_role("button", name="Add to the room").click()
    expect(members.get_by_role("listitem")).to_have_count(3)
    channels(d).get_by_role("link", name=re.compile("^plotting")).click()
    expect(texts(d)).to_have_text(["Nobody else reads this yet", "Carol reads it"])
    b.get_by_role("dialog").get_by_role("button", name="Remove Dave Dodo from the room").click()
    expect(members.get_by_role("listitem")).to_have_count(2)
    b.get_by_role("dialog").get_by_role("button", name="Close").click()
    expect(channels(d).get_by_role("link")).to_have_count(0)

    # The admin, not a member, never sees it.
    expect(channels(admin).get_by_role("link", name=re.compile("plotting"))).to_have_count(0)

    # Carol leaves: the room goes from her page; Bob's list follows.
    c.get_by_role("button", name="Leave plotting").click()
    c.get_by_role("dialog").get_by_role("button", name="Leave room").click()
    expect(channels(c).get_by_role("link")).to_have_count(0)
    b.get_by_role("button", name="Members of plotting").click()
    expect(
        b.get_by_role("dialog").get_by_role("list", name="Members").get_by_role("listitem")
    ).to_have_count(1)


def test_blocking_hides_someones_messages(server: WebServer, new_page: Any) -> None:
    a = new_page().page
    register_in_browser(a, server, "alice", "Alice Liddell")
    make_channel(a, "tea party")
    b = new_page().page
    register_in_browser(b, server, "bob", "Bob Builder")
    channels(b).get_by_role("link", name="tea party").click()
    expect(b.get_by_role("heading", name="# tea party")).to_be_visible()
    send(b, "Have some wine")
    expect(texts(a)).to_have_text(["Have some wine"])

    card = open_card(a, "Bob Builder")
    card.get_by_role("button", name="Block Bob Builder").click()
    expect(card.get_by_role("button", name="Unblock Bob Builder")).to_be_visible()
    card.get_by_role("button", name="Close").click()
    expect(texts(a)).to_have_count(0)
    # What he writes now does not reach her, and history hides it too.
    send(b, "I don't see any wine")
    send(a, "There isn't any")
    expect(texts(b)).to_have_text(["Have some wine", "I don't see any wine", "There isn't any"])
    expect(texts(a)).to_have_text(["There isn't any"])
    a.reload()
    expect(a.locator(".conn")).to_have_text("Connected")
    expect(texts(a)).to_have_text(["There isn't any"])

    # Her page lists him; unblocking shows his messages again.
    a.get_by_role("link", name="alice", exact=True).click()
    blocked = a.get_by_role("list", name="Blocked people")
    expect(blocked).to_contain_text("Bob Builder")
    blocked.get_by_role("button", name="Unblock Bob Builder").click()
    expect(blocked).to_contain_text("You have blocked nobody.")
    channels(a).get_by_role("link", name="tea party").click()
    expect(texts(a)).to_have_text(["Have some wine", "I don't see any wine", "There isn't any"])


SOCKET = """async (what) => {
  const src = document.querySelector("script[type=module]").src;
  const { currentClient } = await import(new URL("client.js", src).href);
  const socket = currentClient().socket;
  if (what === "close") socket.close(); else socket.connect();
}"""


def test_sync_after_the_socket_was_down_fetches_what_was_missed(
    server: WebServer, new_page: Any
) -> None:
    a = new_page().page
    register_in_browser(a, server, "alice", "Alice Liddell")
    make_channel(a, "tea party")
    make_channel(a, "croquet")
    send(a, "First hoop")
    bob = new_page()
    b = bob.page
    register_in_browser(b, server, "bob", "Bob Builder")
    channels(b).get_by_role("link", name="tea party").click()
    expect(b.get_by_role("heading", name="# tea party")).to_be_visible()
    channels(a).get_by_role("link", name="tea party").click()
    send(a, "Have some wine")
    expect(texts(b)).to_have_text(["Have some wine"])
    # A message seen live in croquet (not opened): its place is known for the catch-up.
    channels(a).get_by_role("link", name="croquet").click()
    send(a, "Second hoop")
    expect(channels(b).get_by_role("link", name="croquet, 1 unread")).to_be_visible()

    syncs: list[str] = []
    b.on("request", lambda r: syncs.append(r.post_data or "") if r.url.endswith("/sync") else None)
    b.evaluate(SOCKET, "close")
    expect(b.locator(".conn")).to_have_text("Disconnected")
    channels(a).get_by_role("link", name="tea party").click()
    send(a, "I don't see any wine")
    send(a, "There isn't any")
    channels(a).get_by_role("link", name="croquet").click()
    send(a, "Third hoop")
    expect(texts(b)).to_have_text(["Have some wine"])

    b.evaluate(SOCKET, "connect")
    expect(b.locator(".conn")).to_have_text("Connected")
    expect(texts(b)).to_have_text(["Have some wine", "I don't see any wine", "There isn't any"])
    expect(channels(b).get_by_role("link", name="croquet, 2 unread")).to_be_visible()
    # One call for both channels, from where each had got to.
    assert len(syncs) == 1, syncs
    assert syncs[0].count('"last_message_id":"') == 2, syncs[0]


def test_rooms_and_people_fit_a_phone(server: WebServer, new_page: Any) -> None:
    a = new_page().page
    register_in_browser(a, server, "alice", "Alice Liddell, who went down the rabbit hole")
    phone = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone.allowed_failures.append(re.compile(r"GET /voice/turn 404$"))
    p = phone.page
    register_in_browser(p, server, "bob", "Bob Builder, who builds rather long names")
    menu = p.get_by_role("button", name="Show channels")

    menu.click()
    make_channel(p, "a private room with a long name about treacle wells", private=True)
    send(p, "x" * 200)
    assert_fits(p, "a private room")
    p.get_by_role("button", name=re.compile("^Members of")).click()
    expect(p.get_by_role("dialog").get_by_role("list", name="Members")).to_be_visible()
    assert_fits(p, "the members dialog")
    p.get_by_role("dialog").get_by_role("button", name="Close").click()

    menu.click()
    expect(directs(p)).to_be_visible()
    assert_fits(p, "the side panel with direct messages")
    card = open_card(p, "Alice Liddell, who went down the rabbit hole")
    assert_fits(p, "a person's card")
    card.get_by_role("button", name="Send a direct message").click()
    expect(p.get_by_role("heading", name=re.compile("^@ Alice Liddell"))).to_be_visible()
    send(p, "y" * 200)
    assert_fits(p, "a direct message")

    p.goto(f"{server.base}/#/devices")
    expect(p.get_by_role("group", name="Who may start a direct message with you")).to_be_visible()
    assert_fits(p, "the privacy section")
