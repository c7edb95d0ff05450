"""Hypothesis against a live server: no frame crashes it or wedges the socket."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection

from tests.conftest import Member
from tests.realtime.conftest import LiveServer, chat_frame, recv

FRAME_TYPES = [
    "channel.message.send",
    "voice_join",
    "voice_leave",
    "webrtc_offer",
    "webrtc_answer",
    "ice_candidate",
]
FIELDS = ["channel_id", "body", "sender_name_enc", "recipient", "sdp", "candidate", "type"]
SERVER_EVENTS = {
    "error",
    "channel.message.new",
    "device.joined",
    "voice_roster",
    "voice_join",
    "voice_leave",
    "voice.presence",
    "webrtc_offer",
    "webrtc_answer",
    "ice_candidate",
}
ERROR_CODES = {"invalid_message", "unsupported_type", "channel_not_found", "voice_not_joined"}

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=80),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def frames(draw: st.DrawFn, channel_id: str, user_id: str) -> str | bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 1:
        return draw(st.binary(max_size=200))
    if kind == 2:
        return json.dumps(draw(json_value))
    frame: dict[str, Any] = {
        "type": draw(st.sampled_from([*FRAME_TYPES, "", "voice", "CHANNEL.MESSAGE.SEND"]))
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        frame[name] = draw(
            st.one_of(
                json_value,
                st.sampled_from([channel_id, user_id, "", "\x00", "x" * 9000]),
            )
        )
    if kind == 4:
        frame["channel_id"] = channel_id
    return json.dumps(frame)


@pytest.fixture
async def fuzz_target(
    live: LiveServer, member: Member, channel: str
) -> tuple[ClientConnection, str, str]:
    ws = await live.connect(member)
    return ws, channel, member.user_id


PROBES = itertools.count()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_fuzzed_frames_get_errors_and_the_socket_stays_healthy(
    fuzz_target: tuple[ClientConnection, str, str], data: st.DataObject
) -> None:
    ws, channel, user_id = fuzz_target
    frame = data.draw(frames(channel, user_id))
    await ws.send(frame)
    # A well-formed message with a unique body: its echo proves the frame before it was
    # fully handled and the socket still works.
    marker = f"probe-{next(PROBES)}"
    await ws.send(chat_frame(channel, marker))
    while True:
        event = await recv(ws)
        assert event["type"] in SERVER_EVENTS, event
        if event["type"] == "error":
            assert event["code"] != "server_error", (frame, event)
            assert event["code"] in ERROR_CODES, event
            assert set(event) == {"type", "code", "message"}
        if event["type"] == "channel.message.new" and event["body"] == marker:
            break
