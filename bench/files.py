"""Encrypted files: upload and download throughput beside what the machine allows.

In one run, against one server (``dialtone serve`` as a subprocess, SQLite or
PostgreSQL as bench/common.py has it):

- ``big``: one file of ``--big-mib`` MiB (default 20) uploaded with ``POST /files`` and
  downloaded with ``GET /files/{id}``, ``--rounds`` times; MiB/s of the best round and
  the median;
- ``small``: ``--count`` files (default 200) of ``--small-kib`` KiB (default 100)
  uploaded then downloaded over ``--concurrency`` keep-alive connections; files/s and
  MiB/s;
- the references, measured in the same run on the same machine: the loopback socket
  (a plain asyncio sink/source process, same block sizes, no HTTP) one way and the
  other, and the disk under the server's data folder (a write of the big file with
  fsync, then its read; and the small files each written, fsynced and renamed into a
  folder, as the storage does).

The bytes are random (what an encrypted file looks like). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from common import (
    CpuMeter,
    Target,
    add_target_arguments,
    emit,
    log,
    machine_figures,
    register_users,
    target_from_args,
)

MiB = 1024 * 1024
BLOCK = 256 * 1024


async def _open(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(target.host, target.port, limit=4 * MiB)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], int]:
    """Status, headers, and the body's length (read and thrown away, in blocks)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    left = length
    while left:
        block = await reader.read(min(left, MiB))
        if not block:
            raise ConnectionError("body cut short")
        left -= len(block)
    return int(status_line.split(" ", 2)[1]), headers, length


