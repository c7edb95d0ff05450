"""The admin page's first screen shows the headline figures (users online, open
connections, messages per minute), and its settings are grouped, labelled in words
with units and help, aligned, and still saved. A module of its own: its server's first
account is the admin."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import expect

from tests.conftest import ADMIN_TOKEN
from tests.web.conftest import WebServer, register_in_browser
from tests.web.test_admin import unnamed


def test_headline_figures_and_grouped_settings(server: WebServer, new_page: Any) -> None:
    a = new_page().page
    register_in_browser(a, server, "queen", "Queen of Hearts")
    a.get_by_label("New channel name").fill("croquet")
    a.get_by_label("New channel name").press("Enter")
    expect(a.get_by_role("heading", name="# croquet")).to_be_visible()
    a.get_by_label("Message", exact=True).fill("Off with his head!")
    a.get_by_label("Message", exact=True).press("Enter")
    expect(a.locator(".msg").filter(has_text="Off with his head!")).to_be_visible()

    a.get_by_role("link", name="Admin").click()
    expect(a.get_by_role("heading", name="Server administration")).to_be_visible()
    figures = {"Users online": "1", "Open connections": "1", "Messages per minute": "1"}
    for label, value in figures.items():
        figure = a.get_by_role("group", name=label)
        expect(figure.locator(".figure-value")).to_have_text(value)
        # On the first screen, without scrolling.
        expect(figure).to_be_in_viewport()

    groups = {
        "Registration": [("Registration open", None), ("Link lifetime", "seconds")],
        "Limits": [
            ("Chat messages per second", "per second"),
            ("Connections per address", "at once"),
        ],
        "Retention": [("Keep messages for", "days"), ("Keep the server log for", "days")],
    }
    for title, settings in groups.items():
        group = a.get_by_role("group", name=title)
        expect(group).to_be_visible()
        for label, unit in settings:
            field = group.get_by_label(label, exact=True)
            expect(field).to_be_visible()
            if unit is not None:
                expect(field.locator("xpath=..").locator(".unit")).to_have_text(unit)
    # Help text is the field's description, for screen readers too.
    expect(a.get_by_label("Keep messages for", exact=True)).to_have_accessible_description(
        "Older messages are deleted; 0 keeps them forever."
    )
    # Aligned: every field of a group starts at the same x.
    limits = a.get_by_role("group", name="Limits").locator("input")
    lefts = {round(limits.nth(i).bounding_box()["x"]) for i in range(limits.count())}
    assert len(lefts) == 1, lefts
    # No raw setting names left as labels.
    expect(a.get_by_text("message_retention_days", exact=True)).to_have_count(0)
    assert unnamed(a) == []

    # The grouped form still saves.
    a.get_by_label("Keep messages for", exact=True).fill("30")
    a.get_by_role("button", name="Save settings").click()
    expect(a.get_by_label("Keep messages for", exact=True)).to_have_value("30")
    saved = httpx.get(
        f"{server.base}/admin/settings", headers={"X-Admin-Token": ADMIN_TOKEN}, timeout=10
    )
    assert saved.json()["settings"]["message_retention_days"] == 30
