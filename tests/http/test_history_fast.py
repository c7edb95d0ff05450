"""What the history fast path takes for itself; everything else is Litestar's."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dialtone.api.history_fast import parse_query
from dialtone.security.tokens import token_hash
from dialtone.services.auth import cached_caller
from dialtone.services.bans import BanRule
from dialtone.services.context import LAST_SEEN_EVERY, Caller, ServerContext
from dialtone.services.session_cache import SessionCache
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("query", "params"),
    [
        (b"channel_id=c", {"channel_id": "c"}),
        (b"limit=50&channel_id=c", {"channel_id": "c", "limit": "50"}),
        (b"channel_id=c&limit=100&before=m", {"channel_id": "c", "limit": "100", "before": "m"}),
        (b"channel_id=c&after=m", {"channel_id": "c", "after": "m"}),
        (b"channel_id=" + b"c" * 64, {"channel_id": "c" * 64}),
    ],
)
def test_plain_queries_are_taken(query: bytes, params: dict[str, str]) -> None:
    assert parse_query(query) == params


@pytest.mark.parametrize(
    "query",
    [
        b"",
        b"limit=5",  # no channel_id
        b"channel_id=",
        b"channel_id=" + b"c" * 65,
        b"channel_id=a%20b",  # percent-encoded: Litestar decodes it
        b"channel_id=a+b",
        b"channel_id=c&channel_id=d",
        b"channel_id=c&foo=bar",  # unknown names: Litestar's business
        b"channel_id",
        b"channel_id=c&",
        b"channel_id=c&limit=0",
        b"channel_id=c&limit=-1",
        b"channel_id=c&limit=05",
        b"channel_id=c&limit=1.5",
        b"channel_id=c&limit=abc",
        b"channel_id=c&limit=",
        b"channel_id=c&limit=101",  # more than one statement's worth
        b"channel_id=c&limit=\xb2",  # "²" in Latin-1: str.isdigit() says yes
        b"channel_id=\xc3\xa9",  # raw UTF-8: Litestar decodes it
        b"channel_id=c&before=",
        b"channel_id=c&before=m&after=n",
    ],
)
def test_anything_else_goes_to_litestar(query: bytes) -> None:
    assert parse_query(query) is None


def test_only_a_cached_unbanned_caller_with_no_write_due_is_answered(tmp_path: Path) -> None:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    ctx = ServerContext.from_settings(
        make_settings(tmp_path, "sqlite://"), session_cache=SessionCache()
    )
    ctx.clock = lambda: now
    caller = Caller("u1", "d1", is_admin=False, is_trusted=True, token_hash=token_hash("tok"))
    assert cached_caller(ctx, "tok") is None  # not cached
    assert ctx.session_cache is not None
    ctx.session_cache.put(caller.token_hash, caller, now + timedelta(hours=1), epoch=0)
    assert cached_caller(ctx, "tok") is None  # its last_seen_at write is due
    ctx.seen["d1"] = time.monotonic()
    assert cached_caller(ctx, "tok") is caller
    assert cached_caller(ctx, "other") is None
    assert cached_caller(ctx, "t" * 257) is None
    ctx.seen["d1"] = time.monotonic() - LAST_SEEN_EVERY
    assert cached_caller(ctx, "tok") is None
    ctx.seen["d1"] = time.monotonic()
    ctx.bans.add(BanRule("b1", "u1", None, None))
    assert cached_caller(ctx, "tok") is None  # authenticate answers 403
    ctx.bans.remove("b1")
    assert cached_caller(ctx, "tok") is caller
    ctx.session_cache = None  # several nodes: no cache, always authenticate
    assert cached_caller(ctx, "tok") is None
