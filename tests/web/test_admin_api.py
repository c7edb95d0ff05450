"""The admin pages on a server with the /admin API: overview, people, bans, invites,
announcements, settings and log, and message deletion, driven in the browser."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import ADMIN_TOKEN
from tests.web.conftest import WebServer, register_in_browser


def test_admin_pages_manage_the_server(server: WebServer, new_page: Any) -> None:
    stats = httpx.get(f"{server.base}/admin/stats", headers={"X-Admin-Token": ADMIN_TOKEN})
    if stats.status_code == 404:
        pytest.skip("this server has no /admin API yet (it comes with the admin work)")
    admin = new_page()
    a = admin.page
    register_in_browser(a, server, "queen", "Queen of Hearts")
    a.get_by_label("New channel name").fill("court")
    a.get_by_label("New channel name").press("Enter")
    expect(a.get_by_role("heading", name="# court")).to_be_visible()

    member = new_page()
    m = member.page
    register_in_browser(m, server, "knave", "Knave of Hearts")
    m.get_by_role("link", name="court").click()
    m.get_by_label("Message", exact=True).fill("I did not steal the tarts")
    m.get_by_label("Message", exact=True).press("Enter")
    mine = m.locator("li.msg[data-status=sent]", has_text="tarts")
    expect(mine).to_be_visible()

    # The sender deletes their own message; everyone's view drops it.
    expect(a.locator("li.msg", has_text="tarts")).to_be_visible()
    mine.hover()
    mine.get_by_role("button", name="Delete message from Knave of Hearts").click()
    expect(m.locator("li.msg", has_text="tarts")).to_have_count(0)
    expect(a.locator("li.msg", has_text="tarts")).to_have_count(0)
    # A member has no admin page.
    expect(m.get_by_role("link", name="Admin")).to_be_hidden()

    a.get_by_role("link", name="Admin").click()
    overview = a.get_by_role("region", name="Overview")
    expect(overview).to_contain_text("2 accounts")
    people = a.get_by_role("region", name="People")
    knave_row = people.get_by_role("row").filter(has_text="Knave of Hearts")
    expect(knave_row).to_contain_text("member")
    # Each row shows the user id the admin CLI takes, as text to copy.
    knave_id = knave_row.get_attribute("data-user-id")
    assert knave_id
    expect(knave_row.locator("code.user-id")).to_have_text(knave_id)

    # An announcement reaches the member, marked as not end-to-end encrypted.
    a.get_by_label("Announcement text").fill("The trial begins at noon")
    a.get_by_role("button", name="Send announcement").click()
    expect(m.locator(".announcement")).to_contain_text("not end-to-end encrypted")
    expect(m.locator(".announcement")).to_contain_text("The trial begins at noon")

    # Roles: the knave becomes a moderator and sees the admin page's people and bans.
    knave_row.get_by_role("button", name="Make moderator Knave of Hearts").click()
    expect(knave_row).to_contain_text("moderator")

    # Invites made here are listed and can be revoked.
    a.get_by_role("button", name="Create invite link").click()
    invites = a.get_by_role("region", name="Invites")
    expect(invites.get_by_role("row").filter(has_text="active")).to_have_count(1)
    invites.get_by_role("button", name="Revoke the invite made").click()
    expect(invites.get_by_role("row").filter(has_text="revoked")).to_have_count(1)

    # A ban ends the knave's connection and shows in the list; lifting it clears it.
    knave_row.get_by_role("button", name="Ban Knave of Hearts").click()
    bans = a.get_by_role("region", name="Bans")
    expect(bans.get_by_role("row").filter(has_text="Knave of Hearts")).to_have_count(1)
    expect(m.get_by_role("heading", name="Sign in to Dialtone")).to_be_visible()
    expect(m.get_by_text("You are banned from this server.")).to_be_visible()
    bans.get_by_role("button", name="Lift the ban on Knave of Hearts").click()
    expect(bans).to_contain_text("No active bans.")

    log = a.get_by_role("region", name="Server log")
    expect(log.get_by_role("row").nth(1)).to_be_visible()
    settings = a.get_by_role("region", name="Settings")
    expect(settings.get_by_role("button", name="Save settings")).to_be_visible()
