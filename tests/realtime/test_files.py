"""Encrypted files on a real server (uvicorn, real sockets), SQLite and PostgreSQL:
upload and download as the client convention has them, every refusal, attachments on
messages, deletion with the message, the orphan sweep, channel images."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from dialtone.config import Settings
from dialtone.db.models import Channel, ChannelMember, StoredFile
from dialtone.services.context import ServerContext
from dialtone.services.maintenance import purge_expired
from dialtone.storage import LocalStorage
from tests.conftest import ADMIN_TOKEN, Member
from tests.e2ee import attachment_body, b64, open_file, seal, seal_file
from tests.realtime.conftest import LiveServer, next_of, running_server, with_settings

OP = {"X-Admin-Token": ADMIN_TOKEN}
OCTETS = {"Content-Type": "application/octet-stream"}


def ctx_of(live: LiveServer) -> ServerContext:
    ctx: ServerContext = live.server.config.app.state.ctx  # type: ignore[attr-defined]
    return ctx


def storage_of(live: LiveServer) -> LocalStorage:
    storage = ctx_of(live).files
    assert isinstance(storage, LocalStorage)
    return storage


async def upload(live: LiveServer, who: Member, channel: str, blob: bytes) -> dict[str, Any]:
    response = await live.http.post(
        f"/files?channel_id={channel}", content=blob, headers=who.auth | OCTETS
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def send_frame(channel: str, body: str, attachments: list[str] | None = None, **extra: Any) -> str:
    frame: dict[str, Any] = {
        "type": "channel.message.send",
        "channel_id": channel,
        "body": body,
        "sender_name_enc": "bg==",
        **extra,
    }
    if attachments is not None:
        frame["attachments"] = attachments
    return json.dumps(frame)


async def raw_request(live: LiveServer, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request over a plain socket: the status line and what followed, read as soon
    as the server answers (``body`` may be shorter than the Content-Length sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    try:
        writer.write(head.encode() + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer


def head_of(method: str, path: str, who: Member, **headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {who.token}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines)


# ---------------------------------------------------------------- upload and download


async def test_upload_and_download_follow_the_client_convention(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    picture = os.urandom(300_000)
    key, blob = seal_file(picture)
    stored = await upload(live, admin, channel, blob)
    assert stored["size"] == len(blob) == len(picture) + 28
    assert stored["sha256"] == hashlib.sha256(blob).hexdigest()
    assert set(stored) == {"id", "size", "sha256", "created_at"}
    # On disk: the ciphertext, never the picture.
    on_disk = storage_of(live).path(stored["id"]).read_bytes()
    assert on_disk == blob
    assert picture[:64] not in on_disk

    response = await live.http.get(f"/files/{stored['id']}", headers=member.auth)
    assert response.status_code == 200
    assert open_file(key, response.content) == picture
    headers = response.headers
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"] == "attachment"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert headers["cache-control"].startswith("private, max-age=")
    assert headers["etag"] == f'"{stored["sha256"]}"'
    assert headers["content-length"] == str(len(blob))

    again = await live.http.get(
        f"/files/{stored['id']}", headers=member.auth | {"If-None-Match": headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""


async def test_a_download_resumes_with_ranges(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    key, blob = seal_file(os.urandom(1_000_000))
    file_id = (await upload(live, admin, channel, blob))["id"]
    url = f"/files/{file_id}"
    # The first part arrives, the link drops; the rest is asked for from there.
    first = await live.http.get(url, headers=member.auth | {"Range": "bytes=0-399999"})
    assert first.status_code == 206
    assert first.headers["content-range"] == f"bytes 0-399999/{len(blob)}"
    rest = await live.http.get(url, headers=member.auth | {"Range": "bytes=400000-"})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes 400000-{len(blob) - 1}/{len(blob)}"
    assert first.content + rest.content == blob
    assert len(open_file(key, first.content + rest.content)) == 1_000_000
    tail = await live.http.get(url, headers=member.auth | {"Range": "bytes=-16"})
    assert tail.status_code == 206
    assert tail.content == blob[-16:]
    past_end = await live.http.get(url, headers=member.auth | {"Range": "bytes=0-99999999"})
    assert past_end.status_code == 206
    assert past_end.content == blob
    # A stale If-Range: the whole file, not a part of another version.
    stale = await live.http.get(
        url, headers=member.auth | {"Range": "bytes=0-9", "If-Range": '"other"'}
    )
    assert stale.status_code == 200
    assert stale.content == blob


@pytest.mark.parametrize(
    "value", ["bytes=5000000-", "bytes=9-3", "bytes=0-1,5-6", "items=0-3", "bytes=-0", "bytes=-"]
)
async def test_a_bad_range_is_416(
    live: LiveServer, admin: Member, channel: str, value: str
) -> None:
    file_id = (await upload(live, admin, channel, os.urandom(1000)))["id"]
    response = await live.http.get(f"/files/{file_id}", headers=admin.auth | {"Range": value})
    assert response.status_code == 416
    assert response.json()["code"] == "invalid_range"


# ---------------------------------------------------------------- refusals


async def test_a_file_over_the_limit_is_refused_before_its_body(
    live: LiveServer, admin: Member, channel: str
) -> None:
    limit = ctx_of(live).settings.max_file_bytes
    # Only the headers are sent: the answer comes without waiting for the body.
    status, answer = await raw_request(
        live,
        head_of("POST", f"/files?channel_id={channel}", admin, Content_Length=str(limit + 1)),
    )
    assert status == 413
    assert b'"file_too_large"' in answer
    # Live setting: lowered, a smaller file is refused too.
    changed = await live.http.put("/admin/settings", json={"max_file_bytes": 100}, headers=OP)
    assert changed.status_code == 200
    small = await live.http.post(
        f"/files?channel_id={channel}", content=b"x" * 101, headers=admin.auth
    )
    assert small.status_code == 413
    assert small.json()["code"] == "file_too_large"
    assert (await live.http.get("/admin/stats", headers=OP)).json()["files"] == 0


async def test_without_content_length_is_411(live: LiveServer, admin: Member, channel: str) -> None:
    async def chunked() -> Any:
        yield b"abc"

    response = await live.http.post(
        f"/files?channel_id={channel}", content=chunked(), headers=admin.auth
    )
    assert response.status_code == 411
    assert response.json()["code"] == "length_required"


async def test_the_quota_is_refused_before_the_body(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    await live.http.put("/admin/settings", json={"user_storage_quota_bytes": 5000}, headers=OP)
    await upload(live, member, channel, os.urandom(3000))
    status, answer = await raw_request(
        live, head_of("POST", f"/files?channel_id={channel}", member, Content_Length="2001")
    )
    assert status == 413
    assert b'"storage_quota_exceeded"' in answer
    # Another user's quota is their own.
    await upload(live, admin, channel, os.urandom(4000))
    users = (await live.http.get("/admin/users", headers=OP)).json()["users"]
    used = {u["id"]: u["storage_bytes"] for u in users}
    assert used[member.user_id] == 3000
    assert used[admin.user_id] == 4000
    stats = (await live.http.get("/admin/stats", headers=OP)).json()
    assert stats["storage_bytes"] == 7000
    assert stats["files"] == 2


async def test_strangers_and_unknown_ids_get_404(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    file_id = (await upload(live, admin, channel, os.urandom(500)))["id"]
    # The channel becomes a private room member is not in.
    engine = create_async_engine(live.settings.db_url)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            await session.execute(update(Channel).where(Channel.id == channel).values(private=True))
            session.add(ChannelMember(channel_id=channel, user_id=admin.user_id, role="owner"))
    finally:
        await engine.dispose()
    hidden = await live.http.get(f"/files/{file_id}", headers=member.auth)
    assert hidden.status_code == 404
    assert hidden.json()["code"] == "file_not_found"
    unknown = await live.http.get("/files/6a3f1f0e-8c1d-4f57-9d55-3c0b7a1e2f10", headers=admin.auth)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "file_not_found"
    status, answer = await raw_request(
        live, head_of("POST", f"/files?channel_id={channel}", member, Content_Length="100")
    )
    assert status == 404
    assert b'"channel_not_found"' in answer
    missing = await live.http.post("/files?channel_id=nope", content=b"x" * 10, headers=admin.auth)
    assert missing.status_code == 404
    # The owner still reads it; nobody without a bearer token does, nor by a token in the URL.
    assert (await live.http.get(f"/files/{file_id}", headers=admin.auth)).status_code == 200
    anonymous = await live.http.get(f"/files/{file_id}?token={admin.token}")
    assert anonymous.status_code == 401


async def test_uploads_are_rate_limited_per_user(settings: Settings, tmp_path: Path) -> None:
    limited = with_settings(
        settings, rate_limits=True, file_upload_burst=2, register_burst=50, register_refill=0.01
    )
    async with running_server(limited) as live:
        admin = await live.register("admin")
        channel = await live.create_channel(admin)
        for _ in range(2):
            await upload(live, admin, channel, b"x" * 10)
        refused = await live.http.post(
            f"/files?channel_id={channel}", content=b"x" * 10, headers=admin.auth
        )
        assert refused.status_code == 429
        assert refused.json()["code"] == "rate_limited"


class WatchedStorage(LocalStorage):
    """The server's storage, telling the test when an upload has ended (stored or not)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ended = asyncio.Event()
        self.outcome: BaseException | None = None

    async def put(self, key: str, chunks: Any, length: int) -> Any:
        try:
            return await super().put(key, chunks, length)
        except BaseException as exc:
            self.outcome = exc
            raise
        finally:
            self.ended.set()


