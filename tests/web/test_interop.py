"""The browser and the Python implementation of the scheme (tests/e2ee.py) read each
other's channel names, messages and profiles, compute the same key commitments, and hand
keys on to each other: the client is byte-compatible."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from playwright.sync_api import expect
from websockets.sync.client import connect

from tests.e2ee import DeviceKeys, commitment, open_sealed, seal, unb64
from tests.web.conftest import PASSWORD, WebServer, python_member, register_in_browser


def test_browser_and_python_read_each_other(server: WebServer, new_page: Any) -> None:
    alice = new_page()
    a = alice.page
    register_in_browser(a, server, "alice", "Alice Liddell")
    carol_http, carol_keys, carol = python_member(server, "carol")

    # A channel made in the browser: wrapped for every device, Carol's included.
    with a.expect_response(lambda r: r.url.endswith("/channels/keys") and r.status == 201):
        a.get_by_label("New channel name").fill("looking glass")
        a.get_by_role("button", name="Create channel").click()
    expect(a.get_by_role("heading", name="# looking glass")).to_be_visible()
    (channel,) = carol_http.get("/channels").json()["channels"]
    envelope = carol_http.get("/channels/keys", params={"channel_id": channel["id"]}).json()
    channel_key = carol_keys.unwrap_from(envelope["sender_public_key"], envelope["envelope"])
    assert open_sealed(channel_key, channel["name_enc"]) == b"looking glass"
    # The page sent the channel's commitment with it: the Python commitment of the key.
    assert channel["key_commitment"] == commitment(channel_key)

    # A message written in the browser.
    a.get_by_label("Message", exact=True).fill("Curiouser and curiouser!")
    a.get_by_label("Message", exact=True).press("Enter")
    expect(a.locator("li.msg[data-status=sent]")).to_have_count(1)
    history = carol_http.get("/channels/messages", params={"channel_id": channel["id"]}).json()
    (message,) = history["messages"]
    assert open_sealed(channel_key, message["body"]).decode() == "Curiouser and curiouser!"
    assert open_sealed(channel_key, message["sender_name_enc"]) == b"Alice Liddell"

    # Carol comes online: Alice's client shares the directory key with her device.
    with (
        a.expect_response(lambda r: r.url.endswith("/directory/keys") and r.status == 201),
        connect(
            f"{server.base.replace('http', 'ws')}/ws",
            additional_headers={"Authorization": carol_http.headers["Authorization"]},
        ) as ws,
    ):
        pass
    directory = carol_http.get("/directory/keys").json()
    directory_key = carol_keys.unwrap_from(directory["sender_public_key"], directory["envelope"])
    profiles = {
        p["user_id"]: p["name_enc"] for p in carol_http.get("/users/profiles").json()["profiles"]
    }
    alice_id = next(uid for uid in profiles if uid != carol["user_id"])
    assert open_sealed(directory_key, profiles[alice_id]) == b"Alice Liddell"

    # The reverse: a profile, a message and a channel made in Python, read in the browser.
    response = carol_http.post(
        "/users/profiles", json={"name_enc": seal(directory_key, b"Carol Python")}
    )
    assert response.status_code == 201
    expect(a.locator(".people li", has_text="Carol Python")).to_be_visible()

    with connect(
        f"{server.base.replace('http', 'ws')}/ws",
        additional_headers={"Authorization": carol_http.headers["Authorization"]},
    ) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "channel.message.send",
                    "channel_id": channel["id"],
                    "body": seal(channel_key, b"Off with their heads!"),
                    "sender_name_enc": seal(channel_key, b"Carol Python"),
                }
            )
        )
        expect(a.locator("li.msg", has_text="Off with their heads!")).to_contain_text(
            "Carol Python"
        )

    # Alice on a second device, in Python: an admin's channel, wrapped for every device.
    second = DeviceKeys()
    login = httpx.post(
        f"{server.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "public_key": second.public_b64},
    ).json()
    auth = {"Authorization": f"Bearer {login['token']}"}
    new_key = b"\x07" * 32
    made = httpx.post(
        f"{server.base}/channels", json={"name_enc": seal(new_key, b"made in python")}, headers=auth
    )
    assert made.status_code == 201, made.text
    made_id = made.json()["channel"]["id"]
    devices = httpx.get(f"{server.base}/devices/keys", params={"all": 1}, headers=auth).json()
    envelopes = [
        {
            "device_id": d["device_id"],
            "sender_device_id": login["device_id"],
            "sender_public_key": second.public_b64,
            "envelope": second.wrap_for(d["public_key"], new_key),
        }
        for d in devices["keys"]
    ]
    posted = httpx.post(
        f"{server.base}/channels/keys",
        json={"channel_id": made_id, "envelopes": envelopes},
        headers=auth,
    )
    assert posted.status_code == 201, posted.text
    link = a.get_by_role("navigation", name="Channels").get_by_role("link", name="made in python")
    # The browser asks until the envelope is there (a few hundred ms on a quiet machine);
    # holding the key of a channel of hers without a commitment, the page sets it, once.
    with a.expect_response(lambda r: r.url.endswith("/channels/commitment")) as put:
        expect(link).to_be_visible(timeout=30_000)
    assert put.value.status == 200
    made_now = next(c for c in carol_http.get("/channels").json()["channels"] if c["id"] == made_id)
    assert made_now["key_commitment"] == commitment(new_key)
    assert len(unb64(envelopes[0]["envelope"])) == 12 + 32 + 16
    carol_http.close()


def test_browser_refuses_a_channel_key_from_a_non_admin(server: WebServer, new_page: Any) -> None:
    """Only the channel's creator or an admin may hand out its key (the server cannot tell)."""
    mallory_http, mallory_keys, mallory = python_member(server, "mallory")
    channels = mallory_http.get("/channels").json()["channels"]
    target = next(c for c in channels if c["created_by"] != mallory["user_id"])

    victim = new_page()
    v = victim.page
    register_in_browser(v, server, "victim", "Victim")
    # Mallory addresses envelopes of a key of her own choosing to everyone else's devices.
    devices = mallory_http.get("/devices/keys", params={"all": 1}).json()["keys"]
    forged = [
        {
            "device_id": d["device_id"],
            "sender_device_id": mallory["device_id"],
            "sender_public_key": mallory_keys.public_b64,
            "envelope": mallory_keys.wrap_for(d["public_key"], b"\x42" * 32),
        }
        for d in devices
        if d["user_id"] != mallory["user_id"]
    ]
    response = mallory_http.post(
        "/channels/keys", json={"channel_id": target["id"], "envelopes": forged}
    )
    assert response.status_code == 201
    mallory_http.close()
    with v.expect_console_message(lambda m: "refused a channel key envelope" in m.text) as said:
        v.reload()
    # The channel has a commitment (the page that made it sent one): Mallory's key does
    # not match it. Issue 15 changed what a locked channel reads: a numbered placeholder.
    assert "does not match the channel's key commitment" in said.value.text
    expect(v.locator(".conn")).to_have_text("Connected")
    link = v.get_by_role("navigation", name="Channels").get_by_role("link").first
    expect(link).to_have_text("#Channel 1, locked")


