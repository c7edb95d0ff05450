"""Encrypted files in Chromium (issue 17): a picture pasted in one page appears decrypted
in another and opens full size; a multi-megabyte file dropped in one page downloads in
another, both with a progress bar; SVG and HTML are only ever download cards; the bytes
on the wire and on disk are not the file's; deleting the message removes its files; the
channel image; and a Python client (its own implementation of the convention) and the
page read each other's files."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from playwright.sync_api import Page, expect
from websockets.sync.client import connect

from tests.conftest import ADMIN_TOKEN
from tests.e2ee import b64, open_sealed, seal, unb64
from tests.web.conftest import (
    WebServer,
    python_member,
    register_in_browser,
    start_server,
    stop_server,
)

PHONE = {"width": 390, "height": 844}
FITS = "() => document.documentElement.scrollWidth <= window.innerWidth"

# Every change of a <progress> value in the page, as [label, value].
RECORD_PROGRESS = """() => {
  window.progressSeen = [];
  new MutationObserver((changes) => {
    for (const c of changes) {
      if (c.target.localName === "progress") {
        const value = Number(c.target.getAttribute("value"));
        window.progressSeen.push([c.target.getAttribute("aria-label"), value]);
      }
    }
  }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ["value"] });
}"""

# Files given to the page as a paste or a drop, as a person's clipboard or file manager would.
GIVE_FILES = """([how, files]) => {
  const dt = new DataTransfer();
  for (const [data, name, type] of files) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    dt.items.add(new File([bytes], name, { type }));
  }
  if (how === "paste") {
    document.querySelector("#composer-input").dispatchEvent(
      new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
  } else {
    const target = document.querySelector("dt-channel-view .scroller");
    for (const type of ["dragenter", "dragover", "drop"]) {
      const init = { dataTransfer: dt, bubbles: true, cancelable: true };
      target.dispatchEvent(new DragEvent(type, init));
    }
  }
}"""


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A server of its own for each test: its first account is the admin who makes channels."""
    live = start_server(tmp_path_factory.mktemp("files"))
    yield live
    stop_server(live)


def png(width: int, height: int, seed: int) -> bytes:
    """A real PNG whose pixels are noise, so its bytes are easy to recognise anywhere."""
    noise = bytearray(os.urandom(width * 3 * height))
    noise[0] = seed & 0xFF
    rows = b"".join(
        b"\x00" + bytes(noise[y * width * 3 : (y + 1) * width * 3]) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# The convention of docs/API.md, written here independently of the page.
def seal_file(plain: bytes) -> tuple[bytes, bytes]:
    key, nonce = os.urandom(32), os.urandom(12)
    return key, nonce + AESGCM(key).encrypt(nonce, plain, None)


def open_file(key: bytes, sealed: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], None)


def stored_files(server: WebServer) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (server.data_dir / "files").rglob("*") if p.is_file()}


def everything_on_disk(server: WebServer) -> bytes:
    return b"".join(p.read_bytes() for p in server.data_dir.rglob("*") if p.is_file())


def token_of(page: Page) -> str:
    token: str = page.evaluate("() => document.querySelector('dt-channel-view').client.api.token")
    return token


def new_channel(page: Page, name: str) -> str:
    page.get_by_label("New channel name").fill(name)
    page.get_by_role("button", name="Create channel").click()
    expect(page.get_by_role("heading", name=f"# {name}")).to_be_visible()
    channel_id: str = page.evaluate("() => location.hash.slice(4)")
    return channel_id


def uploads_of(page: Page) -> list[bytes]:
    """Collect the bodies the page POSTs to /files (what goes on the wire)."""
    bodies: list[bytes] = []

    def on_request(request: Any) -> None:
        if request.method == "POST" and "/files?" in request.url:
            bodies.append(request.post_data_buffer or b"")

    page.on("request", on_request)
    return bodies


