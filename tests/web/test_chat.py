"""Two people in two browsers: register from invite links, a channel, messages both ways,
presence, history after a reload; only ciphertext in the database and on the WebSocket."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import PASSWORD, WebServer, register_in_browser


def stored_bytes(server: WebServer) -> bytes:
    # The database file and its write-ahead log: whatever the server keeps on disk.
    return b"".join(p.read_bytes() for p in sorted(server.data_dir.glob("dialtone.db*")))


def channel_link(page: Any, name: str) -> Any:
    return page.get_by_role("navigation", name="Channels").get_by_role("link", name=name)


def messages(page: Any) -> Any:
    return page.locator("ol.messages li.msg")


def send(page: Any, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")


def screenshots_dir(tmp_path: Path) -> Path:
    """`make screenshots` sets DIALTONE_SCREENSHOTS=docs; otherwise they go to a temp dir."""
    return Path(os.environ.get("DIALTONE_SCREENSHOTS") or tmp_path)


def test_two_people_chat_end_to_end(server: WebServer, new_page: Any, tmp_path: Path) -> None:
    alice = new_page()
    register_in_browser(alice.page, server, "alice", "Alice Liddell")
    a = alice.page
    a.get_by_label("New channel name").fill("tea party")
    a.get_by_role("button", name="Create channel").click()
    expect(a.get_by_role("heading", name="# tea party")).to_be_visible()

    bob = new_page()
    register_in_browser(bob.page, server, "bob", "Bob Builder")
    b = bob.page
    # Bob's device joined after the channel was made: Alice's client wraps the key for it.
    expect(channel_link(b, "tea party")).to_be_visible()
    channel_link(b, "tea party").click()
    expect(b.get_by_role("heading", name="# tea party")).to_be_visible()

    # Presence and decrypted display names, both ways.
    expect(a.locator(".people li.online", has_text="Bob Builder")).to_be_visible()
    expect(b.locator(".people li.online", has_text="Alice Liddell")).to_be_visible()

    send(a, "Have some wine, said the March Hare")
    expect(messages(b).filter(has_text="Have some wine")).to_contain_text("Alice Liddell")
    expect(a.locator("li.msg[data-status=sent]", has_text="Have some wine")).to_be_visible()
    send(b, "I don't see any wine")
    expect(messages(a).filter(has_text="I don't see any wine")).to_contain_text("Bob Builder")
    expect(messages(b)).to_have_count(2)

    # History after a reload, from the server, decrypted with the stored keys.
    b.reload()
    expect(b.locator(".conn")).to_have_text("Connected")
    expect(b.locator("ol.messages li.msg .text")).to_have_text(
        ["Have some wine, said the March Hare", "I don't see any wine"]
    )

    # Unread count for a channel that is not open.
    b.goto(f"{server.base}/#/devices")
    expect(b.get_by_role("heading", name="You and your devices")).to_be_visible()
    send_from = "Then it wasn't very civil of you to offer it"
    send(a, send_from)
    expect(channel_link(b, "tea party, 1 unread")).to_be_visible()
    channel_link(b, "tea party, 1 unread").click()
    expect(messages(b).last).to_contain_text(send_from)
    expect(channel_link(b, "tea party")).to_be_visible()

    plaintexts = [
        "tea party",
        "Have some wine",
        "I don't see any wine",
        "civil of you",
        "Alice Liddell",
        "Bob Builder",
    ]
    on_disk = stored_bytes(server)
    for text in plaintexts:
        assert text.encode() not in on_disk, f"{text!r} is stored in clear"
    frames = alice.frames_sent + alice.frames_received + bob.frames_sent + bob.frames_received
    assert any('"channel.message.send"' in f for f in alice.frames_sent)
    assert any('"channel.message.new"' in f for f in bob.frames_received)
    for frame in frames:
        for text in plaintexts:
            assert text not in frame, f"{text!r} crossed the WebSocket in clear: {frame[:200]}"
    # What was sent is what is stored: the server keeps the sealed body byte for byte.
    bodies = [json.loads(f)["body"] for f in alice.frames_sent if '"channel.message.send"' in f]
    assert len(bodies) == 2
    for body in bodies:
        assert body.encode() in on_disk

    # Alice on a phone: a second device; her first browser shares the keys with it.
    phone = new_page(viewport={"width": 390, "height": 760}, is_mobile=True, has_touch=True)
    p = phone.page
    p.goto(f"{server.base}/")
    p.get_by_label("Username").fill("alice")
    p.get_by_label("Password").fill(PASSWORD)
    p.get_by_role("button", name="Sign in").click()
    expect(p.locator(".conn")).to_have_text("Connected")
    phone_texts = p.locator("ol.messages li.msg .text")
    expect(phone_texts.last).to_have_text(send_from, timeout=15_000)
    expect(p.get_by_role("heading", name="# tea party")).to_be_visible()
    expect(p.locator("li.msg", has_text="I don't see any wine")).to_contain_text("Bob Builder")

    shots = screenshots_dir(tmp_path)
    a.bring_to_front()
    a.screenshot(path=shots / "screenshot.png")
    p.screenshot(path=shots / "screenshot-phone.png")

    # The phone lists Alice's devices and removes the first browser: it is signed out.
    p.get_by_role("button", name="Show channels").click()
    p.get_by_role("link", name="alice").click()
    devices = p.get_by_role("list", name="Your devices").get_by_role("listitem")
    expect(devices).to_have_count(2)
    p.get_by_role("button", name=re.compile(r"^Remove device ")).click()
    expect(devices).to_have_count(1)
    expect(a.get_by_text("This device was signed out.")).to_be_visible()
