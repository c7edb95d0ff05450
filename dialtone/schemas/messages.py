from __future__ import annotations

import msgspec


class MessageOut(msgspec.Struct):
    id: str
    channel_id: str
    sender_id: str
    sender_name_enc: str
    body: str
    sent_at: str


class MessagePage(msgspec.Struct):
    channel_id: str
    messages: list[MessageOut]
