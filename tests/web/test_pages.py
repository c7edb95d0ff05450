"""Sign-in and registration errors, the CLI's invite link, the CSP and keys that script
cannot read, in a real browser."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import PASSWORD, WebServer, register_in_browser


def test_invite_link_from_the_cli_opens_registration(server: WebServer, new_page: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dialtone", "invite", "create", "--link"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert link.startswith(f"{server.base}/#invite=")

    first = new_page()
    first.page.goto(link)
    expect(first.page.get_by_role("heading", name="Join this Dialtone server")).to_be_visible()
    expect(first.page.get_by_label("Invite")).to_have_value(link.split("#invite=", 1)[1])
    first.page.get_by_label("Username").fill("dinah")
    first.page.get_by_label("Password").fill(PASSWORD)
    first.page.get_by_role("button", name="Create account").click()
    expect(first.page.locator(".conn")).to_have_text("Connected")
    # The token left the address bar once used.
    assert "invite" not in first.page.url

    # The same link again: used up, and the page says so.
    second = new_page()
    second.allowed_failures.append(re.compile(r"POST /auth/register 410$"))
    second.page.goto(link)
    second.page.get_by_label("Username").fill("cheshire")
    second.page.get_by_label("Password").fill(PASSWORD)
    second.page.get_by_role("button", name="Create account").click()
    used = second.page.get_by_role("alert").filter(has_text="expired or was already used")
    expect(used).to_be_visible()


def test_sign_in_errors_are_explained(server: WebServer, new_page: Any) -> None:
    watched = new_page()
    watched.allowed_failures += [
        re.compile(r"POST /auth/login 401$"),
        re.compile(r"POST /auth/register (400|404|409)$"),
    ]
    page = watched.page
    register_in_browser(page, server, "hatter", "The Hatter")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to Dialtone")).to_be_visible()
    expect(page.get_by_text("You are signed out.")).to_be_visible()

    page.get_by_label("Username").fill("hatter")
    page.get_by_label("Password").fill("not the password 1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")

    page.get_by_role("button", name="I have an invite").click()
    page.get_by_label("Username").fill("hatter")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Invite").fill("no-such-invite")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("alert")).to_contain_text("invite does not exist")

    page.get_by_label("Invite").fill(server.invite())
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("alert")).to_contain_text("username is taken")

    page.get_by_label("Username").fill("march-hare")
    page.get_by_label("Password").fill("password")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("alert")).to_contain_text("Not accepted")

    # Back to the right password: signed in again, same device key.
    page.get_by_role("button", name="I already have an account").click()
    page.get_by_label("Username").fill("hatter")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".conn")).to_have_text("Connected")


def test_csp_blocks_injected_inline_script(server: WebServer, new_page: Any) -> None:
    watched = new_page()
    watched.allowed_errors.append(re.compile(r"(Executing|Refused to execute) inline script"))
    page = watched.page
    response = page.goto(server.base + "/")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp
    expect(page.get_by_role("heading", name="Sign in to Dialtone")).to_be_visible()
    outcome = page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation",
              (e) => resolve({blocked: e.violatedDirective, ran: window.__owned === 1}));
            const script = document.createElement("script");
            script.textContent = "window.__owned = 1";
            document.body.append(script);
        })"""
    )
    assert outcome == {"blocked": "script-src-elem", "ran": False}
