"""History after its fast path: rows, cursors and errors unchanged; timestamps as before."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from sqlalchemy import update

from dialtone.db.models import ChannelMessage
from dialtone.db.repositories.messages import MessageRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.schemas.common import rfc3339
from tests.conftest import Member

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def no_events(_: object) -> None:
    return None


def in_app(client: AsyncTestClient[Any], action: Callable[[UnitOfWork], Awaitable[None]]) -> None:
    async def run() -> None:
        async with UnitOfWork(client.app.state.sessionmaker, no_events) as uow:
            await action(uow)

    client.blocking_portal.call(run)


async def new_channel(client: AsyncTestClient[Any], member: Member) -> str:
    response = await client.post("/channels", json={"name_enc": "n"}, headers=member.auth)
    assert response.status_code == 201
    channel_id: str = response.json()["channel"]["id"]
    return channel_id


def seed(client: AsyncTestClient[Any], channel_id: str, member: Member, count: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)

    async def add(uow: UnitOfWork) -> None:
        await MessageRepository(uow.session).add_many(
            [
                ChannelMessage(
                    channel_id=channel_id,
                    sender_id=member.user_id,
                    sender_device_id=member.device_id,
                    sender_name_enc="s",
                    body=f"b{i}",
                    sent_at=start + timedelta(seconds=i),
                )
                for i in range(count)
            ]
        )

    in_app(client, add)


async def page(client: AsyncTestClient[Any], member: Member, query: str) -> Any:
    return await client.get(f"/channels/messages?{query}", headers=member.auth)


async def test_pages_and_cursors(client: AsyncTestClient[Any], admin: Member) -> None:
    member = admin  # channels are created by admins
    channel_id = await new_channel(client, member)
    seed(client, channel_id, member, 12)
    newest = (await page(client, member, f"channel_id={channel_id}&limit=5")).json()["messages"]
    assert [m["body"] for m in newest] == ["b7", "b8", "b9", "b10", "b11"]
    assert newest[0]["sent_at"] == "2026-01-01T00:00:07.000000Z"
    assert all(RFC3339.match(m["sent_at"]) for m in newest)
    assert newest[0]["sender_id"] == member.user_id
    older = await page(client, member, f"channel_id={channel_id}&limit=5&before={newest[0]['id']}")
    assert [m["body"] for m in older.json()["messages"]] == ["b2", "b3", "b4", "b5", "b6"]
    after = await page(client, member, f"channel_id={channel_id}&limit=3&after={newest[0]['id']}")
    assert [m["body"] for m in after.json()["messages"]] == ["b8", "b9", "b10"]
    oldest = (await page(client, member, f"channel_id={channel_id}&limit=500")).json()
    first = oldest["messages"][0]["id"]
    response = await page(client, member, f"channel_id={channel_id}&before={first}")
    assert response.status_code == 200
    assert response.json()["messages"] == []


async def test_empty_unknown_and_foreign_cursor(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    member = admin
    empty = await new_channel(client, member)
    response = await page(client, member, f"channel_id={empty}")
    assert response.status_code == 200
    assert response.json() == {"channel_id": empty, "messages": []}

    response = await page(client, member, "channel_id=no-such-channel")
    assert response.status_code == 404
    assert response.json()["code"] == "channel_not_found"

    full = await new_channel(client, member)
    seed(client, full, member, 2)
    message_id = (await page(client, member, f"channel_id={full}")).json()["messages"][0]["id"]
    response = await page(client, member, f"channel_id=no-such-channel&before={message_id}")
    assert response.status_code == 404
    response = await page(client, member, f"channel_id={empty}&after={message_id}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


@given(
    st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9998, 12, 31)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_rfc3339_matches_the_strftime_form(moment: datetime, offset_minutes: int) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    expected = aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert rfc3339(aware) == expected
    assert rfc3339(aware.astimezone(UTC)) == expected


async def test_sent_at_text_from_the_database_matches_rfc3339(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    """History formats sent_at in SQL; it must be the text rfc3339 gives for the value."""
    channel_id = await new_channel(client, admin)
    moments = [
        datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2030, 7, 4, 5, 6, 7, 10, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, 0, 500000, tzinfo=timezone(timedelta(hours=2))),
    ]

    async def add(uow: UnitOfWork) -> None:
        await MessageRepository(uow.session).add_many(
            [
                ChannelMessage(
                    channel_id=channel_id,
                    sender_id=admin.user_id,
                    sender_device_id=admin.device_id,
                    sender_name_enc="s",
                    body=f"b{i}",
                    sent_at=moment,
                )
                for i, moment in enumerate(moments)
            ]
        )

    in_app(client, add)
    response = await page(client, admin, f"channel_id={channel_id}")
    assert [m["sent_at"] for m in response.json()["messages"]] == [rfc3339(m) for m in moments]
    # The cursor paths format the same way.
    first = response.json()["messages"][0]["id"]
    after = await page(client, admin, f"channel_id={channel_id}&after={first}")
    assert [m["sent_at"] for m in after.json()["messages"]] == [rfc3339(m) for m in moments[1:]]


async def test_driver_statements_read_what_the_repository_reads(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    """The fast path's statements (db/repositories/history.py, written per driver) give
    the rows, cursors and channel checks of MessageRepository's Core statements."""
    from dialtone.db.repositories.channels import ChannelRepository
    from dialtone.db.repositories.history import DriverHistory

    channel_id = await new_channel(client, admin)
    empty = await new_channel(client, admin)
    seed(client, channel_id, admin, 30)
    ids: list[str] = []

    async def delete_some(uow: UnitOfWork) -> None:
        rows = await MessageRepository(uow.session).page(channel_id, 30)
        ids.extend(row.id for row in rows)
        for message_id in ids[3:30:7]:
            await uow.session.execute(
                update(ChannelMessage)
                .where(ChannelMessage.id == message_id)
                .values(deleted_at=datetime(2026, 2, 1, tzinfo=UTC), body="")
            )

    in_app(client, delete_some)
    checked: list[int] = []

    async def compare(uow: UnitOfWork) -> None:
        repository = MessageRepository(uow.session)
        channels = ChannelRepository(uow.session)
        conn = await uow.session.connection()
        raw = await conn.get_raw_connection()
        driver = DriverHistory(raw.driver_connection, conn.dialect.name)
        for channel in (channel_id, empty, "no-such-channel"):
            assert await driver.channel_exists(channel) == await channels.exists(channel)
            for message_id in [*ids, "no-such-message"]:
                seq = await repository.seq_of(channel, message_id)
                assert await driver.seq_of(channel, message_id) == seq
                for limit in (1, 4, 100):
                    assert await driver.page(channel, limit) == await repository.page(
                        channel, limit
                    )
                    if seq is None:
                        continue
                    for side in ("before_seq", "after_seq"):
                        want = await repository.page(channel, limit, **{side: seq})
                        assert await driver.page(channel, limit, **{side: seq}) == want
                        checked.append(len(want))

    in_app(client, compare)
    # full, partial and empty pages were compared
    assert sum(checked) > 100
    assert 0 in checked
