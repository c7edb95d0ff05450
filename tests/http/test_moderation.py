"""Deleting messages: who may, tombstones, history, the deletions feed, erasure on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dialtone.config import Settings
from dialtone.db.models import ChannelMessage
from tests.conftest import ADMIN_TOKEN, Member, Register, app_client, make_settings, register_member
from tests.http.conftest import assert_error, is_time, store_message

OP = {"X-Admin-Token": ADMIN_TOKEN}
SECRET_BODY = "U0VDUkVULUNJUEhFUlRFWFQtMDEyMzQ1Njc4OWFiY2RlZg=="
SECRET_NAME = "TkFNRS1DSVBIRVJURVhULWZlZGNiYTk4NzY1NDMyMTA="


async def history_ids(client: AsyncTestClient[Any], channel: str, who: Member) -> list[str]:
    response = await client.get(f"/channels/messages?channel_id={channel}", headers=who.auth)
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["messages"]]


async def test_sender_moderator_and_admin_may_delete_others_not(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    register: Register,
    channel_id: str,
    db: async_sessionmaker[AsyncSession],
) -> None:
    mod = await register("mod")
    await client.patch(f"/admin/users/{mod.user_id}", json={"is_moderator": True}, headers=OP)
    other = await register("carol")
    own = await store_message(db, channel_id, member, "b3du")
    by_mod = await store_message(db, channel_id, admin, "YWRtaW4=")
    by_admin = await store_message(db, channel_id, other, "Y2Fyb2w=")
    refused = await client.delete(f"/channels/messages?message_id={by_mod}", headers=member.auth)
    assert assert_error(refused, 403)["code"] == "not_allowed"
    for message, who in ((own, member), (by_mod, mod), (by_admin, admin)):
        response = await client.delete(f"/channels/messages?message_id={message}", headers=who.auth)
        assert response.status_code == 204, response.text
    # Again: nothing left to do, still a success (two clients deleting at once agree).
    again = await client.delete(f"/channels/messages?message_id={own}", headers=member.auth)
    assert again.status_code == 204
    missing = await client.delete("/channels/messages?message_id=nope", headers=admin.auth)
    assert assert_error(missing, 404)["code"] == "message_not_found"
    assert_error(await client.delete("/channels/messages", headers=admin.auth), 400)
    assert await history_ids(client, channel_id, member) == []


async def test_tombstone_keeps_ids_and_times_but_not_the_ciphertext(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    channel_id: str,
    db: async_sessionmaker[AsyncSession],
) -> None:
    kept = await store_message(db, channel_id, member, "a2VwdA==")
    gone = await store_message(db, channel_id, member, SECRET_BODY, SECRET_NAME)
    await client.delete(f"/channels/messages?message_id={gone}", headers=member.auth)
    async with db() as session:
        row = (
            await session.execute(select(ChannelMessage).where(ChannelMessage.id == gone))
        ).scalar_one()
    assert row.body == ""
    assert row.sender_name_enc == ""
    assert row.deleted_by == member.user_id
    assert row.deleted_at is not None
    assert row.sender_id == member.user_id
    assert row.channel_id == channel_id
    # History leaves tombstones out (old clients would try to decrypt an empty body).
    assert await history_ids(client, channel_id, admin) == [kept]
    # A tombstone still works as a paging cursor.
    after = await client.get(
        f"/channels/messages?channel_id={channel_id}&before={gone}", headers=admin.auth
    )
    assert [m["id"] for m in after.json()["messages"]] == [kept]


async def test_deleted_ciphertext_is_gone_from_the_sqlite_file(
    client: AsyncTestClient[Any],
    settings: Settings,
    admin: Member,
    member: Member,
    channel_id: str,
    db: async_sessionmaker[AsyncSession],
) -> None:
    if not settings.is_sqlite:
        return  # PostgreSQL keeps dead tuples until VACUUM (see docs/OPERATIONS.md)
    path = Path(settings.db_url.split("///", 1)[1])
    messages = [await store_message(db, channel_id, member, SECRET_BODY, SECRET_NAME)]
    for i in range(20):  # more rows on the same pages
        messages.append(await store_message(db, channel_id, member, f"ZmlsbGVy{i:04d}"))
    await db.kw["bind"].dispose()

    def on_disk() -> bytes:
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    assert SECRET_BODY.encode() in on_disk()
    response = await client.delete(f"/admin/users/{member.user_id}/messages", headers=OP)
    assert response.json() == {"deleted": 21}
    disk = on_disk()
    assert SECRET_BODY.encode() not in disk
    assert SECRET_NAME.encode() not in disk


async def test_deletions_feed_pages_oldest_first(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    channel_id: str,
    db: async_sessionmaker[AsyncSession],
) -> None:
    ids = [await store_message(db, channel_id, member, f"bXNn{i}") for i in range(5)]
    start = (await client.get("/admin/stats", headers=OP)).json()  # a point in time
    assert start["messages"] == 5
    for message in ids:
        await client.delete(f"/channels/messages?message_id={message}", headers=admin.auth)
    feed_url = f"/channels/messages/deleted?channel_id={channel_id}"
    feed = await client.get(feed_url, headers=member.auth)
    assert feed.status_code == 200
    body = feed.json()
    assert body["channel_id"] == channel_id
    assert [d["message_id"] for d in body["deletions"]] == ids
    first = body["deletions"][0]
    assert set(first) == {
        "message_id",
        "channel_id",
        "sender_id",
        "sent_at",
        "deleted_at",
        "deleted_by",
    }
    assert first["sender_id"] == member.user_id
    assert first["deleted_by"] == admin.user_id
    assert is_time(first["deleted_at"])
    paged: list[str] = []
    cursor = None
    while True:
        url = f"/channels/messages/deleted?channel_id={channel_id}&limit=2"
        url += f"&cursor={cursor}" if cursor else ""
        page = (await client.get(url, headers=admin.auth)).json()
        paged += [d["message_id"] for d in page["deletions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == ids
    since = body["deletions"][3]["deleted_at"]
    later = await client.get(
        f"/channels/messages/deleted?channel_id={channel_id}&since={since}", headers=admin.auth
    )
    assert [d["message_id"] for d in later.json()["deletions"]] == ids[3:]
    for query, status in [
        ("channel_id=nope", 404),
        (f"channel_id={channel_id}&since=yesterday", 400),
        (f"channel_id={channel_id}&cursor=xyz", 400),
        ("", 400),
    ]:
        response = await client.get(f"/channels/messages/deleted?{query}", headers=admin.auth)
        assert_error(response, status)


async def test_delete_a_users_messages_in_one_channel_or_everywhere(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    channel_id: str,
    db: async_sessionmaker[AsyncSession],
) -> None:
    other = (
        await client.post("/channels", json={"name_enc": "b3RoZXI="}, headers=admin.auth)
    ).json()["channel"]["id"]
    for channel in (channel_id, other):
        for i in range(3):
            await store_message(db, channel, member, f"c3BhbQ{i}")
    mine = await store_message(db, channel_id, admin, "YWRtaW4=")
    url = f"/admin/users/{member.user_id}/messages"
    one = await client.delete(f"{url}?channel_id={other}", headers=OP)
    assert one.json() == {"deleted": 3}
    assert await history_ids(client, other, admin) == []
    assert len(await history_ids(client, channel_id, admin)) == 4
    rest = await client.delete(url, headers=OP)
    assert rest.json() == {"deleted": 3}
    assert await history_ids(client, channel_id, admin) == [mine]
    assert (await client.delete(url, headers=OP)).json() == {"deleted": 0}
    assert_error(await client.delete(f"{url}?channel_id=nope", headers=OP), 404)


async def test_concurrent_deletes_of_one_message_announce_it_once(
    client: AsyncTestClient[Any],
    admin: Member,
    member: Member,
    channel_id: str,
    db: async_sessionmaker[AsyncSession],
) -> None:
    message = await store_message(db, channel_id, member, "cmFjZQ==")
    responses = await asyncio.gather(
        *(
            client.delete(f"/channels/messages?message_id={message}", headers=who.auth)
            for who in (admin, member, admin, member)
        )
    )
    assert [r.status_code for r in responses] == [204] * 4
    log = (await client.get("/admin/log?topic=message_deleted", headers=OP)).json()["entries"]
    assert len(log) == 1


def count_checkpoints(client: AsyncTestClient[Any]) -> list[str]:
    """Every WAL checkpoint the app's own engine runs, as SQLAlchemy sees it executed."""
    engine: AsyncEngine = client.app.state.sessionmaker.kw["bind"]
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "wal_checkpoint" in statement.lower():
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    return seen


