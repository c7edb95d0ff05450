"""On a phone-sized screen (390 x 844) nothing scrolls sideways: the channel view (with
its voice panel), the channel list behind the menu button, the devices page and the
admin page all fit the width."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.web.conftest import WebServer, register_in_browser

FITS = "() => document.documentElement.scrollWidth <= window.innerWidth"
# What is wider than the screen, for the failure message.
WIDE = """() => [...document.querySelectorAll('*')]
  .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
  .slice(0, 8)
  .map((e) => `${e.localName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""


def assert_fits(page: Page, screen: str) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert page.evaluate(FITS), f"{screen} scrolls sideways {width}: {page.evaluate(WIDE)}"


def test_nothing_scrolls_sideways_on_a_phone(server: WebServer, new_page: Any) -> None:
    phone = new_page(viewport={"width": 390, "height": 844})
    phone.allowed_failures.append(re.compile(r"GET /voice/turn 404$"))
    p = phone.page
    register_in_browser(p, server, "dormouse", "The Dormouse, asleep in the teapot")
    p.get_by_role("button", name="Show channels").click()
    p.get_by_label("New channel name").fill("a rather long channel name about treacle wells")
    p.get_by_role("button", name="Create channel").click()
    expect(p.get_by_role("heading", name=re.compile("treacle wells"))).to_be_visible()
    p.get_by_label("Message", exact=True).fill("x" * 300)
    p.get_by_label("Message", exact=True).press("Enter")
    expect(p.locator("li.msg[data-status=sent]")).to_have_count(1)
    assert_fits(p, "the channel view")

    p.get_by_role("button", name="Show channels").click()
    expect(p.get_by_role("navigation", name="Channels")).to_be_visible()
    assert_fits(p, "the channel list")
    p.get_by_role("button", name="Show channels").click()

    p.goto(f"{server.base}/#/devices")
    expect(p.get_by_role("list", name="Your devices")).to_be_visible()
    assert_fits(p, "the devices page")
    p.goto(f"{server.base}/#/admin")
    expect(p.locator("dt-admin h2").first).to_be_visible()
    assert_fits(p, "the admin page")