def test_pasted_picture_appears_decrypted_and_opens_full_size(
    server: WebServer, new_page: Any
) -> None:
    alice = new_page()
    a = alice.page
    register_in_browser(a, server, "alice", "Alice Liddell")
    channel_id = new_channel(a, "screenshots")
    bob = new_page(viewport=PHONE)
    b = bob.page
    register_in_browser(b, server, "bob", "Bob Builder")
    b.goto(f"{server.base}/#/c/{channel_id}")
    expect(b.get_by_role("heading", name="# screenshots")).to_be_visible()
    expect(b.get_by_label("Message", exact=True)).to_be_enabled()

    picture = png(400, 300, 1)
    wire = uploads_of(a)
    a.evaluate(GIVE_FILES, ["paste", [[b64(picture), "image.png", "image/png"]]])
    expect(a.get_by_role("list", name="Files to send")).to_contain_text("image.png")
    a.get_by_label("Message", exact=True).fill("my screen")
    a.get_by_label("Message", exact=True).press("Enter")
    expect(a.locator("li.msg[data-status=sent] img.thumb")).to_be_visible()

    # Bob's page fetched and decrypted it: shown inline, sized in the page.
    thumb = b.locator("li.msg", has_text="my screen").locator("img.thumb")
    expect(thumb).to_be_visible()
    assert thumb.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [400, 300]
    assert thumb.evaluate("img => img.src").startswith("blob:")
    width = thumb.evaluate("img => img.getBoundingClientRect().width")
    assert 0 < width <= 320
    assert b.evaluate(FITS), "the picture makes the phone page scroll sideways"

    # Full size, in a dialog.
    b.get_by_role("button", name="Open picture image.png full size").click()
    full = b.locator("dialog.picture-viewer img.full")
    expect(full).to_be_visible()
    assert full.evaluate("img => [img.naturalWidth, img.width]") == [400, 400]
    b.locator("dialog.picture-viewer").get_by_role("button", name="Close").click()
    expect(full).to_have_count(0)

    # Not the picture on the wire, nor on disk: the upload is nonce ‖ ciphertext ‖ tag.
    (sent,) = wire
    assert len(sent) == len(picture) + 28
    sample = picture[100:164]
    assert sample not in sent
    assert sample not in everything_on_disk(server)
    assert any(body == sent for body in stored_files(server).values())
    # The message frame names the file; its body is sealed (no name, no key in clear).
    frames = [json.loads(f) for f in alice.frames_sent if "channel.message.send" in f]
    (frame,) = [f for f in frames if f.get("attachments")]
    assert "image.png" not in json.dumps(frame)

    # Alice deletes her message: its file leaves the disk, and the server forgets it.
    token = token_of(a)
    file_id = frame["attachments"][0]
    with a.expect_response(
        lambda r: r.request.method == "DELETE" and "/channels/messages" in r.url
    ):
        a.get_by_role("button", name="Delete message from Alice Liddell").click()
    expect(b.locator("li.msg", has_text="my screen")).to_have_count(0)
    assert all(body != sent for body in stored_files(server).values())
    gone = httpx.get(f"{server.base}/files/{file_id}", headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 404


def test_large_file_and_unsafe_types_with_progress(server: WebServer, new_page: Any) -> None:
    carol = new_page()
    c = carol.page
    register_in_browser(c, server, "carol", "Carol")
    channel_id = new_channel(c, "reports")
    dave = new_page()
    d = dave.page
    register_in_browser(d, server, "dave", "Dave")
    d.goto(f"{server.base}/#/c/{channel_id}")
    expect(d.get_by_label("Message", exact=True)).to_be_enabled()

    report = b"%PDF-1.7\n" + os.urandom(4 * 1024 * 1024)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    html = b"<!doctype html><script>alert(1)</script>"
    c.evaluate(RECORD_PROGRESS)
    wire = uploads_of(c)
    # The report by drag and drop; the others with the attach button.
    c.evaluate(GIVE_FILES, ["drop", [[b64(report), "report.pdf", "application/pdf"]]])
    with c.expect_file_chooser() as chooser:
        c.get_by_role("button", name="Attach files").click()
    chooser.value.set_files(
        [
            {"name": "drawing.svg", "mimeType": "image/svg+xml", "buffer": svg},
            {"name": "page.png", "mimeType": "image/png", "buffer": html},
        ]
    )
    expect(c.get_by_role("list", name="Files to send").locator("li")).to_have_count(3)
    c.get_by_role("button", name="Send").click()
    expect(c.locator("li.msg[data-status=sent] .file-card")).to_have_count(3)
    assert [len(body) for body in wire] == [len(report) + 28, len(svg) + 28, len(html) + 28]
    assert report[1000:1064] not in wire[0]
    uploaded = c.evaluate("() => window.progressSeen")
    assert ["Uploading report.pdf", 1] in uploaded, uploaded

    # Dave: three download cards, no picture (the "PNG" is HTML: its bytes say so).
    message = d.locator("li.msg").last
    expect(message.locator(".file-card")).to_have_count(3)
    expect(message.locator(".file-card").first).to_contain_text("report.pdf")
    expect(message.locator(".file-card").first).to_contain_text("4.0 MiB")
    expect(message.locator("img")).to_have_count(0)
    expect(message.locator(".file-card", has_text="page.png")).to_be_visible()

    d.evaluate(RECORD_PROGRESS)
    with d.expect_download() as download:
        message.get_by_role("button", name="Download report.pdf").click()
    assert download.value.suggested_filename == "report.pdf"
    assert Path(download.value.path()).read_bytes() == report
    seen = [
        v
        for label, v in d.evaluate("() => window.progressSeen")
        if label == "Downloading report.pdf"
    ]
    assert seen[-1] == 1
    assert any(0 < v < 1 for v in seen), seen
    with d.expect_download() as download:
        message.get_by_role("button", name="Download drawing.svg").click()
    assert Path(download.value.path()).read_bytes() == svg


def test_channel_image_in_header_and_side_panel(server: WebServer, new_page: Any) -> None:
    admin = new_page()
    p = admin.page
    register_in_browser(p, server, "frank", "Frank")
    channel_id = new_channel(p, "with a face")
    picture = png(96, 64, 2)
    with p.expect_file_chooser() as chooser:
        p.get_by_role("button", name="Set the image of channel with a face").click()
    with p.expect_response(lambda r: r.url.endswith("/channels/image")) as put:
        chooser.value.set_files({"name": "face.png", "mimeType": "image/png", "buffer": picture})
    assert put.value.status == 200
    expect(p.locator(".channel-head img.channel-avatar")).to_be_visible()
    expect(p.locator(".channel-head .actions")).to_have_text("ImageNo imageRenameDelete")

    erin = new_page()
    f = erin.page
    register_in_browser(f, server, "erin", "Erin")
    f.goto(f"{server.base}/#/c/{channel_id}")
    head = f.locator(".channel-head img.channel-avatar")
    expect(head).to_be_visible()
    assert head.evaluate("img => img.naturalWidth") == 96
    side = f.get_by_role("navigation", name="Channels").locator("img.channel-avatar")
    expect(side).to_be_visible()
    expect(f.get_by_role("button", name=re.compile("Set the image"))).to_have_count(0)


def test_python_client_and_page_read_each_other_files(server: WebServer, new_page: Any) -> None:
    admin = new_page()
    p = admin.page
    register_in_browser(p, server, "henry", "Henry")
    gwen_http, gwen_keys, gwen = python_member(server, "gwen")
    # Made after Gwen's device exists: its key is wrapped for her too.
    channel_id = new_channel(p, "interop files")
    envelope = gwen_http.get("/channels/keys", params={"channel_id": channel_id}).json()
    channel_key = gwen_keys.unwrap_from(envelope["sender_public_key"], envelope["envelope"])

    # Python uploads a picture and sends it; the page shows it.
    picture = png(120, 80, 3)
    file_key, sealed = seal_file(picture)
    up = gwen_http.post(
        "/files",
        params={"channel_id": channel_id},
        content=sealed,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert up.status_code == 201, up.text
    file_id = up.json()["id"]
    body = json.dumps(
        {
            "v": 1,
            "text": "from python",
            "files": [
                {
                    "id": file_id,
                    "key": b64(file_key),
                    "name": "py.png",
                    "type": "image/png",
                    "size": len(picture),
                    "width": 120,
                    "height": 80,
                }
            ],
        }
    ).encode()
    with connect(
        f"{server.base.replace('http', 'ws')}/ws",
        additional_headers={"Authorization": gwen_http.headers["Authorization"]},
    ) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "channel.message.send",
                    "channel_id": channel_id,
                    "body": seal(channel_key, body),
                    "sender_name_enc": seal(channel_key, b"Gwen Python"),
                    "attachments": [file_id],
                }
            )
        )
        thumb = p.locator("li.msg", has_text="from python").locator("img.thumb")
        expect(thumb).to_be_visible()
        assert thumb.evaluate("img => img.naturalWidth") == 120

    # The page uploads a file; Python reads the message, downloads and decrypts it.
    data = os.urandom(200_000)
    with p.expect_file_chooser() as chooser:
        p.get_by_role("button", name="Attach files").click()
    chooser.value.set_files(
        {"name": "data.bin", "mimeType": "application/octet-stream", "buffer": data}
    )
    p.get_by_label("Message", exact=True).fill("from the page")
    p.get_by_role("button", name="Send").click()
    expect(p.locator("li.msg[data-status=sent]", has_text="from the page")).to_be_visible()
    history = gwen_http.get("/channels/messages", params={"channel_id": channel_id}).json()
    (mine,) = [
        m for m in history["messages"] if m.get("attachments") and m["sender_id"] != gwen["user_id"]
    ]
    opened = json.loads(open_sealed(channel_key, mine["body"]))
    assert opened["v"] == 1
    assert opened["text"] == "from the page"
    (entry,) = opened["files"]
    assert entry["id"] == mine["attachments"][0]
    assert (entry["name"], entry["type"], entry["size"]) == (
        "data.bin",
        "application/octet-stream",
        len(data),
    )
    blob = gwen_http.get(f"/files/{entry['id']}")
    assert blob.status_code == 200
    assert open_file(unb64(entry["key"]), blob.content) == data
    assert base64.b64decode(entry["key"]) != b""
    gwen_http.close()


