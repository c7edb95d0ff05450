"""The admin's pages in the browser: an invite link made on the Admin page, renaming and
deleting a channel seen live by a member, and an accessible name on every control."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import PASSWORD, WebServer, register_in_browser

UNNAMED_CONTROLS = """() => [...document.querySelectorAll(
    "button, a[href], input, textarea, select, [role=button], [tabindex]")]
  .filter((el) => el.getClientRects().length > 0)
  .filter((el) => {
    const labelled = el.getAttribute("aria-label") || el.getAttribute("aria-labelledby")
      || (el.labels && el.labels.length) || el.getAttribute("title");
    const text = el.matches("input, textarea, select") ? "" : el.textContent.trim();
    return !labelled && !text;
  })
  .map((el) => el.outerHTML.slice(0, 120))"""


# Lets the test hide the tab and see the notifications the page shows (the real
# Notification is still created: this only records the calls).
HIDEABLE_TAB = """
let hidden = false;
Object.defineProperty(Document.prototype, "visibilityState", {
  get: () => (hidden ? "hidden" : "visible"), configurable: true });
window.setTabHidden = (value) => {
  hidden = value; document.dispatchEvent(new Event("visibilitychange")); };
window.shownNotifications = [];
const RealNotification = window.Notification;
window.Notification = class extends RealNotification {
  constructor(title, options) {
    super(title, options);
    window.shownNotifications.push({ title, body: options && options.body });
  }
};
"""


def unnamed(page: Any) -> list[str]:
    found: list[str] = page.evaluate(UNNAMED_CONTROLS)
    return found


def test_admin_invites_renames_and_deletes(server: WebServer, new_page: Any) -> None:
    admin = new_page()
    a = admin.page
    register_in_browser(a, server, "queen", "Queen of Hearts")
    # The check finds a control without a name...
    a.evaluate("document.body.append(Object.assign(document.createElement('button'), {id: 'x'}))")
    assert len(unnamed(a)) == 1
    a.evaluate("document.getElementById('x').remove()")
    # ...and the client has none.
    assert unnamed(a) == []
    a.get_by_label("New channel name").fill("croquet")
    a.get_by_label("New channel name").press("Enter")
    expect(a.get_by_role("heading", name="# croquet")).to_be_visible()
    assert unnamed(a) == []

    a.get_by_role("link", name="Admin").click()
    a.get_by_role("button", name="Create invite link").click()
    link_field = a.get_by_label("Invite link")
    link = link_field.input_value()
    assert link.startswith(f"{server.base}/#invite=")
    assert unnamed(a) == []

    member = new_page(permissions=["notifications"])
    m = member.page
    m.add_init_script(HIDEABLE_TAB)
    m.goto(link)
    m.get_by_label("Username").fill("knave")
    m.get_by_label("Password").fill(PASSWORD)
    m.get_by_label("Display name").fill("Knave of Hearts")
    m.get_by_role("button", name="Create account").click()
    expect(m.get_by_role("heading", name="# croquet")).to_be_visible()
    assert unnamed(m) == []
    # Members do not get the admin's controls.
    expect(m.get_by_role("button", name="Rename channel croquet")).to_have_count(0)
    expect(m.get_by_role("link", name="Admin")).to_have_count(0)

    # Alerts are opt-in: nothing while off; a notification once on and the tab hidden.
    a.get_by_role("link", name="croquet").click()
    m.evaluate("setTabHidden(true)")
    a.get_by_label("Message", exact=True).fill("Off with his head!")
    a.get_by_label("Message", exact=True).press("Enter")
    expect(m.get_by_role("link", name="croquet, 1 unread")).to_be_visible()
    assert m.evaluate("shownNotifications") == []
    m.evaluate("setTabHidden(false)")
    m.get_by_role("checkbox", name="Alerts").check()
    m.evaluate("setTabHidden(true)")
    a.get_by_label("Message", exact=True).fill("Who are these?")
    a.get_by_label("Message", exact=True).press("Enter")
    expect(m.get_by_role("link", name="croquet, 1 unread")).to_be_visible()
    notes = {"title": "#croquet", "body": "New message from Queen of Hearts"}
    m.wait_for_function("shownNotifications.length === 1")
    assert m.evaluate("shownNotifications") == [notes]
    m.evaluate("setTabHidden(false)")

    a.get_by_role("button", name="Rename channel croquet").click()
    a.get_by_label("New name").fill("flamingo croquet")
    a.get_by_role("button", name="Rename", exact=True).click()
    expect(a.get_by_role("heading", name="# flamingo croquet")).to_be_visible()
    expect(m.get_by_role("heading", name="# flamingo croquet")).to_be_visible()

    a.get_by_role("button", name="Delete channel flamingo croquet").click()
    a.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(a.get_by_role("heading", name="Welcome, Queen of Hearts")).to_be_visible()
    expect(m.get_by_text("No channels yet.")).to_be_visible()
    expect(m.get_by_role("heading", name="Welcome, Knave of Hearts")).to_be_visible()
