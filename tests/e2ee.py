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
