"""Nothing scrolls sideways on a small phone (320 px): the channel view, a voice call, the
devices page and the admin page fit the screen (the admin tables scroll in their own box),
and a checkbox keeps its label beside it."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import PASSWORD, WebServer, register_in_browser

WIDTH = 320
PHONE = {"viewport": {"width": WIDTH, "height": 700}, "is_mobile": True, "has_touch": True}

# A mobile browser zooms out to show a page wider than the screen (innerWidth grows with
# it), so widths are compared with the screen's, never with innerWidth.
OVERFLOW = """(width) => [...document.querySelectorAll('body *')]
  .filter((el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.right > width + 0.5;
  })
  .map((el) => el.tagName.toLowerCase() + '.' + [...el.classList].join('.'))"""


def assert_fits(page: Any, where: str, *, every_element: bool = True) -> None:
    if every_element:
        past = page.evaluate(OVERFLOW, WIDTH)
        assert past == [], f"{where}: elements past the right edge of a {WIDTH} px screen"
    width = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert width == [WIDTH, WIDTH], f"{where}: [page, window] {width} px on a {WIDTH} px screen"


def test_a_small_phone_never_scrolls_sideways(server: WebServer, new_page: Any) -> None:
    first = new_page(**PHONE)
    # This server has no TURN relay: joining voice asks for credentials and gets the
    # documented 404, then uses direct paths.
    first.allowed_failures.append(re.compile(r"^GET /voice/turn 404$"))
    p = first.page
    register_in_browser(p, server, "mabel", "Mabel")
    p.get_by_role("button", name="Show channels").click()
    p.get_by_label("New channel name").fill("a channel with a rather long name indeed")
    p.get_by_role("button", name="Create channel").click()
    heading = p.get_by_role("heading", name="# a channel with a rather long name indeed")
    expect(heading).to_be_visible()
    p.get_by_label("Message", exact=True).fill("x" * 300)
    p.get_by_label("Message", exact=True).press("Enter")
    expect(p.locator("li.msg[data-status=sent]")).to_be_visible()
    assert_fits(p, "channel view")

    p.get_by_role("button", name="Join voice").click()
    expect(p.get_by_role("button", name="Leave voice")).to_be_visible()
    assert_fits(p, "voice call")
    p.get_by_role("button", name="Leave voice").click()
    expect(p.get_by_role("button", name="Join voice")).to_be_visible()

    # A second device of the same account: the devices page lists the first one with
    # its "last seen" time, the longest row.
    second = new_page(**PHONE)
    q = second.page
    q.goto(f"{server.base}/")
    q.get_by_label("Username").fill("mabel")
    q.get_by_label("Password").fill(PASSWORD)
    q.get_by_role("button", name="Sign in").click()
    expect(q.locator(".conn")).to_have_text("Connected")
    q.goto(f"{server.base}/#/devices")
    expect(q.get_by_role("list", name="Your devices").get_by_role("listitem")).to_have_count(2)
    assert_fits(q, "devices page")
    box = q.get_by_role("checkbox").bounding_box()
    label = q.locator("label[for=alerts-here]").bounding_box()
    assert box is not None
    assert label is not None
    assert label["x"] > box["x"] + box["width"], "the checkbox's label is not beside it"
    assert label["y"] < box["y"] + box["height"], "the checkbox's label is not beside it"

    p.goto(f"{server.base}/#/admin")
    expect(p.get_by_role("heading", name="Server administration")).to_be_visible()
    # Its wide tables scroll inside their own box; the page itself does not.
    assert_fits(p, "admin page", every_element=False)