class Client:
    """One keep-alive connection for raw uploads and downloads."""

    def __init__(self, target: Target, token: str) -> None:
        self.target = target
        self.auth = f"Authorization: Bearer {token}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_body = b""

    async def _conn(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await _open(self.target)
        return self.reader, self.writer

    async def upload(self, channel: str, data: bytes) -> str:
        reader, writer = await self._conn()
        head = (
            f"POST /files?channel_id={channel} HTTP/1.1\r\nHost: bench\r\n{self.auth}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        writer.write(head.encode())
        view = memoryview(data)
        for start in range(0, len(data), BLOCK):
            writer.write(view[start : start + BLOCK])
            await writer.drain()
        head_bytes = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head_bytes.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        body = await reader.readexactly(length)
        if not head_bytes.startswith(b"HTTP/1.1 201"):
            raise RuntimeError(f"upload refused: {head_bytes[:40]!r} {body[:200]!r}")
        file_id: str = json.loads(body)["id"]
        return file_id

    async def download(self, file_id: str) -> int:
        reader, writer = await self._conn()
        writer.write(
            f"GET /files/{file_id} HTTP/1.1\r\nHost: bench\r\n{self.auth}\r\n\r\n".encode()
        )
        status, _, length = await _answer(reader)
        if status != 200:
            raise RuntimeError(f"download answered {status}")
        return length

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------ references

_SINK = textwrap.dedent(
    """
    import asyncio, sys
    async def handle(reader, writer):
        while True:
            head = await reader.read(9)
            if len(head) < 9:
                break
            mode, size = head[:1], int.from_bytes(head[1:], "big")
            if mode == b"u":
                left = size
                while left:
                    block = await reader.read(min(left, 1 << 20))
                    left -= len(block)
                writer.write(b"k")
            else:
                block = bytes(256 * 1024)
                left = size
                while left:
                    writer.write(block[: min(left, len(block))])
                    left -= min(left, len(block))
                    await writer.drain()
            await writer.drain()
        writer.close()
    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()
    asyncio.run(main())
    """
)


async def loopback(port: int, size: int, rounds: int) -> dict[str, float]:
    """The sink process (``_SINK``) receiving or sending ``size`` bytes over loopback TCP:
    the same event-loop costs a server pays, without HTTP, the database or the disk."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4 * MiB)
    data = os.urandom(size)
    ups: list[float] = []
    downs: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        writer.write(b"u" + size.to_bytes(8, "big"))
        view = memoryview(data)
        for start in range(0, size, BLOCK):
            writer.write(view[start : start + BLOCK])
            await writer.drain()
        await reader.readexactly(1)
        ups.append(size / MiB / (time.perf_counter() - started))
        started = time.perf_counter()
        writer.write(b"d" + size.to_bytes(8, "big"))
        await writer.drain()
        left = size
        while left:
            left -= len(await reader.read(min(left, MiB)))
        downs.append(size / MiB / (time.perf_counter() - started))
    writer.close()
    return {
        "loopback_send_mib_s": round(max(ups), 1),
        "loopback_receive_mib_s": round(max(downs), 1),
    }


def disk(folder: Path, big: int, small: int, count: int) -> dict[str, float]:
    """The disk under ``folder``: one big write + fsync and its read back (from the page
    cache, as a download right after an upload reads it), and small files written,
    fsynced and renamed one by one (what the storage does per upload)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(big)
    path = folder / "big.bin"
    started = time.perf_counter()
    with path.open("wb") as handle:
        view = memoryview(data)
        for start in range(0, big, MiB):
            handle.write(view[start : start + MiB])
        handle.flush()
        os.fsync(handle.fileno())
    write = big / MiB / (time.perf_counter() - started)
    started = time.perf_counter()
    with path.open("rb") as handle:
        while handle.read(BLOCK):
            pass
    read = big / MiB / (time.perf_counter() - started)
    path.unlink()
    piece = os.urandom(small)
    started = time.perf_counter()
    for index in range(count):
        temp = folder / f"{index}.part"
        with temp.open("wb") as handle:
            handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, folder / f"{index}.bin")
    elapsed = time.perf_counter() - started
    for index in range(count):
        (folder / f"{index}.bin").unlink()
    return {
        "disk_write_fsync_mib_s": round(write, 1),
        "disk_read_cached_mib_s": round(read, 1),
        "disk_small_files_s": round(count / elapsed, 1),
        "disk_small_mib_s": round(count * small / MiB / elapsed, 1),
    }


# ------------------------------------------------------------------ the run


async def run(target: Target, args: argparse.Namespace, sink_port: int) -> dict[str, Any]:
    (user,) = await register_users(target, 1)
    reader, writer = await _open(target)
    body = b'{"name_enc":"YmVuY2g="}'
    writer.write(
        (
            f"POST /channels HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {user.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    channel = json.loads(await reader.readexactly(length))["channel"]["id"]
    writer.close()

    server = CpuMeter(target.pid)
    big = args.big_mib * MiB
    data = os.urandom(big)
    client = Client(target, user.token)
    ups: list[float] = []
    downs: list[float] = []
    server.start()
    for _ in range(args.rounds):
        started = time.perf_counter()
        file_id = await client.upload(channel, data)
        ups.append(big / MiB / (time.perf_counter() - started))
        started = time.perf_counter()
        assert await client.download(file_id) == big
        downs.append(big / MiB / (time.perf_counter() - started))
    server.stop()
    await client.close()
    big_cpu = server.figures()

    small = args.small_kib * 1024
    pieces = [os.urandom(small) for _ in range(8)]
    clients = [Client(target, user.token) for _ in range(args.concurrency)]
    ids: list[str] = []

    async def uploads(worker: Client, share: range) -> None:
        for index in share:
            ids.append(await worker.upload(channel, pieces[index % len(pieces)]))

    async def downloads(worker: Client, share: list[str]) -> None:
        for file_id in share:
            await worker.download(file_id)

    shares = [range(i, args.count, args.concurrency) for i in range(args.concurrency)]
    server.start()
    started = time.perf_counter()
    await asyncio.gather(*(uploads(c, s) for c, s in zip(clients, shares, strict=True)))
    small_up = time.perf_counter() - started
    started = time.perf_counter()
    await asyncio.gather(*(downloads(c, ids[i :: args.concurrency]) for i, c in enumerate(clients)))
    small_down = time.perf_counter() - started
    server.stop()
    for c in clients:
        await c.close()

    references = await loopback(sink_port, big, args.rounds)
    with tempfile.TemporaryDirectory(prefix="dialtone-bench-disk-", dir=args.disk_dir) as where:
        references.update(disk(Path(where), big, small, args.count))
    return {
        "big_mib": args.big_mib,
        "rounds": args.rounds,
        "big_upload_mib_s": round(max(ups), 1),
        "big_upload_median_mib_s": round(statistics.median(ups), 1),
        "big_download_mib_s": round(max(downs), 1),
        "big_download_median_mib_s": round(statistics.median(downs), 1),
        **{f"big_{k}": v for k, v in big_cpu.items()},
        "small_count": args.count,
        "small_kib": args.small_kib,
        "concurrency": args.concurrency,
        "small_upload_files_s": round(args.count / small_up, 1),
        "small_upload_mib_s": round(args.count * small / MiB / small_up, 1),
        "small_download_files_s": round(args.count / small_down, 1),
        "small_download_mib_s": round(args.count * small / MiB / small_down, 1),
        **{f"small_{k}": v for k, v in server.figures().items()},
        **references,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arguments(parser)
    parser.add_argument("--big-mib", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--small-kib", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--disk-dir", default=None, help="folder for the disk reference (default: the temp dir)"
    )
    args = parser.parse_args()
    machine = machine_figures()
    sink = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE)
    try:
        assert sink.stdout is not None
        sink_port = int(sink.stdout.readline())
        with target_from_args(args) as target:
            log("server up; measuring")
            figures = asyncio.run(run(target, args, sink_port))
    finally:
        sink.terminate()
        sink.wait()
    emit({"bench": "files", "db": target.db, **figures, **machine})


if __name__ == "__main__":
    main()
