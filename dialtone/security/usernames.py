"""Usernames are never stored: only HMAC-SHA256(pepper, normalised name)."""

from __future__ import annotations

import hashlib
import hmac

MIN_LENGTH = 2
MAX_LENGTH = 20


def normalise(username: str) -> str:
    return username.strip().lower()


def check_username(normalised: str) -> str | None:
    """Return why a (normalised) username is refused, or None."""
    if not MIN_LENGTH <= len(normalised) <= MAX_LENGTH:
        return f"username must be {MIN_LENGTH}-{MAX_LENGTH} characters"
    if not normalised.isprintable():
        return "username contains control characters"
    return None


def username_hash(pepper: bytes, normalised: str) -> str:
    return hmac.new(pepper, normalised.encode("utf-8"), hashlib.sha256).hexdigest()
