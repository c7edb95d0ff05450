"""A voice call between two browsers through the server's signalling, on a server without
TURN (direct paths on this machine): join, connect, audio both ways, the speaking
indicator, mute, per-peer volume, a camera through the same connection, and leaving
closes every connection and stops every track."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.web.conftest import (
    CHROMIUM,
    WebServer,
    register_in_browser,
    start_server,
    stop_server,
    watch,
)
from tests.web.voice_helpers import (
    CONNECT_MS,
    INBOUND_AUDIO_PACKETS,
    Caller,
    expect_audio_flows,
    expect_connected,
    fresh_dir,
    join,
    people_in_a_channel,
    two_people_in_a_channel,
)


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[WebServer]:
    """A fresh server per test: its first account (Alice) is the admin who may create
    the channel the call happens in. Parametrize it indirectly with extra environment."""
    live = start_server(fresh_dir(tmp_path / "web"), getattr(request, "param", None))
    yield live
    stop_server(live)


def sent_of_type(caller: Caller, kind: str) -> list[dict[str, Any]]:
    frames = [json.loads(text) for text in caller.watched.frames_sent]
    return [f for f in frames if f.get("type") == kind]


def forgive_missing_turn(*callers: Caller) -> None:
    """This server has no TURN relay: GET /voice/turn answers 404 (documented), and the
    client then uses direct paths only. That 404 is the one failed request expected."""
    for caller in callers:
        failures = caller.watched.failures
        assert "GET /voice/turn 404" in failures
        failures[:] = [f for f in failures if f != "GET /voice/turn 404"]


def test_two_browsers_hold_a_voice_call(server: WebServer, new_page: Any, tmp_path: Path) -> None:
    alice, bob = two_people_in_a_channel(server, new_page, "voice lounge")
    expect(bob.panel()).to_contain_text("Nobody is in voice here.")

    join(alice)
    # Voice presence: Bob sees Alice in the room before joining it himself.
    expect(bob.panel().locator(".voice-summary")).to_contain_text(alice.display)
    join(bob)

    expect_connected(alice, bob)
    expect_audio_flows(alice, bob)
    expect(alice.row(bob).locator(".voice-state")).to_contain_text("connected directly")
    # Exactly one offer and one answer: the smaller user id offered, so no glare.
    ids = {
        "alice": bob.row(alice).get_attribute("data-user-id"),
        "bob": alice.row(bob).get_attribute("data-user-id"),
    }
    offers = {name: sent_of_type(c, "webrtc_offer") for name, c in (("alice", alice), ("bob", bob))}
    offerer, answerer = ("alice", "bob") if ids["alice"] < ids["bob"] else ("bob", "alice")
    assert [f["recipient"] for f in offers[offerer]] == [ids[answerer]]
    assert offers[answerer] == []
    answerer_caller = bob if answerer == "bob" else alice
    answers = sent_of_type(answerer_caller, "webrtc_answer")
    assert [f["recipient"] for f in answers] == [ids[offerer]]

    # Chromium's fake microphone beeps: the other side's speaking indicator lights up.
    expect(alice.row(bob)).to_have_attribute("data-speaking", "true", timeout=CONNECT_MS)
    expect(bob.row(alice)).to_have_attribute("data-speaking", "true", timeout=CONNECT_MS)

    # Mute by mouse, unmute by keyboard; the microphone track is what goes silent.
    mute = alice.panel().get_by_role("button", name="Mute microphone")
    mute.click()
    expect(mute).to_have_attribute("aria-pressed", "true")
    audio_enabled = (
        "() => window.__pcs[0].getSenders().filter((s) => s.track && s.track.kind === 'audio')"
        ".map((s) => s.track.enabled)"
    )
    assert alice.eval(audio_enabled) == [False]
    expect(alice.panel().locator(".voice-status")).to_contain_text("You are muted")
    mute.focus()
    mute.press("Enter")
    expect(mute).to_have_attribute("aria-pressed", "false")
    assert alice.eval(audio_enabled) == [True]

    # Another microphone, chosen in the settings, replaces the track on the connection.
    alice.panel().get_by_text("Voice settings").click()
    mic = alice.panel().get_by_label("Microphone", exact=True)
    # Chromium's fake devices: "Default" and at least two named microphones.
    alice.wait("(select) => select.options.length >= 3", arg=mic.element_handle())
    choice = mic.locator("option").last.text_content()
    assert choice
    assert choice != "Default microphone"
    mic.select_option(label=choice)
    alice.wait(
        "(label) => window.__pcs[0].getSenders()"
        ".some((s) => s.track && s.track.kind === 'audio' && s.track.label === label)",
        arg=choice,
    )
    alice.wait(
        "() => window.__tracks.filter((t) => t.kind === 'audio')"
        ".map((t) => t.readyState).join() === 'ended,live'"
    )
    before = bob.wait_async(INBOUND_AUDIO_PACKETS)
    assert bob.wait_async(INBOUND_AUDIO_PACKETS.replace("packets > 0", f"packets > {before + 50}"))
    alice.panel().get_by_text("Voice settings").click()

    # Per-peer volume, with the keyboard, on the element that plays Bob's audio.
    slider = alice.row(bob).get_by_role("slider", name=f"Volume of {bob.display}")
    slider.focus()
    slider.press("Home")
    alice.wait("() => window.__audios.length === 1 && window.__audios[0].volume === 0")
    slider.press("End")
    alice.wait("() => window.__audios[0].volume === 1")

    # Bob's camera travels through the same connection (renegotiated in place).
    camera = bob.panel().get_by_role("button", name="Camera")
    camera.click()
    expect(camera).to_have_attribute("aria-pressed", "true")
    video = alice.row(bob).get_by_label(f"Camera of {bob.display}")
    expect(video).to_be_visible(timeout=CONNECT_MS)
    alice.wait(
        "() => { const v = document.querySelector('dt-voice-panel li video:not([hidden])');"
        " return !!v && v.videoWidth > 0; }"
    )
    assert alice.eval("() => window.__pcs.length") == 1
    assert bob.eval("() => window.__pcs.length") == 1
    # `make screenshots` sets DIALTONE_SCREENSHOTS=docs: the picture in docs/VOICE.md.
    shots = Path(os.environ.get("DIALTONE_SCREENSHOTS") or tmp_path)
    alice.page.screenshot(path=shots / "screenshot-voice.png")
    camera.click()
    expect(camera).to_have_attribute("aria-pressed", "false")
    expect(video).to_be_hidden(timeout=CONNECT_MS)
    bob.wait(
        "() => { const video = window.__tracks.filter((t) => t.kind === 'video');"
        " return video.length > 0 && video.every((t) => t.readyState === 'ended'); }"
    )
    expect_connected(alice, bob)

    # Leaving closes every connection on both sides and stops the microphone.
    bob.panel().get_by_role("button", name="Leave voice").click()
    bob.wait(
        "() => window.__pcs.length === 1 && window.__pcs[0].connectionState === 'closed'"
        " && window.__tracks.every((t) => t.readyState === 'ended')"
    )
    alice.wait("() => window.__pcs[0].connectionState === 'closed'")
    expect(alice.row(bob)).to_have_count(0)
    expect(alice.panel().locator(".voice-status")).to_contain_text("Nobody else is here yet")
    expect(bob.panel().get_by_role("button", name="Join voice")).to_be_visible()
    expect(bob.panel().locator(".voice-summary")).to_contain_text(alice.display)

    alice.panel().get_by_role("button", name="Leave voice").click()
    alice.wait("() => window.__tracks.every((t) => t.readyState === 'ended')")
    expect(bob.panel()).to_contain_text("Nobody is in voice here.")
    assert len(sent_of_type(alice, "voice_leave")) == 1
    forgive_missing_turn(alice, bob)


def test_a_dropped_connection_rejoins_the_call(server: WebServer, new_page: Any) -> None:
    """Bob's WebSocket dies mid-call and comes back; his client rejoins the room and both
    connect afresh, without anyone clicking anything. The server has not noticed the old
    socket die (Bob's new socket is just another of his in the room, so Alice is told
    nothing): Alice recognises his new connection by its new DTLS fingerprint."""
    alice, bob = two_people_in_a_channel(server, new_page, "flaky line")
    routes: list[Any] = []
    # Bob's WebSocket runs through a route the test can cut (registered before the reload
    # so the page's next socket uses it); the server's end of it stays open.
    bob.page.route_web_socket("**/ws", lambda ws: routes.append(ws.connect_to_server() and ws))
    bob.page.reload()
    expect(bob.page.locator(".conn")).to_have_text("Connected")

    join(alice)
    join(bob)
    expect_connected(alice, bob)

    routes[-1].close(code=1006, reason="network gone")
    for me in (alice, bob):
        me.wait(
            "() => window.__pcs.length === 2 && window.__pcs[0].connectionState === 'closed'"
            " && window.__pcs[1].connectionState === 'connected'"
        )
    expect(alice.row(bob)).to_have_attribute("data-state", "connected", timeout=CONNECT_MS)
    expect(bob.row(alice)).to_have_attribute("data-state", "connected", timeout=CONNECT_MS)
    expect_audio_flows(alice, bob)
    room_events = {"voice_roster", "voice_join", "voice_leave"}
    frames = [json.loads(f) for f in alice.watched.frames_received]
    told = [f["type"] for f in frames if f.get("type") in room_events]
    assert told == ["voice_roster", "voice_join"], told
    forgive_missing_turn(alice, bob)


class HeldOffers:
    """A WebSocket route that passes every frame through, except that while `holding` it
    keeps back the offers the server sends to the page, until `release()`."""

    def __init__(self) -> None:
        self.holding = False
        self.held: list[str | bytes] = []
        self.page_side: Any = None

    def route(self, ws: Any) -> None:
        self.page_side = ws
        server_side = ws.connect_to_server()
        ws.on_message(server_side.send)

        def from_server(message: str | bytes) -> None:
            if self.holding and '"type":"webrtc_offer"' in str(message):
                self.held.append(message)
            else:
                ws.send(message)

        server_side.on_message(from_server)

    def release(self) -> None:
        self.holding = False
        for message in self.held:
            self.page_side.send(message)
        self.held.clear()


def test_both_turn_cameras_on_at_once(server: WebServer, new_page: Any) -> None:
    """Glare: both sides renegotiate at the same moment and each one's offer reaches the
    other only after it has made its own. The polite side (the larger user id) rolls its
    offer back and answers, then offers again; both end up seeing each other's camera on
    the one connection they had."""
    alice, bob = two_people_in_a_channel(server, new_page, "camera party")
    routes = {}
    for caller in (alice, bob):
        routes[caller.username] = HeldOffers()
        caller.page.route_web_socket("**/ws", routes[caller.username].route)
        caller.page.reload()
        expect(caller.page.locator(".conn")).to_have_text("Connected")
    join(alice)
    join(bob)
    expect_connected(alice, bob)

    for route in routes.values():
        route.holding = True
    for caller in (alice, bob):
        caller.panel().get_by_role("button", name="Camera").click()
    # Both have sent their offer and wait for an answer: the offers have crossed.
    for caller in (alice, bob):
        caller.wait("() => window.__pcs[0].signalingState === 'have-local-offer'")
    for route in routes.values():
        route.release()

    for me, other in ((alice, bob), (bob, alice)):
        video = me.row(other).get_by_label(f"Camera of {other.display}")
        expect(video).to_be_visible(timeout=CONNECT_MS)
        me.wait(
            "(name) => { const v = [...document.querySelectorAll('dt-voice-panel li video')]"
            ".find((e) => e.getAttribute('aria-label') === 'Camera of ' + name);"
            " return !!v && v.videoWidth > 0; }",
            arg=other.display,
        )
        assert me.eval("() => window.__pcs.length") == 1
        me.wait("() => window.__pcs[0].signalingState === 'stable'")
    expect_connected(alice, bob)
    forgive_missing_turn(alice, bob)


# With the server's rate limits on, at their defaults, as in production: the client paces
# its signalling below them, so no frame of the three joins is dropped.
@pytest.mark.parametrize("server", [{"DIALTONE_RATE_LIMITS": "on"}], indirect=True)
def test_three_people_full_mesh(server: WebServer, new_page: Any) -> None:
    """Everyone is connected to everyone: with three in the room each browser holds two
    connections, both connected and receiving audio; one leaving closes exactly the
    connections to them."""
    alice, bob, carol = people_in_a_channel(
        server, new_page, "round table", ("Alice", "Bob", "Carol")
    )
    people = (alice, bob, carol)
    for caller in people:
        join(caller)
    for me in people:
        me.wait(
            "() => window.__pcs.length === 2"
            " && window.__pcs.every((pc) => pc.connectionState === 'connected')"
        )
        for other in people:
            if other is not me:
                expect(me.row(other)).to_have_attribute(
                    "data-state", "connected", timeout=CONNECT_MS
                )
        assert me.wait_async(
            """async () => {
              const counts = [];
              for (const pc of window.__pcs) {
                const stats = await pc.getStats();
                let n = 0;
                stats.forEach((r) => {
                  if (r.type === "inbound-rtp" && r.kind === "audio") n += r.packetsReceived;
                });
                counts.push(n);
              }
              return counts.every((n) => n > 0) && counts;
            }"""
        ), "a connection without inbound audio"

    for caller in people:
        errors = [json.loads(f) for f in caller.watched.frames_received if '"error"' in f]
        assert [e for e in errors if e.get("type") == "error"] == []
    carol.panel().get_by_role("button", name="Leave voice").click()
    carol.wait("() => window.__pcs.every((pc) => pc.connectionState === 'closed')")
    for me, other in ((alice, bob), (bob, alice)):
        me.wait(
            "() => window.__pcs.filter((pc) => pc.connectionState === 'closed').length === 1"
            " && window.__pcs.filter((pc) => pc.connectionState === 'connected').length === 1"
        )
        expect(me.row(carol)).to_have_count(0)
        expect(me.row(other)).to_have_attribute("data-state", "connected")
    forgive_missing_turn(*people)


def test_deleting_the_channel_ends_its_call(server: WebServer, new_page: Any) -> None:
    """The server ends a deleted channel's room; both browsers hang up and release the
    microphone without anyone pressing Leave."""
    alice, bob = two_people_in_a_channel(server, new_page, "short lived")
    join(alice)
    join(bob)
    expect_connected(alice, bob)

    alice.page.get_by_role("button", name="Delete channel short lived").click()
    alice.page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    for caller in (alice, bob):
        caller.wait(
            "() => window.__pcs.length === 1 && window.__pcs[0].connectionState === 'closed'"
            " && window.__tracks.length > 0"
            " && window.__tracks.every((t) => t.readyState === 'ended')"
        )
    forgive_missing_turn(alice, bob)


def test_a_refused_microphone_says_so(server: WebServer, playwright: Any) -> None:
    """Without the fake permission prompt, headless Chromium refuses the microphone, as a
    person clicking "Block" would: the panel says what to do and nothing joins."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=["--use-fake-device-for-media-stream"]
    )
    try:
        watched = watch(browser.new_context())
        page = watched.page
        register_in_browser(page, server, "dora", "Dora")
        page.get_by_label("New channel name").fill("quiet room")
        page.get_by_role("button", name="Create channel").click()
        panel = page.locator("dt-voice-panel")
        panel.get_by_role("button", name="Join voice").click()
        expect(panel.locator(".voice-status")).to_have_text(
            "Access to your microphone was refused. Allow it in the browser's site settings."
        )
        expect(panel.get_by_role("button", name="Join voice")).to_be_visible()
        expect(panel.get_by_role("button", name="Leave voice")).to_be_hidden()
        sent = [json.loads(f).get("type") for f in watched.frames_sent]
        assert "voice_join" not in sent
        # No console error; the only failed request is this TURN-less server's 404.
        assert [p for p in watched.problems() if p != "GET /voice/turn 404"] == []
    finally:
        browser.close()
