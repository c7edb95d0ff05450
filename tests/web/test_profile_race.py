"""A page reads everything over HTTP, then opens its WebSocket: an event sent between the
two (here, someone's new display name) must not be lost."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import WebServer, register_in_browser


def people(page: Any) -> Any:
    return page.get_by_role("list", name="People", exact=True)


def test_a_name_changed_while_the_page_loads_is_shown(server: WebServer, new_page: Any) -> None:
    alice, bob = new_page(), new_page()
    register_in_browser(alice.page, server, "alice", "Alice Liddell")
    register_in_browser(bob.page, server, "bob", "Bob Before")
    expect(people(alice.page)).to_contain_text("Bob Before")

    # Alice reloads; her page's channel list request (read after the profiles, before the
    # socket opens) is held until Bob has renamed himself.
    held: list[Any] = []

    def hold(route: Any) -> None:
        if held:
            route.continue_()  # later reads pass
        else:
            held.append(route)

    alice.page.route("**/channels", hold)
    with alice.page.expect_request("**/channels"):
        alice.page.reload()
    bob.page.goto(f"{server.base}/#/devices")
    bob.page.get_by_label("Your display name").fill("Bob After")
    bob.page.get_by_role("button", name="Save", exact=True).click()
    expect(people(bob.page)).to_contain_text("Bob After (you)")

    held[0].continue_()
    expect(alice.page.locator(".conn")).to_have_text("Connected")
    expect(people(alice.page)).to_contain_text("Bob After")
