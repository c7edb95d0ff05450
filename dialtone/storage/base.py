"""The storage interface: what the file service needs from wherever bytes are kept."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Stored:
    size: int
    sha256: str  # hex of the bytes as stored


class BodyTooShort(Exception):
    """The stream ended before the announced length: nothing was kept."""


class BodyTooLong(Exception):
    """The stream went past the announced length: nothing was kept."""


class FileStorage(Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes], length: int) -> Stored:
        """Store exactly ``length`` bytes from ``chunks`` under ``key``.

        Either the whole file is stored and visible under ``key``, or nothing is (a
        stream cut short, too long, or a crash leaves no file behind the key)."""
        ...

    def open(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of the stored file, in blocks."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the file; a missing one is not an error."""
        ...

    async def size(self, key: str) -> int | None:
        """The stored file's size, None when there is none."""
        ...

    async def sweep_partial(self, older_than: float) -> int:
        """Remove unfinished uploads left by a crash, older than ``older_than`` seconds."""
        ...
