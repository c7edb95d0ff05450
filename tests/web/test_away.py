"""Keys reach a member who joined while every key holder was offline: when the admin's
browser comes back, it wraps the keys for the devices it has not served yet."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import WebServer, register_in_browser, watch


def test_member_who_joined_while_the_admin_was_away_gets_the_keys(
    server: WebServer, new_page: Any
) -> None:
    admin = new_page()
    register_in_browser(admin.page, server, "queen", "Queen of Hearts")
    admin.page.get_by_label("New channel name").fill("croquet")
    admin.page.get_by_label("New channel name").press("Enter")
    expect(admin.page.get_by_role("heading", name="# croquet")).to_be_visible()
    admin.page.close()  # the only key holder goes offline (its browser keeps its keys)

    member = new_page()
    m = member.page
    register_in_browser(m, server, "knave", "Knave of Hearts")
    channels = m.get_by_role("navigation", name="Channels")
    expect(channels.get_by_role("link", name="Channel 1, locked")).to_be_visible()

    back = watch(admin.context)
    back.page.goto(f"{server.base}/")
    expect(back.page.locator(".conn")).to_have_text("Connected")
    expect(channels.get_by_role("link", name="croquet")).to_be_visible()
    expect(m.get_by_role("heading", name="# croquet")).to_be_visible()
    # The directory key came with it: the member's display name is readable by the admin.
    expect(back.page.locator(".people li", has_text="Knave of Hearts")).to_be_visible()
    assert back.problems() == []
