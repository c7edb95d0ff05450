"""The local-folder storage on its own: whole files or nothing, ranged reads, keys that
cannot leave the folder, and the sweep of unfinished uploads."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dialtone.storage import BodyTooLong, BodyTooShort, LocalStorage


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(storage: LocalStorage, key: str, start: int, end: int) -> bytes:
    return b"".join([block async for block in storage.open(key, start, end)])


async def test_put_open_delete(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    data = os.urandom(3 * 1024 * 1024 + 5)
    stored = await storage.put("abcdef", chunks(data[:1000], data[1000:]), len(data))
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert storage.path("abcdef") == tmp_path / "ab" / "cd" / "abcdef"
    assert await storage.size("abcdef") == len(data)
    assert await read_all(storage, "abcdef", 0, len(data)) == data
    assert await read_all(storage, "abcdef", 1_000_000, 1_000_010) == data[1_000_000:1_000_010]
    assert list((tmp_path / "tmp").iterdir()) == []
    await storage.delete("abcdef")
    await storage.delete("abcdef")  # already gone: not an error
    assert await storage.size("abcdef") is None


@pytest.mark.parametrize(
    ("parts", "error"),
    [((b"x" * 10,), BodyTooShort), ((b"x" * 60, b"x" * 60), BodyTooLong)],
)
async def test_a_wrong_length_keeps_nothing(
    tmp_path: Path, parts: tuple[bytes, ...], error: type[Exception]
) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(error):
        await storage.put("key1", chunks(*parts), 100)
    assert files_under(tmp_path) == []


async def test_a_stream_that_fails_keeps_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 2_000_000
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await storage.put("key2", broken(), 5_000_000)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("key", ["", "../etc", "a/b", ".hidden", "a\\b"])
def test_keys_stay_inside_the_folder(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        LocalStorage(tmp_path).path(key)


async def test_the_sweep_takes_only_old_partial_uploads(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    old, fresh = tmp / "old.part", tmp / "fresh.part"
    old.write_bytes(b"o")
    fresh.write_bytes(b"f")
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    assert await storage.sweep_partial(3600) == 1
    assert not old.exists()
    assert fresh.exists()
