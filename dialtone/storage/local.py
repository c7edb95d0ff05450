"""Files in a folder: ``<root>/ab/cd/<key>``, written through ``<root>/tmp`` and renamed.

A file is written to a temporary name in ``tmp/`` (same file system as the shards, so
the rename is atomic), fsynced, renamed into its shard folder, and the folder fsynced:
after a crash a key names either the whole file or nothing. Nothing but the folder is
shared between nodes, so a folder on a shared mount (NFS, CephFS, ...) lets every node
of a cluster serve every file.

Blocking calls run in a worker thread; the event loop only hands blocks over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from dialtone.storage.base import BodyTooLong, BodyTooShort, Stored

# Bytes gathered before one write to the disk (bounds the memory an upload holds).
WRITE_BLOCK = 1 << 20
READ_BLOCK = 256 * 1024
TMP = "tmp"


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError("invalid storage key")
        return self.root / key[:2] / key[2:4] / key

    def _prepare(self) -> Path:
        tmp = self.root / TMP
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return tmp / f"{secrets.token_hex(16)}.part"

    async def put(self, key: str, chunks: AsyncIterable[bytes], length: int) -> Stored:
        target = self.path(key)
        temp = await asyncio.to_thread(self._prepare)
        digest = hashlib.sha256()
        size = 0
        handle = await asyncio.to_thread(open, temp, "xb")
        try:
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > length:
                    raise BodyTooLong
                digest.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= WRITE_BLOCK:
                    block, pending, pending_size = b"".join(pending), [], 0
                    await asyncio.to_thread(handle.write, block)
            if size < length:
                raise BodyTooShort
            if pending:
                await asyncio.to_thread(handle.write, b"".join(pending))
            await asyncio.to_thread(self._finish, handle, temp, target)
        except BaseException:
            handle.close()
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return Stored(size=size, sha256=digest.hexdigest())

    @staticmethod
    def _finish(handle: BinaryIO, temp: Path, target: Path) -> None:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(temp, target)
        _fsync_folder(target.parent)

    async def open(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        path = self.path(key)
        handle = await asyncio.to_thread(open, path, "rb")
        try:
            await asyncio.to_thread(handle.seek, start)
            left = end - start
            while left > 0:
                block = await asyncio.to_thread(handle.read, min(READ_BLOCK, left))
                if not block:
                    break
                left -= len(block)
                yield block
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path(key).unlink)

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self.path(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def sweep_partial(self, older_than: float) -> int:
        return await asyncio.to_thread(self._sweep_partial, older_than)

    def _sweep_partial(self, older_than: float) -> int:
        tmp = self.root / TMP
        if not tmp.is_dir():
            return 0
        horizon = time.time() - older_than
        removed = 0
        for entry in tmp.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < horizon:
                    entry.unlink()
                    removed += 1
        return removed