async def test_deleting_a_deleted_message_runs_no_checkpoint(
    client: AsyncTestClient[Any],
    settings: Settings,
    admin: Member,
    member: Member,
    channel_id: str,
    db: async_sessionmaker[AsyncSession],
) -> None:
    """Issue 18: every repeat of a deletion ran a SQLite WAL checkpoint, unthrottled."""
    checkpoints = count_checkpoints(client)
    message = await store_message(db, channel_id, member, "b25jZQ==")
    first = await client.delete(f"/channels/messages?message_id={message}", headers=member.auth)
    assert first.status_code == 204
    erased_once = 1 if settings.is_sqlite else 0  # PostgreSQL has no WAL file to empty
    assert len(checkpoints) == erased_once
    for who in (member, admin, member):
        again = await client.delete(f"/channels/messages?message_id={message}", headers=who.auth)
        assert again.status_code == 204
    missing = await client.delete("/channels/messages?message_id=nope", headers=member.auth)
    assert missing.status_code == 404
    assert len(checkpoints) == erased_once
    # A message really erased still gets its checkpoint.
    other = await store_message(db, channel_id, member, "dHdpY2U=")
    done = await client.delete(f"/channels/messages?message_id={other}", headers=admin.auth)
    assert done.status_code == 204
    assert len(checkpoints) == 2 * erased_once


async def test_deletions_are_rate_limited_per_user(
    tmp_path: Path, db_url: str, db: async_sessionmaker[AsyncSession]
) -> None:
    limited = make_settings(
        tmp_path, db_url, rate_limits=True, message_delete_burst=5, message_delete_refill=60
    )
    async with app_client(limited) as client:
        admin = await register_member(client, "admin")
        member = await register_member(client, "bob")
        channel = await client.post("/channels", json={"name_enc": "Zw=="}, headers=admin.auth)
        channel_id = channel.json()["channel"]["id"]
        message = await store_message(db, channel_id, member, "bG9vcA==")
        url = f"/channels/messages?message_id={message}"
        statuses = [(await client.delete(url, headers=member.auth)).status_code for _ in range(8)]
        assert statuses == [204] * 5 + [429] * 3
        refused = await client.delete(url, headers=member.auth)
        assert refused.json() == {
            "error": "too many attempts, try again later",
            "code": "rate_limited",
        }
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Per user: someone else's bucket is untouched.
        assert (await client.delete(url, headers=admin.auth)).status_code == 204
