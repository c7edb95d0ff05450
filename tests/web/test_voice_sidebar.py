"""The side panel says who is in each channel's voice room (from voice presence events),
in words a screen reader reads out with the channel's link."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import WebServer
from tests.web.voice_helpers import join, two_people_in_a_channel


def test_sidebar_lists_who_is_in_voice(server: WebServer, new_page: Any) -> None:
    alice, bob = two_people_in_a_channel(server, new_page, "tea room")
    for caller in (alice, bob):
        caller.watched.allowed_failures.append(re.compile(r"GET /voice/turn 404$"))
    channels = bob.page.get_by_role("navigation", name="Channels")
    in_voice = channels.get_by_role("list", name="In voice in tea room")
    expect(in_voice).to_have_count(0)

    join(alice)
    expect(in_voice.get_by_role("listitem")).to_have_text([alice.display])
    expect(channels.get_by_role("link", name="tea room, 1 in voice")).to_be_visible()

    join(bob)
    expect(in_voice.get_by_role("listitem")).to_have_text(sorted([alice.display, bob.display]))
    expect(channels.get_by_role("link", name="tea room, 2 in voice")).to_be_visible()

    alice.panel().get_by_role("button", name="Leave voice").click()
    expect(in_voice.get_by_role("listitem")).to_have_text([bob.display])
    bob.panel().get_by_role("button", name="Leave voice").click()
    expect(in_voice).to_have_count(0)
    expect(channels.get_by_role("link", name="tea room", exact=True)).to_be_visible()
