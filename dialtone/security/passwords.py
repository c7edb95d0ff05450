"""argon2id password hashing. Verification is CPU-bound: callers run it in a thread."""

from __future__ import annotations

from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP's floor for argon2id: 19 MiB, two passes, one lane.
DEFAULT_MEMORY_KIB = 19 * 1024
DEFAULT_TIME_COST = 2
DEFAULT_PARALLELISM = 1


@dataclass(frozen=True)
class PasswordPolicy:
    memory_kib: int = DEFAULT_MEMORY_KIB
    time_cost: int = DEFAULT_TIME_COST
    parallelism: int = DEFAULT_PARALLELISM

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_kib,
            parallelism=self.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )


class Passwords:
    def __init__(self, policy: PasswordPolicy) -> None:
        self._hasher = policy.hasher()
        # Verified against when the username is unknown, so timing does not tell.
        self._dummy = self._hasher.hash("dialtone-timing-equaliser")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


def check_password_strength(password: str) -> str | None:
    """Return why a password is refused, or None when it is acceptable."""
    if len(password) < 8:
        return "password must be at least 8 characters"
    if len(password) > 1024:
        return "password must be at most 1024 characters"
    if not any(c.isalpha() for c in password) or not any(c.isdigit() for c in password):
        return "password must contain a letter and a digit"
    return None
