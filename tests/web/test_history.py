"""History in the browser: older pages load when scrolled to the top (`before=`), and what
was missed while the connection was down is fetched after it comes back (`after=`)."""

from __future__ import annotations

import json
import threading
from typing import Any

from playwright.sync_api import expect
from websockets.sync.client import ClientConnection, connect

from tests.e2ee import open_sealed, seal
from tests.web.conftest import WebServer, python_member, register_in_browser


def python_socket(server: WebServer, http: Any) -> ClientConnection:
    return connect(
        f"{server.base.replace('http', 'ws')}/ws",
        additional_headers={"Authorization": http.headers["Authorization"]},
    )


def is_sync(url: str) -> bool:
    """The catch-up in one call, POST /sync (issue 16)."""
    return url.split("?", 1)[0].endswith("/sync")


def send_all(ws: ClientConnection, channel_id: str, key: bytes, texts: list[str]) -> None:
    """Send messages and wait until the server has echoed every one (stored and fanned out)."""
    for text in texts:
        frame = {
            "type": "channel.message.send",
            "channel_id": channel_id,
            "body": seal(key, text.encode()),
            "sender_name_enc": seal(key, b"Bill the Lizard"),
        }
        ws.send(json.dumps(frame))
    echoed = 0
    while echoed < len(texts):
        event = json.loads(ws.recv(timeout=30))
        assert event["type"] != "error", event
        if event["type"] == "channel.message.new":
            echoed += 1


class CuttableSocket:
    """The page's WebSocket through a route the test can cut (``cut``: the live one
    drops as if the network went) and block (new ones are refused while ``blocked``)."""

    def __init__(self, page: Any) -> None:
        self.routes: list[Any] = []
        self.blocked = threading.Event()
        page.route_web_socket("**/ws", self._route)

    def _route(self, ws: Any) -> None:
        if self.blocked.is_set():
            ws.close(code=1011, reason="blocked by the test")
            return
        ws.connect_to_server()
        self.routes.append(ws)

    def cut(self) -> None:
        self.routes[-1].close(code=1006, reason="network gone")


def channel_with_python_member(
    page: Any, server: WebServer, member: str, channel_name: str
) -> tuple[Any, dict[str, Any], bytes]:
    """The page's user creates a channel; a Python member reads its key (wrapped for it by
    the browser). Returns the member's HTTP client, the channel and its key."""
    http, keys, _ = python_member(server, member)
    with page.expect_response(lambda r: r.url.endswith("/channels/keys") and r.status == 201):
        page.get_by_label("New channel name").fill(channel_name)
        page.get_by_role("button", name="Create channel").click()
    (channel,) = http.get("/channels").json()["channels"]
    envelope = http.get("/channels/keys", params={"channel_id": channel["id"]}).json()
    key = keys.unwrap_from(envelope["sender_public_key"], envelope["envelope"])
    return http, channel, key


def test_scrolling_up_loads_older_pages_and_reconnect_catches_up(
    server: WebServer, new_page: Any
) -> None:
    alice = new_page()
    a = alice.page
    # The client's WebSocket goes through a route the test can cut and block.
    socket = CuttableSocket(a)
    register_in_browser(a, server, "alice", "Alice Liddell")
    bill_http, channel, key = channel_with_python_member(a, server, "bill", "rabbit hole")

    texts = [f"down the hole {n:03d}" for n in range(1, 121)]
    with python_socket(server, bill_http) as ws:
        send_all(ws, channel["id"], key, texts)
    a.reload()
    expect(a.locator(".conn")).to_have_text("Connected")
    shown = a.locator("ol.messages li.msg .text")
    expect(shown).to_have_count(50)
    expect(shown.last).to_have_text("down the hole 120")
    scroller = a.locator(".scroller")
    scroller.evaluate("e => { e.scrollTop = 0; }")
    expect(shown).to_have_count(100)
    scroller.evaluate("e => { e.scrollTop = 0; }")
    expect(shown).to_have_count(120)
    expect(shown.first).to_have_text("down the hole 001")
    expect(a.get_by_role("button", name="Load older messages")).to_be_hidden()

    # Cut the connection and keep it down while Bill writes.
    socket.blocked.set()
    socket.cut()
    expect(a.locator(".conn")).to_contain_text("reconnecting")
    with python_socket(server, bill_http) as ws:
        send_all(ws, channel["id"], key, ["said while you were away"])
    # Issue 20: the page catches up by `seq` (after_seq=), which also finds old holes;
    # issue 16: in one POST /sync from the message at that place.
    with a.expect_response(lambda r: ("after_seq=" in r.url or is_sync(r.url)) and r.status == 200):
        socket.blocked.clear()
    expect(a.locator(".conn")).to_have_text("Connected")
    expect(shown.last).to_have_text("said while you were away")
    expect(shown).to_have_count(121)

    # Offline again: a message cannot go out and says so; issue 20: it goes by itself
    # once the connection is back (before, it waited for Retry).
    socket.blocked.set()
    socket.cut()
    expect(a.locator(".conn")).to_contain_text("reconnecting")
    a.get_by_label("Message", exact=True).fill("is anyone there?")
    a.get_by_label("Message", exact=True).press("Enter")
    failed = a.locator("li.msg[data-status=failed]", has_text="is anyone there?")
    expect(failed).to_contain_text("Not connected")
    socket.blocked.clear()
    expect(a.locator(".conn")).to_have_text("Connected", timeout=20_000)
    expect(a.locator("li.msg[data-status=sent]", has_text="is anyone there?")).to_be_visible()
    expect(a.locator("li.msg", has_text="is anyone there?")).to_have_count(1)
    params = {"channel_id": channel["id"], "limit": 1}
    (last,) = bill_http.get("/channels/messages", params=params).json()["messages"]
    assert open_sealed(key, last["body"]) == b"is anyone there?"
    bill_http.close()
