"""Issue 20 in the browser: a send whose acknowledgement was lost, and a send that never
reached the server, each end up stored once and shown once after the connection comes
back (the page's outbox: `client_message_id`, catch-up by `seq`, resend)."""

from __future__ import annotations

import json
import threading
from typing import Any

from playwright.sync_api import expect
from websockets.sync.client import ClientConnection

from tests.e2ee import open_sealed
from tests.web.conftest import WebServer, register_in_browser
from tests.web.test_history import channel_with_python_member, python_socket


class LossySocket:
    """The page's WebSocket through a route that can lose our acknowledgements on their
    way to the page (``drop_acks``), lose sends on their way to the server
    (``drop_sends``), and drop the connection (``cut``)."""

    def __init__(self, page: Any) -> None:
        self.routes: list[Any] = []
        self.drop_acks = threading.Event()
        self.drop_sends = threading.Event()
        page.route_web_socket("**/ws", self._route)

    def _route(self, ws: Any) -> None:
        server = ws.connect_to_server()

        def to_page(message: str | bytes) -> None:
            if self.drop_acks.is_set() and '"channel.message.new"' in str(message):
                return
            ws.send(message)

        def to_server(message: str | bytes) -> None:
            if self.drop_sends.is_set() and '"channel.message.send"' in str(message):
                return
            server.send(message)

        server.on_message(to_page)
        ws.on_message(to_server)
        self.routes.append(ws)

    def cut(self) -> None:
        self.routes[-1].close(code=1006, reason="network gone")


def next_message(ws: ClientConnection) -> dict[str, Any]:
    while True:
        event: dict[str, Any] = json.loads(ws.recv(timeout=30))
        assert event["type"] != "error", event
        if event["type"] == "channel.message.new":
            return event


def test_lost_acknowledgements_and_lost_sends_end_stored_and_shown_once(
    server: WebServer, new_page: Any
) -> None:
    alice = new_page()
    a = alice.page
    socket = LossySocket(a)
    register_in_browser(a, server, "alice", "Alice Liddell")
    bill_http, channel, key = channel_with_python_member(a, server, "bill", "pool of tears")
    box = a.get_by_label("Message", exact=True)
    with python_socket(server, bill_http) as bill:
        # Stored, but its acknowledgement never reaches the page.
        socket.drop_acks.set()
        box.fill("my answer got lost")
        box.press("Enter")
        stored = next_message(bill)
        assert open_sealed(key, stored["body"]) == b"my answer got lost"
        assert stored["client_message_id"]  # the page names its sends
        assert stored["seq"] == 1
        pending = a.locator("li.msg[data-status=pending]", has_text="my answer got lost")
        expect(pending).to_be_visible()
        socket.drop_acks.clear()
        socket.cut()
        sent = a.locator("li.msg[data-status=sent]", has_text="my answer got lost")
        expect(sent).to_be_visible(timeout=20_000)

        # Lost on its way to the server: sent again once the connection is back.
        socket.drop_sends.set()
        box.fill("nobody heard me")
        box.press("Enter")
        expect(a.locator("li.msg", has_text="nobody heard me")).to_have_attribute(
            "data-status", "pending"
        )
        socket.drop_sends.clear()
        socket.cut()
        # (Playwright serves the page's routes only while the test waits on the page.)
        expect(a.locator("li.msg[data-status=sent]", has_text="nobody heard me")).to_be_visible(
            timeout=20_000
        )
        again = next_message(bill)
        assert open_sealed(key, again["body"]) == b"nobody heard me"
        assert again["seq"] == 2

    for text in ("my answer got lost", "nobody heard me"):
        expect(a.locator("li.msg", has_text=text)).to_have_count(1)
    history = bill_http.get("/channels/messages", params={"channel_id": channel["id"]}).json()
    texts = [open_sealed(key, m["body"]) for m in history["messages"]]
    assert texts == [b"my answer got lost", b"nobody heard me"]  # nothing stored twice
    bill_http.close()
