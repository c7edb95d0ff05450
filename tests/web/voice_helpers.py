"""What the voice tests share: watching a page's WebRTC objects, and two people in a channel.

The page's own code is untouched: an init script (run before the client's modules) wraps
the browser's RTCPeerConnection, Audio and getUserMedia so a test can read the objects the
client made (connection states, getStats(), playback volume, tracks stopped on leave).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.web.conftest import Watched, WebServer, register_in_browser

# How long a call may take to connect on a loaded 2-core machine (an upper bound for the
# event waits, never a pause).
CONNECT_MS = 60_000

WEBRTC_SPY = """
(() => {
  const NativePC = window.RTCPeerConnection;
  window.__pcs = [];
  window.__candidateErrors = [];
  window.RTCPeerConnection = class extends NativePC {
    constructor(config) {
      super(config);
      this.__config = config;
      window.__pcs.push(this);
      this.addEventListener("icecandidateerror", (e) =>
        window.__candidateErrors.push({ code: e.errorCode, text: e.errorText, url: e.url }));
    }
  };
  const NativeAudio = window.Audio;
  window.__audios = [];
  window.Audio = class extends NativeAudio {
    constructor(...args) { super(...args); window.__audios.push(this); }
  };
  const media = navigator.mediaDevices;
  const getUserMedia = media.getUserMedia.bind(media);
  window.__tracks = [];
  media.getUserMedia = async (constraints) => {
    const stream = await getUserMedia(constraints);
    window.__tracks.push(...stream.getTracks());
    return stream;
  };
})();
"""

# Audio packets received over all of a page's connected connections; falsy while none.
INBOUND_AUDIO_PACKETS = """async () => {
  let packets = 0;
  for (const pc of window.__pcs) {
    if (pc.connectionState !== "connected") continue;
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "audio") packets += r.packetsReceived;
    });
  }
  return packets > 0 && packets;
}"""

# The candidate types of the pair each connected connection uses: [[local, remote], ...].
SELECTED_PAIRS = """async () => {
  const pairs = [];
  for (const pc of window.__pcs) {
    if (pc.connectionState !== "connected") continue;
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type !== "transport" || !r.selectedCandidatePairId) return;
      const pair = stats.get(r.selectedCandidatePairId);
      pairs.push([stats.get(pair.localCandidateId).candidateType,
                  stats.get(pair.remoteCandidateId).candidateType]);
    });
  }
  return pairs;
}"""


@dataclass
class Caller:
    watched: Watched
    username: str
    display: str

    @property
    def page(self) -> Page:
        return self.watched.page

    def panel(self) -> Any:
        return self.page.locator("dt-voice-panel")

    def row(self, other: Caller) -> Any:
        return self.panel().locator("li.voice-member", has_text=other.display)

    def wait(self, script: str, arg: Any = None, timeout: int = CONNECT_MS) -> Any:
        """The first truthy value of a synchronous page function (re-run on every frame)."""
        return self.page.wait_for_function(script, arg=arg, timeout=timeout).json_value()

    def wait_async(self, script: str, timeout: int = CONNECT_MS) -> Any:
        """The first truthy value of an async page function, such as one reading
        getStats(), which has no event to wait for: the page re-checks it every 100 ms
        until the bound, then the falsy value comes back and the test's assert fails."""
        return self.page.evaluate(
            f"""async () => {{
              const check = {script};
              const end = performance.now() + {int(timeout)};
              for (;;) {{
                const value = await check();
                if (value || performance.now() > end) return value;
                await new Promise((resolve) => setTimeout(resolve, 100));
              }}
            }}"""
        )

    def eval(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)


def fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def people_in_a_channel(
    server: WebServer, new_page: Any, channel: str, names: tuple[str, ...]
) -> list[Caller]:
    """The first person (the server's first account, its admin) creates a channel; the
    others register after and open it. Every page watched."""
    people: list[Caller] = []
    tag = secrets.token_hex(3)
    for name in names:
        watched = new_page()
        watched.context.add_init_script(WEBRTC_SPY)
        caller = Caller(watched, f"{name.lower()}{tag}", f"{name} {tag}")
        register_in_browser(caller.page, server, caller.username, caller.display)
        people.append(caller)
        page = caller.page
        if len(people) == 1:
            page.get_by_label("New channel name").fill(channel)
            page.get_by_role("button", name="Create channel").click()
        else:
            link = page.get_by_role("navigation", name="Channels").get_by_role("link", name=channel)
            # The creator's client wraps the channel key for each new device; on a loaded
            # machine that can take a while (the web client's own tests cover it).
            expect(link).to_be_visible(timeout=CONNECT_MS)
            link.click()
        expect(page.get_by_role("heading", name=f"# {channel}")).to_be_visible()
    # The tests find people by display name: everyone's is sealed and read by everyone
    # (the directory key reaches a new member from one who holds it) before they go on.
    for me in people:
        listed = me.page.get_by_role("list", name="People", exact=True)
        for other in people:
            expect(listed).to_contain_text(other.display, timeout=CONNECT_MS)
    return people


def two_people_in_a_channel(
    server: WebServer, new_page: Any, channel: str
) -> tuple[Caller, Caller]:
    alice, bob = people_in_a_channel(server, new_page, channel, ("Alice", "Bob"))
    return alice, bob


def join(caller: Caller) -> None:
    caller.panel().get_by_role("button", name="Join voice").click()
    expect(caller.panel().get_by_role("button", name="Leave voice")).to_be_visible()


def set_relay_only(caller: Caller) -> None:
    panel = caller.panel()
    panel.get_by_text("Voice settings").click()
    panel.get_by_label("Relay only", exact=False).check()


def expect_connected(a: Caller, b: Caller) -> None:
    """Each side has one RTCPeerConnection, connected, and says so for the other person."""
    for me, other in ((a, b), (b, a)):
        me.wait(
            "() => window.__pcs.length === 1 && window.__pcs[0].connectionState === 'connected'"
        )
        expect(me.row(other)).to_have_attribute("data-state", "connected", timeout=CONNECT_MS)


def expect_audio_flows(a: Caller, b: Caller) -> None:
    for me in (a, b):
        assert me.wait_async(INBOUND_AUDIO_PACKETS), "no inbound audio packets"
