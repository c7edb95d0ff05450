"""A message deleted while the browser was offline disappears once it is back: the
client reads the deletions feed (`GET /channels/messages/deleted?since=`) when it
reconnects, since the `channel.message.deleted` event never reached it."""

from __future__ import annotations

import threading
from typing import Any

from playwright.sync_api import expect

from tests.e2ee import open_sealed
from tests.web.conftest import WebServer, python_member, register_in_browser
from tests.web.test_history import python_socket, send_all


def test_a_message_deleted_while_offline_disappears_after_reconnect(
    server: WebServer, new_page: Any
) -> None:
    alice = new_page()
    a = alice.page
    routes: list[Any] = []
    blocked = threading.Event()

    def route(ws: Any) -> None:
        if blocked.is_set():
            ws.close(code=1011, reason="blocked by the test")
            return
        ws.connect_to_server()
        routes.append(ws)

    a.route_web_socket("**/ws", route)
    register_in_browser(a, server, "dinah", "Dinah")
    bill_http, bill_keys, _ = python_member(server, "patrick")
    with a.expect_response(lambda r: r.url.endswith("/channels/keys") and r.status == 201):
        a.get_by_label("New channel name").fill("tea party")
        a.get_by_role("button", name="Create channel").click()
    (channel,) = bill_http.get("/channels").json()["channels"]
    envelope = bill_http.get("/channels/keys", params={"channel_id": channel["id"]}).json()
    key = bill_keys.unwrap_from(envelope["sender_public_key"], envelope["envelope"])
    with python_socket(server, bill_http) as ws:
        send_all(ws, channel["id"], key, ["keep me", "regret me", "keep me too"])
    shown = a.locator("ol.messages li.msg .text")
    expect(shown).to_have_text(["keep me", "regret me", "keep me too"])

    # Offline; meanwhile Bill deletes his message (the event cannot reach Alice).
    blocked.set()
    routes[-1].close(code=1006, reason="network gone")
    expect(a.locator(".conn")).to_contain_text("reconnecting")
    params = {"channel_id": channel["id"], "limit": 10}
    rows = bill_http.get("/channels/messages", params=params).json()["messages"]
    (regret,) = [r["id"] for r in rows if open_sealed(key, r["body"]) == b"regret me"]
    deleted = bill_http.delete("/channels/messages", params={"message_id": regret})
    assert deleted.status_code == 204, deleted.text

    with a.expect_response(lambda r: "/channels/messages/deleted?" in r.url and r.status == 200):
        blocked.clear()
    expect(a.locator(".conn")).to_have_text("Connected")
    expect(shown).to_have_text(["keep me", "keep me too"])

    # Once more: the next catch-up asks only from the last one on (a later `since`).
    blocked.set()
    routes[-1].close(code=1006, reason="network gone")
    expect(a.locator(".conn")).to_contain_text("reconnecting")
    rows = bill_http.get("/channels/messages", params=params).json()["messages"]
    (first,) = [r["id"] for r in rows if open_sealed(key, r["body"]) == b"keep me"]
    assert bill_http.delete("/channels/messages", params={"message_id": first}).status_code == 204
    with a.expect_response(
        lambda r: "/channels/messages/deleted?" in r.url and r.status == 200
    ) as feed:
        blocked.clear()
    expect(shown).to_have_text(["keep me too"])
    assert "since=" in feed.value.url
    bill_http.close()