def test_a_refused_upload_says_why_and_keeps_the_file(server: WebServer, new_page: Any) -> None:
    ivy = new_page()
    ivy.allowed_failures.append(re.compile(r"^POST /files\?channel_id=[0-9a-f-]+ 413$"))
    p = ivy.page
    register_in_browser(p, server, "ivy", "Ivy")
    new_channel(p, "limits")
    operator = {"X-Admin-Token": ADMIN_TOKEN}
    lowered = httpx.put(
        f"{server.base}/admin/settings", json={"max_file_bytes": 1000}, headers=operator
    )
    assert lowered.status_code == 200, lowered.text
    with p.expect_file_chooser() as chooser:
        p.get_by_role("button", name="Attach files").click()
    chooser.value.set_files(
        {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": os.urandom(5000)}
    )
    p.get_by_role("button", name="Send").click()
    expect(p.locator("dt-channel-view .form-error")).to_have_text(
        "That file is larger than this server accepts."
    )
    expect(p.get_by_role("list", name="Files to send")).to_contain_text("big.bin")
    expect(p.locator("li.msg")).to_have_count(0)

    raised = httpx.put(
        f"{server.base}/admin/settings", json={"max_file_bytes": 1 << 20}, headers=operator
    )
    assert raised.status_code == 200, raised.text
    p.get_by_role("button", name="Send").click()
    expect(p.locator("li.msg[data-status=sent] .file-card")).to_contain_text("big.bin")
    expect(p.get_by_role("list", name="Files to send")).to_be_hidden()

    # The admin page: what each person stores, and the server's total (ciphertext bytes).
    p.goto(f"{server.base}/#/admin")
    people = p.get_by_role("table", name="People")
    expect(people.get_by_role("columnheader", name="Files")).to_be_visible()
    expect(people.locator("tr", has_text="Ivy")).to_contain_text("4.9 KiB")
    expect(p.locator("ul.stats")).to_contain_text("4.9 KiB in 1 files")