def test_keys_handed_on_between_python_and_the_page(server: WebServer, new_page: Any) -> None:
    """A key handed on by an ordinary member's Python device opens in the page, since it
    matches the commitment computed in Python; the page hands it on to a Python device."""
    # An admin's Python device makes a channel with the Python commitment of its key, and
    # hands the key to Dan, an ordinary member (Python) only.
    admin_keys = DeviceKeys()
    login = httpx.post(
        f"{server.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "public_key": admin_keys.public_b64},
    ).json()
    admin = httpx.Client(
        base_url=server.base, headers={"Authorization": f"Bearer {login['token']}"}, timeout=20
    )
    dan_http, dan_keys, dan = python_member(server, "dan")
    secret = os.urandom(32)
    made = admin.post(
        "/channels",
        json={"name_enc": seal(secret, b"rabbit hole"), "key_commitment": commitment(secret)},
    )
    assert made.status_code == 201, made.text
    channel = made.json()["channel"]
    assert channel["key_commitment"] == commitment(secret)
    dan_device = next(
        d
        for d in dan_http.get("/devices/keys", params={"all": 1}).json()["keys"]
        if d["device_id"] == dan["device_id"]
    )
    posted = admin.post(
        "/channels/keys",
        json={
            "channel_id": channel["id"],
            "envelopes": [
                {
                    "device_id": dan_device["device_id"],
                    "sender_device_id": login["device_id"],
                    "sender_public_key": admin_keys.public_b64,
                    "envelope": admin_keys.wrap_for(dan_device["public_key"], secret),
                }
            ],
        },
    )
    assert posted.status_code == 201, posted.text
    admin.close()

    # Dan, as the page does, checks his key against the commitment before handing it on.
    envelope = dan_http.get("/channels/keys", params={"channel_id": channel["id"]}).json()
    dans_key = dan_keys.unwrap_from(envelope["sender_public_key"], envelope["envelope"])
    assert commitment(dans_key) == channel["key_commitment"]

    # Erin registers in a browser, with no admin online: Dan hands her the key.
    listed = dan_http.get("/devices/keys", params={"all": 1}).json()["keys"]
    before = {d["device_id"] for d in listed}
    erin = new_page()
    e = erin.page
    register_in_browser(e, server, "erin", "Erin")
    (erin_device,) = [
        d
        for d in dan_http.get("/devices/keys", params={"all": 1}).json()["keys"]
        if d["device_id"] not in before
    ]
    posted = dan_http.post(
        "/channels/keys",
        json={
            "channel_id": channel["id"],
            "envelopes": [
                {
                    "device_id": erin_device["device_id"],
                    "sender_device_id": dan["device_id"],
                    "sender_public_key": dan_keys.public_b64,
                    "envelope": dan_keys.wrap_for(erin_device["public_key"], dans_key),
                }
            ],
        },
    )
    assert posted.status_code == 201, posted.text
    # Dan comes online: Erin's page asks again at once, and takes his key.
    with connect(
        f"{server.base.replace('http', 'ws')}/ws",
        additional_headers={"Authorization": dan_http.headers["Authorization"]},
    ):
        link = e.get_by_role("navigation", name="Channels").get_by_role("link", name="rabbit hole")
        expect(link).to_be_visible()
    dan_http.close()

    # The reverse: Frank's Python device comes online while Erin's page is open; her page
    # (an ordinary member's) wraps the key for him, and it is the channel's key.
    frank_http, frank_keys, frank = python_member(server, "frank")
    with (
        e.expect_response(
            lambda r: (
                r.url.endswith("/channels/keys")
                and r.request.method == "POST"
                and frank["device_id"] in (r.request.post_data or "")
            )
        ) as shared,
        connect(
            f"{server.base.replace('http', 'ws')}/ws",
            additional_headers={"Authorization": frank_http.headers["Authorization"]},
        ),
    ):
        pass
    assert shared.value.status == 201
    listing = frank_http.get(
        "/channels/keys", params={"channel_id": channel["id"], "all": 1}
    ).json()
    (from_erin,) = [
        item
        for item in listing["envelopes"]
        if item["sender_device_id"] == erin_device["device_id"]
    ]
    franks_key = frank_keys.unwrap_from(from_erin["sender_public_key"], from_erin["envelope"])
    assert franks_key == secret
    assert commitment(franks_key) == channel["key_commitment"]
    assert open_sealed(franks_key, channel["name_enc"]) == b"rabbit hole"
    frank_http.close()
