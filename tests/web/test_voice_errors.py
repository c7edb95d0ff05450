"""An `error` event names no frame: the browser must tell which of its frames it answers.
A voice join into a channel that was just deleted fails in the voice panel, and a chat
message sent right after it is not marked failed by that error (nor the reverse)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.web.conftest import WebServer, register_in_browser

# Records the frames the page sends (before the test's route sees them).
SENT_SPY = """
(() => {
  window.__sent = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    window.__sent.push(String(data));
    return send.call(this, data);
  };
})();
"""


def test_a_failed_voice_join_does_not_fail_a_chat_message(server: WebServer, new_page: Any) -> None:
    alice = new_page()
    alice.allowed_failures.append(re.compile(r"GET /voice/turn 404$"))  # no TURN here
    a = alice.page
    a.add_init_script(SENT_SPY)
    # The server's frames to the page pass through the test, which can hold some back.
    held: list[str] = []
    hold: dict[str, tuple[str, ...]] = {"kinds": ()}  # "" would hold every frame
    pages: list[Any] = []

    def route(ws: Any) -> None:
        to_server = ws.connect_to_server()
        pages.append(ws)

        def to_page(message: str | bytes) -> None:
            if any(kind in str(message) for kind in hold["kinds"]):
                held.append(str(message))
            else:
                ws.send(message)

        to_server.on_message(to_page)
        ws.on_message(lambda message: to_server.send(message))

    a.route_web_socket("**/ws", route)
    register_in_browser(a, server, "mock", "Mock Turtle")
    created = {}
    for name in ("doomed", "safe"):
        with a.expect_response(lambda r: r.url.endswith("/channels") and r.status == 201) as made:
            a.get_by_label("New channel name").fill(name)
            a.get_by_role("button", name="Create channel").click()
        expect(a.get_by_role("heading", name=f"# {name}")).to_be_visible()
        created[name] = made.value.json()["channel"]["id"]
    token = made.value.request.headers["authorization"]
    channels = a.get_by_role("navigation", name="Channels")
    channels.get_by_role("link", name="doomed").click()
    expect(a.get_by_role("heading", name="# doomed")).to_be_visible()

    # From now on the page hears nothing until the test says so; the channel goes away.
    hold["kinds"] = ("",)
    with httpx.Client(base_url=server.base, headers={"Authorization": token}) as http:
        gone = http.delete("/channels", params={"channel_id": created["doomed"]})
        assert gone.status_code == 204, gone.text

    a.locator("dt-voice-panel").get_by_role("button", name="Join voice").click()
    a.wait_for_function("() => window.__sent.some((f) => f.includes('\"voice_join\"'))")
    channels.get_by_role("link", name="safe").click()
    expect(a.get_by_role("heading", name="# safe")).to_be_visible()
    a.get_by_label("Message", exact=True).fill("still here")
    a.get_by_label("Message", exact=True).press("Enter")
    a.wait_for_function("() => window.__sent.some((f) => f.includes('channel.message.send'))")

    # Let everything through but the message's echo: the join's error arrives first.
    hold["kinds"] = ("channel.message.new",)
    for message in [m for m in held if "channel.message.new" not in m]:
        pages[-1].send(message)
    held[:] = [m for m in held if "channel.message.new" in m]
    panel = a.locator("dt-voice-panel")
    expect(panel).to_contain_text("This channel no longer exists.")
    message = a.locator("li.msg", has_text="still here")
    expect(message).to_have_attribute("data-status", "pending")

    hold["kinds"] = ()
    for echo in held:
        pages[-1].send(echo)
    expect(message).to_have_attribute("data-status", "sent")
