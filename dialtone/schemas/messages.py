from __future__ import annotations

import msgspec


class MessageOut(msgspec.Struct, omit_defaults=True):
    id: str
    channel_id: str
    sender_id: str
    sender_name_enc: str
    body: str
    sent_at: str
    seq: int | None = None  # the message's place in its channel (issue 20)
    client_message_id: str | None = None
    key_version: int = 1  # issue 16: the channel key version of the body; absent means 1
    attachments: list[str] = msgspec.field(default_factory=list)  # issue 17; absent: none


class MessagePage(msgspec.Struct):
    channel_id: str
    messages: list[MessageOut]
