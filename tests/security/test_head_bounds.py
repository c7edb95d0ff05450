"""The request-head bounds (size and time) of dialtone.server, which hold uvicorn's
httptools protocol instead of subclassing it: the framing follower on its own, then a
real server fed pipelined and keep-alive requests over raw sockets."""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialtone import server as server_module
from dialtone.config import Settings
from dialtone.server import BAD_FRAMING, TOO_LARGE, RequestFraming
from tests.conftest import make_settings

LIMIT = 32 * 1024
BIG_HEAD = b"GET /health HTTP/1.1\r\nhost: x\r\nx-filler: " + b"a" * (40 * 1024) + b"\r\n\r\n"
LOGIN = b"POST /auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
GOOD_STREAM = [
    b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
    LOGIN + b"content-length: 9\r\n\r\n" + b'{"a": 12}',
    LOGIN
    + b"transfer-encoding: chunked\r\n\r\n"
    + b'4;ext=1\r\n{"a"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n',
    LOGIN + b"transfer-encoding: chunked\r\n\r\n" + b"2\r\n{}\r\n0\r\nx-trailer: yes\r\n\r\n",
    b"\r\nGET /health HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
]


def feed_in_pieces(
    framing: RequestFraming, stream: bytes, cuts: list[int]
) -> tuple[int, str | None]:
    """Feed ``stream`` split at ``cuts``; bytes handed on, and the first problem."""
    taken = 0
    edges = [0, *sorted(set(cuts)), len(stream)]
    for start, end in itertools.pairwise(edges):
        if start == end:
            continue
        count, problem = framing.feed(stream[start:end])
        taken += count
        if problem is not None:
            return taken, problem
    return taken, None


def cuts_of(stream: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_well_formed_streams_pass_whole_however_they_are_split(data: st.DataObject) -> None:
    stream = b"".join(GOOD_STREAM)
    framing = RequestFraming(LIMIT)
    taken, problem = feed_in_pieces(framing, stream, data.draw(cuts_of(stream)))
    assert (taken, problem) == (len(stream), None)
    assert framing.heads == len(GOOD_STREAM)
    assert not framing.head_started


@settings(max_examples=200, deadline=None)
@given(data=st.data(), chunked=st.booleans())
def test_a_big_head_after_a_body_is_caught_however_it_is_split(
    data: st.DataObject, chunked: bool
) -> None:
    """The bypass that was: a head arriving in the same read as the end of a body."""
    first = (
        LOGIN + b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        if chunked
        else LOGIN + b"content-length: 2\r\n\r\n{}"
    )
    stream = first + BIG_HEAD
    framing = RequestFraming(LIMIT)
    taken, problem = feed_in_pieces(framing, stream, data.draw(cuts_of(stream)))
    assert problem == TOO_LARGE
    # The first request is handed on whole, and at most a bounded part of the big head.
    assert len(first) <= taken <= len(first) + LIMIT + 4
    assert framing.heads == 1


def test_a_head_at_the_limit_passes_and_one_byte_more_does_not() -> None:
    base = b"GET /health HTTP/1.1\r\nhost: x\r\nx-filler: \r\n\r\n"
    fits = base.replace(b"x-filler: ", b"x-filler: " + b"a" * (LIMIT - len(base)))
    assert len(fits) == LIMIT
    assert RequestFraming(LIMIT).feed(fits) == (len(fits), None)
    over = fits.replace(b"x-filler: ", b"x-filler: a")
    assert RequestFraming(LIMIT).feed(over)[1] == TOO_LARGE


@pytest.mark.parametrize(
    "head",
    [
        LOGIN + b"content-length: 2\r\ncontent-length: 3\r\n\r\n",
        LOGIN + b"content-length: -1\r\n\r\n",
        LOGIN + b"transfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n",
        LOGIN + b"transfer-encoding: gzip\r\n\r\n",
        LOGIN + b"content-length : 2\r\n\r\n",
        LOGIN + b"x-folded: a\r\n b\r\n\r\n",
    ],
)
def test_heads_whose_body_length_is_unclear_are_refused_unseen(head: bytes) -> None:
    framing = RequestFraming(LIMIT)
    assert framing.feed(head + b"{}") == (0, BAD_FRAMING)
    assert framing.heads == 0


def test_a_websocket_upgrade_is_followed_no_further() -> None:
    framing = RequestFraming(LIMIT)
    upgrade = (
        b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: keep-alive, Upgrade\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )
    assert framing.feed(upgrade + b"\x81\x05hello" + BIG_HEAD) == (
        len(upgrade) + 7 + len(BIG_HEAD),
        None,
    )


# ---------------------------------------------------------------- a real server


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path, sqlite_url)


def status_codes(answer: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)


async def read_all(reader: asyncio.StreamReader, within: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), within)


@pytest.mark.parametrize("chunked", [False, True])
async def test_big_head_after_a_body_in_one_write_is_never_answered_200(
    sqlite_settings: Settings, live_factory: Any, chunked: bool
) -> None:
    live = await live_factory(sqlite_settings)
    first = (
        LOGIN + b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        if chunked
        else LOGIN + b"content-length: 2\r\n\r\n{}"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    # The end of the first body and the whole oversized head leave in one write.
    writer.write(first[:-1])
    await writer.drain()
    writer.write(first[-1:] + BIG_HEAD)
    await writer.drain()
    answer = await read_all(reader)
    writer.close()
    statuses = status_codes(answer)
    assert b"200" not in statuses, answer[:500]
    # The login may have been answered (400) before the connection closed.
    assert all(s.startswith(b"4") for s in statuses), statuses
    async with live.client() as http:
        assert (await http.get("/health")).status_code == 200


async def test_pipelined_requests_are_all_answered(
    sqlite_settings: Settings, live_factory: Any
) -> None:
    live = await live_factory(sqlite_settings)
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    get = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
    writer.write(
        get
        + LOGIN
        + b"content-length: 2\r\n\r\n{}"
        + get.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
    )
    await writer.drain()
    answer = await read_all(reader)
    writer.close()
    assert status_codes(answer) == [b"200", b"400", b"200"], answer


async def test_slow_head_of_a_keep_alive_request_is_cut(
    sqlite_settings: Settings, live_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "HEADER_TIMEOUT", 0.3)
    live = await live_factory(sqlite_settings)
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert first.startswith(b"HTTP/1.1 200")
    length = int(
        next(h for h in first.split(b"\r\n") if h.lower().startswith(b"content-length")).split(
            b":"
        )[1]
    )
    await asyncio.wait_for(reader.readexactly(length), 5)
    writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n")  # ...and never finish this head
    await writer.drain()
    assert await read_all(reader) == b""  # closed by the server, keep-alive timeout unused
    writer.close()
