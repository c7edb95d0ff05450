"""GET /channels/messages answers byte for byte what it answered before its fast path.

``history_wire.json`` was recorded from the code before the history read was reworked
(issue 12): the status, every response header in order and the exact body bytes of
pages (newest, ``before``/``after`` cursors, a deleted message's id as a cursor, an
empty channel, bodies that need JSON escaping) and of refusals (bad or missing
parameters, unknown channel, foreign cursor, no/bad token, a banned user, a wrong
method). The identifiers the server makes up (users, channels, the token) are written
there as placeholders. SQLite and PostgreSQL must give the same bytes.

Re-record (only for a deliberate wire change): ``DIALTONE_RECORD_HISTORY_WIRE=1``.
Re-recorded once for issue 20, which added each item's ``seq``: nothing else changed.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.models import ChannelMessage
from tests.conftest import ADMIN_TOKEN, Member, Register

GOLDEN = Path(__file__).with_name("history_wire.json")
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
OP = {"X-Admin-Token": ADMIN_TOKEN}

# Bodies a client may send (the server stores ciphertext as given): escaping matters.
BODIES = ["Y2lwaGVy", 'q"uote\\back/slash', "caf\u00e9 \u2028 \u0001 \U0001f600", "", "x" * 300]


def message_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


async def seed(db: async_sessionmaker[AsyncSession], channel: str, a: Member, b: Member) -> None:
    """14 messages, ids in order; 4 and 9 deleted (tombstones: emptied, deleted_at set)."""
    async with db.begin() as session:
        for i in range(14):  # one by one: seq follows this order on every database
            sender = a if i % 3 else b
            deleted = i in (4, 9)
            await session.execute(
                insert(ChannelMessage).values(
                    id=message_id(i),
                    channel_id=channel,
                    sender_id=sender.user_id,
                    sender_device_id=sender.device_id,
                    sender_name_enc="" if deleted else f"bmFtZS{i}=",
                    body="" if deleted else BODIES[i % len(BODIES)],
                    # microseconds of every width, and one whole second
                    sent_at=START + timedelta(seconds=i, microseconds=(i * 70_001) % 1_000_000),
                    deleted_at=START + timedelta(days=1) if deleted else None,
                    deleted_by=a.user_id if deleted else None,
                    # Numbered as the message writer numbers them (issue 20 added `seq`).
                    channel_seq=i + 1,
                )
            )


def requests(channel: str, empty: str) -> list[tuple[str, str, str, str]]:
    """(name, method, path and query, who) for every recorded exchange."""
    url = "/channels/messages?channel_id="
    full = url + channel
    return [
        ("newest, default limit", "GET", full, "admin"),
        ("newest five", "GET", full + "&limit=5", "admin"),
        ("as the second member", "GET", full + "&limit=5", "bob"),
        ("lower-case bearer", "GET", full + "&limit=2", "admin-lowercase"),
        ("limit above the cap", "GET", full + "&limit=100000", "admin"),
        ("limit one", "GET", full + "&limit=1", "admin"),
        ("before", "GET", full + f"&limit=3&before={message_id(8)}", "admin"),
        ("before a deleted message", "GET", full + f"&limit=3&before={message_id(9)}", "admin"),
        ("before the first", "GET", full + f"&before={message_id(0)}", "admin"),
        ("after", "GET", full + f"&limit=4&after={message_id(2)}", "admin"),
        ("after a deleted message", "GET", full + f"&after={message_id(4)}&limit=2", "admin"),
        ("after the last", "GET", full + f"&after={message_id(13)}", "admin"),
        (
            "parameters in another order",
            "GET",
            f"/channels/messages?limit=2&channel_id={channel}",
            "admin",
        ),
        ("unknown parameter ignored", "GET", full + "&limit=2&foo=bar", "admin"),
        ("empty channel", "GET", url + empty, "admin"),
        ("empty channel, cursor", "GET", url + empty + f"&before={message_id(3)}", "admin"),
        ("unknown channel", "GET", url + "no-such-channel", "admin"),
        (
            "unknown channel, cursor",
            "GET",
            url + f"no-such-channel&before={message_id(3)}",
            "admin",
        ),
        ("unknown cursor", "GET", full + "&before=00000000-0000-4000-8000-999999999999", "admin"),
        ("both cursors", "GET", full + f"&before={message_id(3)}&after={message_id(5)}", "admin"),
        ("empty cursor", "GET", full + "&before=", "admin"),
        ("cursor with NUL", "GET", full + "&after=a%00b", "admin"),
        ("cursor too long", "GET", full + "&before=" + "c" * 65, "admin"),
        ("limit zero", "GET", full + "&limit=0", "admin"),
        ("limit negative", "GET", full + "&limit=-3", "admin"),
        ("limit not a number", "GET", full + "&limit=abc", "admin"),
        ("limit fractional", "GET", full + "&limit=1.5", "admin"),
        ("limit empty", "GET", full + "&limit=", "admin"),
        ("limit too large", "GET", full + "&limit=99999999999999999999999", "admin"),
        ("no channel_id", "GET", "/channels/messages", "admin"),
        ("no channel_id, limit", "GET", "/channels/messages?limit=5", "admin"),
        ("empty channel_id", "GET", url, "admin"),
        ("channel_id with NUL", "GET", url + "%00", "admin"),
        ("channel_id too long", "GET", url + "c" * 65, "admin"),
        ("no token", "GET", full, "nobody"),
        ("no token, bad limit", "GET", full + "&limit=0", "nobody"),
        ("no token, no channel_id", "GET", "/channels/messages", "nobody"),
        ("no token, limit not a number", "GET", full + "&limit=abc", "nobody"),
        ("unknown token, bad limit", "GET", full + "&limit=-1", "wrong-token"),
        ("unknown token", "GET", full, "wrong-token"),
        ("unknown token, unknown channel", "GET", url + "nope", "wrong-token"),
        ("not a bearer token", "GET", full, "basic"),
        ("empty bearer token", "GET", full, "empty-bearer"),
        ("wrong method", "POST", full, "admin"),
        ("banned member", "GET", full + "&limit=2", "banned"),
        ("banned member, unknown channel", "GET", url + "nope", "banned"),
    ]


async def exchange(
    client: AsyncTestClient[Any],
    db: async_sessionmaker[AsyncSession],
    admin: Member,
    register: Register,
    answered: list[bytes],
) -> tuple[list[dict[str, Any]], set[str]]:
    """The recorded exchanges, and the names of those the fast path answered."""
    bob = await register("bob")
    carol = await register("carol")
    made = [
        await client.post("/channels", json={"name_enc": n}, headers=admin.auth)
        for n in ("ZnVsbA==", "ZW1wdHk=")
    ]
    channel, empty = (r.json()["channel"]["id"] for r in made)
    await seed(db, channel, admin, bob)
    ban = await client.post("/admin/bans", json={"user_id": carol.user_id}, headers=OP)
    assert ban.status_code == 201, ban.text
    auth = {
        "admin": admin.auth,
        "admin-lowercase": {"Authorization": f"bearer {admin.token}"},
        "bob": bob.auth,
        "nobody": {},
        "wrong-token": {"Authorization": "Bearer bm9wZS1ub3BlLW5vcGUtbm9wZS1ub3BlLW5vcGUtbm8"},
        "basic": {"Authorization": f"Basic {admin.token}"},
        "empty-bearer": {"Authorization": "Bearer "},
        "banned": carol.auth,
    }
    # The made-up identifiers, as placeholders (longest first: none is part of another).
    names = {
        channel: "<channel>",
        empty: "<empty-channel>",
        admin.user_id: "<admin>",
        bob.user_id: "<bob>",
        carol.user_id: "<carol>",
    }
    recorded = []
    fast = set()
    for name, method, target, who in requests(channel, empty):
        before = len(answered)
        response = await client.request(method, target, headers=auth[who])
        if len(answered) > before:
            fast.add(name)
        text = response.content.decode()
        shown_target = target
        for value, placeholder in names.items():
            text = text.replace(value, placeholder)
            shown_target = shown_target.replace(value, placeholder)
        headers = [
            [k.decode(), v.decode()] for k, v in response.headers.raw if k.lower() != b"date"
        ]
        recorded.append(
            {
                "name": name,
                "request": f"{method} {shown_target} as {who}",
                "status": response.status_code,
                "headers": headers,
                "body": text,
            }
        )
    return recorded, fast


# Answered by the fast path (api/history_fast.py) when it is on; Litestar answers the
# rest: refusals, pages it does not take (over 100 messages, an empty cursor) and the
# first request of a token the session cache does not know yet (bob's).
FAST = {
    "newest, default limit",
    "newest five",
    "lower-case bearer",
    "limit one",
    "before",
    "before a deleted message",
    "before the first",
    "after",
    "after a deleted message",
    "after the last",
    "parameters in another order",
    "empty channel",
}


@pytest.mark.parametrize("path", ["fast", "litestar"])
async def test_history_answers_are_byte_for_byte_as_recorded(
    client: AsyncTestClient[Any],
    db: async_sessionmaker[AsyncSession],
    admin: Member,
    register: Register,
    path: str,
) -> None:
    routes = client.app.fast_routes
    answered: list[bytes] = []
    if path == "fast":
        history = routes[("GET", "/channels/messages")]

        async def counted(scope: Any, send: Any) -> bool:
            done: bool = await history(scope, send)
            if done:
                answered.append(scope["query_string"])
            return done

        routes[("GET", "/channels/messages")] = counted
    else:
        routes.clear()
    recorded, fast = await exchange(client, db, admin, register, answered)
    if os.environ.get("DIALTONE_RECORD_HISTORY_WIRE") == "1":
        GOLDEN.write_text(json.dumps(recorded, indent=1, ensure_ascii=False) + "\n")
    expected = json.loads(GOLDEN.read_text())
    assert [r["request"] for r in recorded] == [e["request"] for e in expected]
    for got, want in zip(recorded, expected, strict=True):
        assert got == want, got["name"]
    # The pages themselves, parsed: what the recording says is what clients rely on.
    by_name = {r["name"]: r for r in recorded}
    newest = json.loads(by_name["newest five"]["body"])
    assert list(newest) == ["channel_id", "messages"]
    assert [m["id"] for m in newest["messages"]] == [message_id(i) for i in (8, 10, 11, 12, 13)]
    assert list(newest["messages"][0]) == [
        "id",
        "channel_id",
        "sender_id",
        "sender_name_enc",
        "body",
        "sent_at",
        "seq",  # issue 20: the message's place in its channel
    ]
    assert [m["seq"] for m in newest["messages"]] == [9, 11, 12, 13, 14]
    before = json.loads(by_name["before a deleted message"]["body"])
    assert [m["id"] for m in before["messages"]] == [message_id(i) for i in (6, 7, 8)]
    assert by_name["no token"]["status"] == 401
    assert by_name["banned member"]["status"] == 403
    assert fast == (FAST if path == "fast" else set())
