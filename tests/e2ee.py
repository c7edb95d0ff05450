"""The clients' end-to-end scheme, so tests act as real clients.

X25519 device keys; pairwise key = HKDF-SHA256(shared secret, no salt,
info "dialtone-e2e-v1"); AES-256-GCM with a random 12-byte nonce, sealed as
base64(nonce || ciphertext || tag), no associated data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import crypto_scalarmult
from nacl.public import PrivateKey

INFO = b"dialtone-e2e-v1"
COMMITMENT_LABEL = b"dialtone-key-commitment-v1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def pairwise_key(private_key: bytes, peer_public_key: bytes) -> bytes:
    shared = crypto_scalarmult(private_key, peer_public_key)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(shared)


def commitment(key: bytes) -> str:
    """A channel's or the directory's key commitment (docs/API.md): base64 of
    HMAC-SHA256 keyed with the 32 raw key bytes over the fixed ASCII label."""
    return b64(hmac.new(key, COMMITMENT_LABEL, hashlib.sha256).digest())


def seal(key: bytes, plaintext: bytes) -> str:
    nonce = os.urandom(12)
    return b64(nonce + AESGCM(key).encrypt(nonce, plaintext, None))


def open_sealed(key: bytes, sealed: str) -> bytes:
    raw = unb64(sealed)
    return AESGCM(key).decrypt(raw[:12], raw[12:], None)


@dataclass
class DeviceKeys:
    private: PrivateKey = field(default_factory=PrivateKey.generate)

    @property
    def public_b64(self) -> str:
        return b64(bytes(self.private.public_key))

    def wrap_for(self, recipient_public_b64: str, secret: bytes) -> str:
        """Seal a channel or directory key for a recipient device."""
        key = pairwise_key(bytes(self.private), unb64(recipient_public_b64))
        return seal(key, secret)

    def unwrap_from(self, sender_public_b64: str, envelope: str) -> bytes:
        key = pairwise_key(bytes(self.private), unb64(sender_public_b64))
        return open_sealed(key, envelope)


# ---------------------------------------------------------------- keys handed on by anyone
# What the web page does (issue 15): a key is taken from any member's envelope when it
# matches the channel's (or the directory's) commitment; envelopes that do not open, or
# open to another key, are ignored. Every key held is handed on to devices lacking it.


class Http(Protocol):
    """The part of an HTTP client used here (httpx.AsyncClient, litestar's test client)."""

    async def get(self, url: str, *, headers: dict[str, str]) -> Any: ...

    async def post(self, url: str, *, json: Any, headers: dict[str, str]) -> Any: ...


def matching_key(keys: DeviceKeys, envelopes: list[dict[str, Any]], expected: str) -> bytes | None:
    """The first key among ``envelopes`` (``?all=1`` items, in the server's order) whose
    commitment is ``expected``; an envelope that does not open, or holds another key, is
    skipped."""
    for item in envelopes:
        try:
            key = keys.unwrap_from(item["sender_public_key"], item["envelope"])
        except (InvalidTag, ValueError):
            continue
        if len(key) == 32 and hmac.compare_digest(commitment(key), expected):
            return key
    return None


@dataclass
class KeyRing:
    """One device's keys: ``channels[channel_id][key_version]`` and the directory key."""

    device_id: str
    token: str
    keys: DeviceKeys
    channels: dict[str, dict[int, bytes]] = field(default_factory=dict)
    directory: bytes | None = None
    # Envelopes ignored because they did not match (sender device ids), for the tests.
    rejected: list[str] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def take_channel_key(self, http: Http, channel: dict[str, Any]) -> bytes | None:
        """Fetch every envelope for this device and keep the key matching ``channel``'s
        commitment (``channel``: an item of ``GET /channels``). Without a commitment (a
        channel made before they existed) only the default read's envelope is trusted,
        as before: the server prefers the creator's or an admin's."""
        channel_id = channel["id"]
        expected = channel.get("key_commitment")
        if expected is None:
            got = await http.get(f"/channels/keys?channel_id={channel_id}", headers=self.auth)
            if got.status_code != 200:
                return None
            body = got.json()
            key = self.keys.unwrap_from(body["sender_public_key"], body["envelope"])
        else:
            got = await http.get(f"/channels/keys?channel_id={channel_id}&all=1", headers=self.auth)
            assert got.status_code == 200, got.text
            envelopes = got.json()["envelopes"]
            key = matching_key(self.keys, envelopes, expected)
            self.rejected += [
                e["sender_device_id"]
                for e in envelopes
                if key is None or not self._opens_to(e, key)
            ]
            if key is not None and not self._confirmed(envelopes, key):
                await self.confirm(http, "/channels/keys", {"channel_id": channel_id}, key)
        if key is not None:
            self.channels.setdefault(channel_id, {})[int(channel.get("key_version", 1))] = key
        return key

    async def take_directory_key(self, http: Http, expected: str) -> bytes | None:
        got = await http.get("/directory/keys?all=1", headers=self.auth)
        assert got.status_code == 200, got.text
        envelopes = got.json()["envelopes"]
        key = matching_key(self.keys, envelopes, expected)
        self.rejected += [
            e["sender_device_id"] for e in envelopes if key is None or not self._opens_to(e, key)
        ]
        if key is not None:
            self.directory = key
            if not self._confirmed(envelopes, key):
                await self.confirm(http, "/directory/keys", {}, key)
        return key

    def _confirmed(self, envelopes: list[dict[str, Any]], key: bytes) -> bool:
        """This device already sealed ``key`` for itself."""
        return any(
            e["sender_device_id"] == self.device_id and self._opens_to(e, key) for e in envelopes
        )

    async def confirm(self, http: Http, path: str, body: dict[str, Any], key: bytes) -> None:
        """Seal an accepted key (it matched its commitment) from this device to itself, as
        the page does: GET /keys/held then lists it, and sharers skip this device."""
        item = {
            "device_id": self.device_id,
            "sender_device_id": self.device_id,
            "sender_public_key": self.keys.public_b64,
            "envelope": self.keys.wrap_for(self.keys.public_b64, key),
        }
        answer = await http.post(path, json={**body, "envelopes": [item]}, headers=self.auth)
        assert answer.status_code == 201, answer.text

    def _opens_to(self, item: dict[str, Any], key: bytes) -> bool:
        try:
            return self.keys.unwrap_from(item["sender_public_key"], item["envelope"]) == key
        except (InvalidTag, ValueError):
            return False

    # ------------------------------------------------------------ key versions (issue 16)

    def current_version(self, channel_id: str) -> int:
        """The newest key version held for the channel (0: none)."""
        return max(self.channels.get(channel_id, {}), default=0)

    def seal_message(self, channel_id: str, text: bytes) -> tuple[str, int]:
        """A message body sealed with the newest key held, and the version to send with it
        (``channel.message.send``'s ``key_version``)."""
        version = self.current_version(channel_id)
        return seal(self.channels[channel_id][version], text), version

    def open_message(self, channel_id: str, item: dict[str, Any]) -> bytes:
        """Open a history item or ``channel.message.new``: its ``key_version`` (absent: 1)
        picks the key. KeyError when this device holds no key of that version."""
        key = self.channels[channel_id][int(item.get("key_version", 1))]
        return open_sealed(key, item["body"])

    async def take_key_version(self, http: Http, channel_id: str, version: int) -> bytes | None:
        """Fetch one (older) key version's envelopes for this device and keep the key that
        matches that version's commitment (``?all=1&key_version=N`` answers it)."""
        got = await http.get(
            f"/channels/keys?channel_id={channel_id}&all=1&key_version={version}",
            headers=self.auth,
        )
        if got.status_code != 200:
            return None
        body = got.json()
        expected = body.get("key_commitment")
        if expected is None:
            return None
        key = matching_key(self.keys, body["envelopes"], expected)
        if key is not None:
            self.channels.setdefault(channel_id, {})[version] = key
        return key

    async def rotate(
        self, http: Http, channel_id: str, member_user_ids: set[str]
    ) -> tuple[int, bytes] | None:
        """What an owner's device does on ``channel.rekey_required``: a new random key, its
        commitment posted as the next version (``POST /channels/rotate``), then the key
        sealed for every device of the remaining members (this device included, its
        self-confirmation). None when another device rotated first (409
        key_version_conflict): that device's envelopes bring the new key."""
        key = os.urandom(32)
        version = self.current_version(channel_id) + 1
        answer = await http.post(
            "/channels/rotate",
            json={
                "channel_id": channel_id,
                "key_version": version,
                "key_commitment": commitment(key),
            },
            headers=self.auth,
        )
        if answer.status_code == 409 and answer.json()["code"] == "key_version_conflict":
            return None
        assert answer.status_code == 200, answer.text
        self.channels.setdefault(channel_id, {})[version] = key
        listed = await http.get("/devices/keys?all=1", headers=self.auth)
        assert listed.status_code == 200, listed.text
        items = [
            {
                "device_id": device["device_id"],
                "sender_device_id": self.device_id,
                "sender_public_key": self.keys.public_b64,
                "envelope": self.keys.wrap_for(device["public_key"], key),
                "key_version": version,
            }
            for device in listed.json()["keys"]
            if device["user_id"] in member_user_ids
        ]
        stored = await http.post(
            "/channels/keys", json={"channel_id": channel_id, "envelopes": items}, headers=self.auth
        )
        assert stored.status_code == 201, stored.text
        return version, key

    async def hand_on(self, http: Http, device_id: str, public_key: str) -> list[Any]:
        """Seal every key held for another device (as the page does on device.joined):
        one request per channel (every version held) and one for the directory key."""
        answers = []
        for channel_id, versions in self.channels.items():
            items = [
                {
                    "device_id": device_id,
                    "sender_device_id": self.device_id,
                    "sender_public_key": self.keys.public_b64,
                    "envelope": self.keys.wrap_for(public_key, key),
                    "key_version": version,
                }
                for version, key in sorted(versions.items())
            ]
            answers.append(
                await http.post(
                    "/channels/keys",
                    json={"channel_id": channel_id, "envelopes": items},
                    headers=self.auth,
                )
            )
        if self.directory is not None:
            item = {
                "device_id": device_id,
                "sender_device_id": self.device_id,
                "sender_public_key": self.keys.public_b64,
                "envelope": self.keys.wrap_for(public_key, self.directory),
            }
            answers.append(
                await http.post("/directory/keys", json={"envelopes": [item]}, headers=self.auth)
            )
        return answers


# ---------------------------------------------------------------- files (issue 17)
# The client convention of docs/API.md ("Encrypted files"): a file is sealed with a fresh
# AES-256-GCM key in one shot, uploaded as raw nonce(12) ‖ ciphertext ‖ tag(16); the key
# travels inside the message's sealed JSON body.


def seal_file(data: bytes, key: bytes | None = None) -> tuple[bytes, bytes]:
    """(key, the bytes to upload)."""
    key = key if key is not None else AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    return key, nonce + AESGCM(key).encrypt(nonce, data, None)


def open_file(key: bytes, blob: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:12], blob[12:], None)


def attachment_body(text: str, files: list[dict[str, Any]]) -> bytes:
    """The plaintext a message with attachments seals: {"v":1,"text","files":[...]}, each
    file {"id","key" (base64),"name","type","size"[,"width","height"]}."""
    import json

    return json.dumps({"v": 1, "text": text, "files": files}).encode()