async def test_a_body_cut_short_leaves_nothing(
    live: LiveServer, admin: Member, channel: str
) -> None:
    """The client dies mid-body: no file, no row, no leftover in the temporary folder."""
    ctx = ctx_of(live)
    watched = WatchedStorage(storage_of(live).root)
    ctx.storage = watched
    _, writer = await asyncio.open_connection("127.0.0.1", live.port)
    head = head_of("POST", f"/files?channel_id={channel}", admin, Content_Length="5000000")
    writer.write(head.encode() + b"\r\n\r\n" + os.urandom(2_000_000))
    await writer.drain()
    writer.transport.abort()  # as a killed process: no more bytes, the socket reset
    await asyncio.wait_for(watched.ended.wait(), 30)
    assert watched.outcome is not None
    tmp = watched.root / "tmp"
    assert list(tmp.glob("*")) == []
    assert [p for p in watched.root.rglob("*") if p.is_file()] == []
    assert await count_files(live) == 0


# ---------------------------------------------------------------- attachments


async def test_attachments_travel_with_the_message_and_history(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    channel_key = os.urandom(32)
    pic_key, pic_blob = seal_file(b"\x89PNG\r\n\x1a\n" + os.urandom(5000))
    doc_key, doc_blob = seal_file(os.urandom(9000))
    pic = await upload(live, admin, channel, pic_blob)
    doc = await upload(live, admin, channel, doc_blob)
    files = [
        {
            "id": pic["id"],
            "key": b64(pic_key),
            "name": "a.png",
            "type": "image/png",
            "size": 5008,
            "width": 10,
            "height": 10,
        },
        {
            "id": doc["id"],
            "key": b64(doc_key),
            "name": "b.pdf",
            "type": "application/pdf",
            "size": 9000,
        },
    ]
    body = seal(channel_key, attachment_body("look", files))
    sender = await live.connect(admin)
    reader = await live.connect(member)
    await sender.send(send_frame(channel, body, [pic["id"], doc["id"]]))
    seen = await next_of(reader, "channel.message.new")
    assert seen["attachments"] == [pic["id"], doc["id"]]
    # The reader follows the convention: keys from the sealed body, bytes from the server.
    from tests.e2ee import open_sealed, unb64

    sealed = json.loads(open_sealed(channel_key, seen["body"]))
    for entry in sealed["files"]:
        got = await live.http.get(f"/files/{entry['id']}", headers=member.auth)
        assert len(open_file(unb64(entry["key"]), got.content)) == entry["size"]

    await sender.send(send_frame(channel, seal(channel_key, b"plain")))
    plain = await next_of(reader, "channel.message.new")
    assert "attachments" not in plain

    # History: the fast path (plain query) and Litestar's (after_seq) agree.
    fast = (
        await live.http.get(f"/channels/messages?channel_id={channel}", headers=member.auth)
    ).json()["messages"]
    slow = (
        await live.http.get(
            f"/channels/messages?channel_id={channel}&after_seq=0", headers=member.auth
        )
    ).json()["messages"]
    assert fast == slow
    assert fast[0]["attachments"] == [pic["id"], doc["id"]]
    assert "attachments" not in fast[1]


async def test_bad_attachments_are_refused(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    other_channel = await live.create_channel(admin, "b3RoZXI=")
    mine = (await upload(live, member, channel, b"m" * 50))["id"]
    theirs = (await upload(live, admin, channel, b"t" * 50))["id"]
    elsewhere = (await upload(live, member, other_channel, b"e" * 50))["id"]
    ws = await live.connect(member)
    cases = [
        [theirs],  # not the sender's
        [elsewhere],  # another channel's
        ["6a3f1f0e-8c1d-4f57-9d55-3c0b7a1e2f10"],  # unknown
        [mine, mine],  # twice
    ]
    for attachments in cases:
        await ws.send(send_frame(channel, "eA==", attachments))
        error = await next_of(ws, "error")
        assert error["code"] == "invalid_attachment", attachments
    too_many = [mine] * 11
    await ws.send(send_frame(channel, "eA==", too_many))
    assert (await next_of(ws, "error"))["code"] in {"invalid_message", "invalid_frame"}
    # Claimed once, refused the second time; a refused message leaves no hole in seq.
    await ws.send(send_frame(channel, "eA==", [mine]))
    first = await next_of(ws, "channel.message.new")
    await ws.send(send_frame(channel, "eA==", [mine]))
    assert (await next_of(ws, "error"))["code"] == "invalid_attachment"
    await ws.send(send_frame(channel, "eA=="))
    after = await next_of(ws, "channel.message.new")
    assert after["seq"] == first["seq"] + 1


async def test_a_retried_send_claims_once_and_echoes_the_attachments(
    live: LiveServer, admin: Member, channel: str
) -> None:
    file_id = (await upload(live, admin, channel, b"r" * 64))["id"]
    ws = await live.connect(admin)
    frame = send_frame(channel, "eA==", [file_id], client_message_id="retry-1")
    await asyncio.gather(ws.send(frame), ws.send(frame))
    first = await next_of(ws, "channel.message.new")
    second = await next_of(ws, "channel.message.new")
    assert first["message_id"] == second["message_id"]
    assert first["attachments"] == second["attachments"] == [file_id]


async def count_files(live: LiveServer) -> int:
    engine = create_async_engine(live.settings.db_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(func.count()).select_from(StoredFile))
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def test_deleting_a_message_deletes_its_files(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    storage = storage_of(live)
    ids = [(await upload(live, member, channel, os.urandom(2000)))["id"] for _ in range(2)]
    keep = (await upload(live, member, channel, os.urandom(2000)))["id"]
    ws = await live.connect(member)
    await ws.send(send_frame(channel, "eA==", ids))
    message = await next_of(ws, "channel.message.new")
    await ws.send(send_frame(channel, "eA==", [keep]))
    kept = await next_of(ws, "channel.message.new")
    assert all(storage.path(i).exists() for i in ids)
    deleted = await live.http.delete(
        f"/channels/messages?message_id={message['message_id']}", headers=member.auth
    )
    assert deleted.status_code == 204
    assert not any(storage.path(i).exists() for i in ids)
    for file_id in ids:
        assert (await live.http.get(f"/files/{file_id}", headers=admin.auth)).status_code == 404
    assert storage.path(keep).exists()
    # Moderation: all of a user's messages, and their files, at once.
    erased = await live.http.delete(f"/admin/users/{member.user_id}/messages", headers=OP)
    assert erased.status_code in (200, 204), erased.text
    assert not storage.path(keep).exists()
    assert kept["attachments"] == [keep]
    assert await count_files(live) == 0


async def test_retention_and_the_orphan_sweep(
    live: LiveServer, admin: Member, channel: str
) -> None:
    ctx = ctx_of(live)
    storage = storage_of(live)
    attached = (await upload(live, admin, channel, os.urandom(100)))["id"]
    orphan = (await upload(live, admin, channel, os.urandom(100)))["id"]
    ws = await live.connect(admin)
    await ws.send(send_frame(channel, "eA==", [attached]))
    await next_of(ws, "channel.message.new")
    sessionmaker = live.server.config.app.state.sessionmaker  # type: ignore[attr-defined]
    real = ctx.clock
    try:
        # Within the day: nothing is swept.
        ctx.clock = lambda: real() + timedelta(hours=23)
        await purge_expired(sessionmaker, ctx)
        assert storage.path(orphan).exists()
        ctx.clock = lambda: real() + timedelta(hours=25)
        await purge_expired(sessionmaker, ctx)
        assert not storage.path(orphan).exists()
        assert storage.path(attached).exists()  # its message keeps it
        # Message retention takes the message's files with it.
        await live.http.put("/admin/settings", json={"message_retention_days": 1}, headers=OP)
        ctx.clock = lambda: real() + timedelta(days=2)
        await purge_expired(sessionmaker, ctx)
        assert not storage.path(attached).exists()
    finally:
        ctx.clock = real
    assert await count_files(live) == 0


async def test_channel_images(
    live: LiveServer, admin: Member, member: Member, channel: str
) -> None:
    channel_key = os.urandom(32)
    _, blob = seal_file(b"GIF89a" + os.urandom(100), key=channel_key)
    image = (await upload(live, admin, channel, blob))["id"]
    listing = (await live.http.get("/channels", headers=member.auth)).json()["channels"]
    assert listing[0]["image_file_id"] is None
    watcher = await live.connect(member)
    response = await live.http.put(
        "/channels/image", json={"channel_id": channel, "file_id": image}, headers=admin.auth
    )
    assert response.status_code == 200, response.text
    assert response.json()["channel"]["image_file_id"] == image
    event = await next_of(watcher, "channel.updated")
    assert event["image_file_id"] == image
    got = await live.http.get(f"/files/{image}", headers=member.auth)
    assert open_file(channel_key, got.content).startswith(b"GIF89a")
    # A member may not change it; nor use another's upload; the image is never swept.
    mine = (await upload(live, member, channel, b"x" * 10))["id"]
    refused = await live.http.put(
        "/channels/image", json={"channel_id": channel, "file_id": mine}, headers=member.auth
    )
    assert refused.status_code == 403
    taken = await live.http.put(
        "/channels/image", json={"channel_id": channel, "file_id": mine}, headers=admin.auth
    )
    assert taken.status_code == 400
    assert taken.json()["code"] == "invalid_image"
    ctx = ctx_of(live)
    real = ctx.clock
    ctx.clock = lambda: real() + timedelta(days=3)
    try:
        sessionmaker = live.server.config.app.state.sessionmaker  # type: ignore[attr-defined]
        await purge_expired(sessionmaker, ctx)
    finally:
        ctx.clock = real
    assert storage_of(live).path(image).exists()
    # Cleared: the old picture goes.
    cleared = await live.http.put(
        "/channels/image", json={"channel_id": channel, "file_id": None}, headers=admin.auth
    )
    assert cleared.json()["channel"]["image_file_id"] is None
    assert not storage_of(live).path(image).exists()


async def test_deleting_a_channel_deletes_its_files(
    live: LiveServer, admin: Member, channel: str
) -> None:
    file_id = (await upload(live, admin, channel, b"z" * 100))["id"]
    response = await live.http.delete(f"/channels?channel_id={channel}", headers=admin.auth)
    assert response.status_code == 204
    assert not storage_of(live).path(file_id).exists()
    assert await count_files(live) == 0


async def own_answer(ws: Any, client_id: str) -> dict[str, Any]:
    """This socket's answer to its send: its own channel.message.new, or an error."""
    from tests.realtime.conftest import recv

    while True:
        event = await recv(ws, 10)
        if event["type"] == "error":
            return event
        if event["type"] == "channel.message.new" and event.get("client_message_id") == client_id:
            return event


async def test_two_messages_claiming_one_file_at_once(
    live: LiveServer, admin: Member, channel: str
) -> None:
    file_id = (await upload(live, admin, channel, b"c" * 64))["id"]
    first, second = await live.connect(admin), await live.connect(admin)
    await asyncio.gather(
        first.send(send_frame(channel, "eA==", [file_id], client_message_id="one")),
        second.send(send_frame(channel, "eA==", [file_id], client_message_id="two")),
    )
    answers = [await own_answer(first, "one"), await own_answer(second, "two")]
    kinds = sorted(a["type"] for a in answers)
    assert kinds == ["channel.message.new", "error"]
    stored = next(a for a in answers if a["type"] == "channel.message.new")
    refused = next(a for a in answers if a["type"] == "error")
    assert stored["attachments"] == [file_id]
    assert refused["code"] == "invalid_attachment"


async def test_two_image_changes_at_once_leave_one_image(
    live: LiveServer, admin: Member, channel: str
) -> None:
    ids = [(await upload(live, admin, channel, os.urandom(64)))["id"] for _ in range(2)]
    responses = await asyncio.gather(
        *(
            live.http.put(
                "/channels/image", json={"channel_id": channel, "file_id": i}, headers=admin.auth
            )
            for i in ids
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 200]
    current = (await live.http.get("/channels", headers=admin.auth)).json()["channels"][0]
    assert current["image_file_id"] in ids
    # The image replaced went; the current one stays.
    storage = storage_of(live)
    kept = [i for i in ids if storage.path(i).exists()]
    assert kept == [current["image_file_id"]]


_CLIENT = """
import socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.sendall(sys.argv[2].encode() + b"\\r\\n\\r\\n" + b"\\x00" * 1_000_000)
print("sent", flush=True)
time.sleep(600)
"""


async def test_a_killed_client_process_leaves_nothing(
    live: LiveServer, admin: Member, channel: str
) -> None:
    """A client process killed (SIGKILL) in the middle of its body: no file, no row."""
    import sys

    watched = WatchedStorage(storage_of(live).root)
    ctx_of(live).storage = watched
    head = head_of("POST", f"/files?channel_id={channel}", admin, Content_Length="5000000")
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, str(live.port), head, stdout=asyncio.subprocess.PIPE
    )
    assert client.stdout is not None
    assert await asyncio.wait_for(client.stdout.readline(), 30) == b"sent\n"
    client.kill()
    await client.wait()
    await asyncio.wait_for(watched.ended.wait(), 30)
    assert watched.outcome is not None
    assert list((watched.root / "tmp").glob("*")) == []
    assert [p for p in watched.root.rglob("*") if p.is_file()] == []
    assert await count_files(live) == 0
