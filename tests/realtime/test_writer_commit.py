"""DIALTONE_MESSAGE_SYNC_COMMIT: message batches may skip waiting for the WAL flush."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from dialtone.config import Settings
from tests.realtime.conftest import chat_frame, next_of, running_server, with_settings


@pytest.mark.parametrize("sync", [True, False])
async def test_message_batches_commit_asynchronously_only_when_asked(
    settings: Settings, sync: bool
) -> None:
    async with running_server(with_settings(settings, message_sync_commit=sync)) as live:
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        engine = live.server.config.app.state.engine.sync_engine  # type: ignore[attr-defined]
        event.listen(engine, "before_cursor_execute", seen)
        admin = await live.register("admin")
        channel = await live.create_channel(admin)
        ws = await live.connect(admin)
        live.sockets.append(ws)
        statements.clear()
        await ws.send(chat_frame(channel, "aGk="))
        assert (await next_of(ws, "channel.message.new"))["body"] == "aGk="
        event.remove(engine, "before_cursor_execute", seen)

        history = await live.http.get(
            "/channels/messages", params={"channel_id": channel}, headers=admin.auth
        )
        assert [m["body"] for m in history.json()["messages"]] == ["aGk="]
        asynchronous = [s for s in statements if "synchronous_commit" in s]
        expected = 0 if sync or settings.is_sqlite else 1
        assert len(asynchronous) == expected
