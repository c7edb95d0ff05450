"""GET /channels/messages: newest page oldest-first, limit cap, before/after cursors."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.base import new_id, utcnow
from dialtone.db.models import ChannelMessage
from tests.conftest import Member
from tests.http.conftest import assert_error, is_time, store_message

Db = async_sessionmaker[AsyncSession]


async def bulk_messages(db: Db, channel: str, sender: Member, n: int) -> list[str]:
    """n messages in order; bodies are their position ("m0", "m1", ...)."""
    rows = [
        {
            "id": new_id(),
            "channel_id": channel,
            "sender_id": sender.user_id,
            "sender_device_id": sender.device_id,
            "sender_name_enc": "bmFtZQ==",
            "body": f"m{i}",
            "sent_at": utcnow(),
        }
        for i in range(n)
    ]
    async with db.begin() as session:
        for row in rows:  # one by one so seq follows list order on every database
            await session.execute(insert(ChannelMessage).values(**row))
    return [str(row["id"]) for row in rows]


def bodies(response: Any) -> list[str]:
    return [m["body"] for m in response.json()["messages"]]


async def test_history_shape(
    client: AsyncTestClient[Any], member: Member, channel_id: str, db: Db
) -> None:
    message_id = await store_message(db, channel_id, member, "Y2lwaGVy", "Qm9i")
    response = await client.get(f"/channels/messages?channel_id={channel_id}", headers=member.auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["channel_id"] == channel_id
    [message] = body["messages"]
    # `seq` added by issue 20 (its place in the channel); nothing else.
    assert set(message) == {
        "id",
        "channel_id",
        "sender_id",
        "sender_name_enc",
        "body",
        "sent_at",
        "seq",
    }
    assert message["seq"] == 1
    assert message["id"] == message_id
    assert message["channel_id"] == channel_id
    assert message["sender_id"] == member.user_id
    assert message["sender_name_enc"] == "Qm9i"
    assert message["body"] == "Y2lwaGVy"
    assert is_time(message["sent_at"])


async def test_history_empty(client: AsyncTestClient[Any], member: Member, channel_id: str) -> None:
    response = await client.get(f"/channels/messages?channel_id={channel_id}", headers=member.auth)
    assert response.json() == {"channel_id": channel_id, "messages": []}


async def test_history_default_limit_and_cap(
    client: AsyncTestClient[Any], member: Member, channel_id: str, db: Db
) -> None:
    await bulk_messages(db, channel_id, member, 520)
    url = f"/channels/messages?channel_id={channel_id}"
    default = bodies(await client.get(url, headers=member.auth))
    assert default == [f"m{i}" for i in range(420, 520)]
    capped = bodies(await client.get(url + "&limit=100000", headers=member.auth))
    assert capped == [f"m{i}" for i in range(20, 520)]
    small = bodies(await client.get(url + "&limit=3", headers=member.auth))
    assert small == ["m517", "m518", "m519"]
    huge = await client.get(url + "&limit=99999999999999999999999", headers=member.auth)
    assert_error(huge, 400)


async def test_history_cursors(
    client: AsyncTestClient[Any], member: Member, channel_id: str, db: Db
) -> None:
    ids = await bulk_messages(db, channel_id, member, 10)
    url = f"/channels/messages?channel_id={channel_id}&limit=3"
    assert bodies(await client.get(url, headers=member.auth)) == ["m7", "m8", "m9"]
    older = await client.get(url + f"&before={ids[7]}", headers=member.auth)
    assert bodies(older) == ["m4", "m5", "m6"]
    oldest = await client.get(url + f"&before={ids[2]}", headers=member.auth)
    assert bodies(oldest) == ["m0", "m1"]
    assert bodies(await client.get(url + f"&before={ids[0]}", headers=member.auth)) == []
    newer = await client.get(url + f"&after={ids[2]}", headers=member.auth)
    assert bodies(newer) == ["m3", "m4", "m5"]
    assert bodies(await client.get(url + f"&after={ids[8]}", headers=member.auth)) == ["m9"]
    assert bodies(await client.get(url + f"&after={ids[9]}", headers=member.auth)) == []


async def test_history_bad_parameters(
    client: AsyncTestClient[Any], member: Member, channel_id: str, db: Db
) -> None:
    [first] = await bulk_messages(db, channel_id, member, 1)
    for query in [
        "limit=0",
        "limit=-5",
        "limit=abc",
        "limit=1.5",
        "before=00000000-0000-4000-8000-000000000000",
        "after=nonsense",
        "before=a%00b",
        "before={first}&after={first}",
    ]:
        url = f"/channels/messages?channel_id={channel_id}&" + query.format(first=first)
        assert_error(await client.get(url, headers=member.auth), 400)


async def test_history_cursor_of_another_channel(
    client: AsyncTestClient[Any], admin: Member, channel_id: str, db: Db
) -> None:
    other = await client.post("/channels", json={"name_enc": "b3RoZXI="}, headers=admin.auth)
    [foreign] = await bulk_messages(db, other.json()["channel"]["id"], admin, 1)
    url = f"/channels/messages?channel_id={channel_id}&before={foreign}"
    assert_error(await client.get(url, headers=admin.auth), 400)


async def test_history_failures(client: AsyncTestClient[Any], member: Member) -> None:
    assert_error(await client.get("/channels/messages", headers=member.auth), 400)
    assert_error(await client.get("/channels/messages?channel_id=", headers=member.auth), 400)
    missing = "00000000-0000-4000-8000-000000000000"
    url = f"/channels/messages?channel_id={missing}"
    assert_error(await client.get(url, headers=member.auth), 404)
    assert_error(await client.get(url), 401)
    assert_error(await client.get("/channels/messages?channel_id=%00", headers=member.auth), 400)


async def test_deleting_a_channel_deletes_its_history(
    client: AsyncTestClient[Any], admin: Member, channel_id: str, db: Db
) -> None:
    await bulk_messages(db, channel_id, admin, 2)
    await client.delete(f"/channels?channel_id={channel_id}", headers=admin.auth)
    url = f"/channels/messages?channel_id={channel_id}"
    assert_error(await client.get(url, headers=admin.auth), 404)
