"""Display names are sealed with the directory key, which a new account only gets from a
member who holds it. The name typed at sign-up must wait for that key, across a reload."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import WebServer, register_in_browser


def people(page: Any) -> Any:
    return page.get_by_role("list", name="People", exact=True)


def test_the_name_chosen_at_sign_up_survives_a_reload(server: WebServer, new_page: Any) -> None:
    """Bob signs up while nobody holding the directory key is online, so his name cannot be
    sealed yet, and reloads the page. When Alice comes back and shares the key, the name he
    chose is the one both of them see, not his username."""
    alice = new_page()
    register_in_browser(alice.page, server, "alice", "Alice Liddell")
    # The server's first member makes the directory key and seals her own name with it.
    expect(people(alice.page)).to_contain_text("Alice Liddell (you)")
    alice.page.goto("about:blank")  # Alice goes offline

    bob = new_page()
    register_in_browser(bob.page, server, "bob", "Bob Reloaded")
    # No directory key yet: his own page shows the name waiting to be sealed.
    expect(people(bob.page)).to_contain_text("Bob Reloaded (you)")
    bob.page.reload()
    expect(bob.page.locator(".conn")).to_have_text("Connected")
    expect(people(bob.page)).to_contain_text("Bob Reloaded (you)")
    bob.page.goto(f"{server.base}/#/devices")
    expect(bob.page.get_by_label("Your display name")).to_have_value("Bob Reloaded")

    alice.page.goto(server.base)
    expect(people(alice.page)).to_contain_text("Bob Reloaded")
    expect(people(bob.page)).to_contain_text("Bob Reloaded (you)")
    expect(people(bob.page)).to_contain_text("Alice Liddell")
