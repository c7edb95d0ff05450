"""A message deleted while the browser was offline disappears once it is back: the
client asks for the deletions since its last catch-up when it reconnects (in one
`POST /sync`, issue 16; a server without it: the deletions feed,
`GET /channels/messages/deleted?since=`), since the `channel.message.deleted` event never
reached it."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.e2ee import open_sealed
from tests.web.conftest import WebServer, register_in_browser
from tests.web.test_history import (
    CuttableSocket,
    channel_with_python_member,
    is_sync,
    python_socket,
    send_all,
)


def reads_deletions(url: str) -> bool:
    return "/channels/messages/deleted?" in url or is_sync(url)


def test_a_message_deleted_while_offline_disappears_after_reconnect(
    server: WebServer, new_page: Any
) -> None:
    alice = new_page()
    a = alice.page
    socket = CuttableSocket(a)
    register_in_browser(a, server, "dinah", "Dinah")
    bill_http, channel, key = channel_with_python_member(a, server, "patrick", "tea party")
    with python_socket(server, bill_http) as ws:
        send_all(ws, channel["id"], key, ["keep me", "regret me", "keep me too"])
    shown = a.locator("ol.messages li.msg .text")
    expect(shown).to_have_text(["keep me", "regret me", "keep me too"])

    # Offline; meanwhile Bill deletes his message (the event cannot reach Alice).
    socket.blocked.set()
    socket.cut()
    expect(a.locator(".conn")).to_contain_text("reconnecting")
    params = {"channel_id": channel["id"], "limit": 10}
    rows = bill_http.get("/channels/messages", params=params).json()["messages"]
    (regret,) = [r["id"] for r in rows if open_sealed(key, r["body"]) == b"regret me"]
    deleted = bill_http.delete("/channels/messages", params={"message_id": regret})
    assert deleted.status_code == 204, deleted.text

    with a.expect_response(lambda r: reads_deletions(r.url) and r.status == 200):
        socket.blocked.clear()
    expect(a.locator(".conn")).to_have_text("Connected")
    expect(shown).to_have_text(["keep me", "keep me too"])

    # Once more: the next catch-up asks only from the last one on (a later `since`).
    socket.blocked.set()
    socket.cut()
    expect(a.locator(".conn")).to_contain_text("reconnecting")
    rows = bill_http.get("/channels/messages", params=params).json()["messages"]
    (first,) = [r["id"] for r in rows if open_sealed(key, r["body"]) == b"keep me"]
    assert bill_http.delete("/channels/messages", params={"message_id": first}).status_code == 204
    with a.expect_response(lambda r: reads_deletions(r.url) and r.status == 200) as feed:
        socket.blocked.clear()
    expect(shown).to_have_text(["keep me too"])
    request = feed.value.request
    assert "since=" in request.url or '"last_deletion_at":' in (request.post_data or "")
    bill_http.close()
