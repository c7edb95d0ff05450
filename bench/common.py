"""Shared harness for the load generators in bench/.

Each bench script starts a real server (``dialtone serve``) as a subprocess on a fresh
SQLite folder, or on a fresh PostgreSQL database when ``DIALTONE_BENCH_DB=postgres``, or
targets a running server with ``--url``. It drives the server over raw asyncio HTTP/1.1
(keep-alive, no client library in the hot loop, so the generator stays cheap), measures
the server's CPU and RSS with psutil and the generator's own CPU, and prints ONE JSON
object on stdout. Progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ figures


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of unsorted values (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def latency_figures(latencies: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else None),
    }


def emit(result: dict[str, Any]) -> None:
    """The one JSON object a bench script prints (with the load average at its end)."""
    load1 = round(os.getloadavg()[0], 2)
    print(json.dumps({**result, "loadavg_1m_after": load1}, sort_keys=False), flush=True)


class CpuMeter:
    """CPU seconds and RSS of the server over a measured window: its process and every
    child (``DIALTONE_WORKERS`` > 1 serves from child processes)."""

    def __init__(self, pid: int | None) -> None:
        self.process = psutil.Process(pid) if pid else None
        self._cpu0: dict[int, float] = {}
        self._t0 = 0.0
        self.cpu_seconds = 0.0
        self.wall = 0.0

    def _tree(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        with suppress(psutil.Error):
            return [self.process, *self.process.children(recursive=True)]
        return []

    def _cpu(self) -> dict[int, float]:
        seen: dict[int, float] = {}
        for proc in self._tree():
            with suppress(psutil.Error):
                times = proc.cpu_times()
                seen[proc.pid] = float(times.user + times.system)
        return seen

    def start(self) -> None:
        self._cpu0 = self._cpu()
        self._t0 = time.monotonic()

    def stop(self) -> None:
        now = self._cpu()
        self.cpu_seconds = sum(cpu - self._cpu0.get(pid, 0.0) for pid, cpu in now.items())
        self.wall = time.monotonic() - self._t0

    def rss_mib(self) -> float | None:
        if self.process is None:
            return None
        total = 0
        for proc in self._tree():
            with suppress(psutil.Error):
                total += proc.memory_info().rss
        return round(total / 2**20, 1)

    def per_unit_us(self, count: int) -> float | None:
        """Server CPU microseconds per delivery or request over the window."""
        if self.process is None or not count:
            return None
        return round(self.cpu_seconds * 1e6 / count, 2)

    def figures(self, prefix: str = "server") -> dict[str, Any]:
        if self.process is None:
            return {f"{prefix}_cpu_pct": None, f"{prefix}_rss_mib": None}
        pct = 100 * self.cpu_seconds / self.wall if self.wall else None
        return {
            f"{prefix}_cpu_pct": None if pct is None else round(pct, 1),
            f"{prefix}_cpu_s": round(self.cpu_seconds, 3),
            f"{prefix}_rss_mib": self.rss_mib(),
        }


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def machine_figures() -> dict[str, Any]:
    load1, _, _ = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1m_before": round(load1, 2)}


# ------------------------------------------------------------------ raw HTTP client


class HttpError(Exception):
    pass


class HttpConnection:
    """One keep-alive HTTP/1.1 connection. Requests on it are sequential."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader, self._writer = reader, writer
        return reader, writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        if self._writer is None or self._reader is None:
            reader, writer = await self._open()
        else:
            reader, writer = self._reader, self._writer
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        elif method in {"POST", "PUT", "PATCH"}:
            lines.append("Content-Length: 0")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise HttpError(f"connection lost: {exc!r}") from None
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        length: int | None = None
        chunked = False
        close = False
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if chunked:
            payload = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                payload += await reader.readexactly(size)
                await reader.readexactly(2)
            data = bytes(payload)
        elif length is not None:
            data = await reader.readexactly(length) if length else b""
        elif status in (204, 304) or method == "HEAD":
            data = b""
        else:
            data = await reader.read()
            close = True
        if close:
            await self.close()
        return status, data

    async def json(
        self,
        method: str,
        path: str,
        payload: Any = None,
        headers: dict[str, str] | None = None,
        expect: int | tuple[int, ...] = (200, 201),
    ) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        status, data = await self.request(method, path, body, headers)
        wanted = (expect,) if isinstance(expect, int) else expect
        if status not in wanted:
            raise HttpError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data) if data else None


class ConnectionPool:
    """A fixed set of connections handed out one request at a time (for setup work)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self._free: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for _ in range(size):
            self._free.put_nowait(HttpConnection(host, port))

    async def json(self, *args: Any, **kwargs: Any) -> Any:
        conn = await self._free.get()
        try:
            return await conn.json(*args, **kwargs)
        finally:
            self._free.put_nowait(conn)

    async def close(self) -> None:
        while not self._free.empty():
            await self._free.get_nowait().close()


# ------------------------------------------------------------------ the server under test


@dataclass
class Target:
    """The server a bench drives: started here, or given with --url."""

    host: str
    port: int
    admin_token: str
    pid: int | None
    db: str
    db_url: str | None  # for seeding data the API cannot create fast (history)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _dialtone_executable() -> str:
    candidate = Path(sys.executable).parent / "dialtone"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("dialtone")
    if found is None:
        raise SystemExit("cannot find the dialtone executable: run from the project's venv")
    return found


def wait_for_health(base_url: str, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {base_url} did not answer /health within {timeout:.0f} s")


def _pg_admin(base_url: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(base_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one bench run, dropped afterwards."""
    raw = os.environ.get("DIALTONE_BENCH_PG_URL", "").strip() or DEFAULT_PG_URL
    parts = urlsplit(raw)
    admin_url = parts._replace(path="/postgres", scheme="postgresql").geturl()
    name = f"dialtone_bench_{os.getpid()}_{secrets.token_hex(3)}"
    _pg_admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield parts._replace(path="/" + name, scheme="postgresql").geturl()
    finally:
        _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def started_server(db: str, extra_env: dict[str, str] | None = None) -> Iterator[Target]:
    """Run ``dialtone serve`` on a temp data folder (and a fresh database), then stop it."""
    with (
        tempfile.TemporaryDirectory(prefix="dialtone-bench-") as data_dir,
        postgres_database() if db == "postgres" else _no_database() as pg_url,
    ):
        port = free_port()
        admin_token = secrets.token_urlsafe(24)
        env = {
            **os.environ,
            "DIALTONE_DATA_DIR": data_dir,
            "DIALTONE_LISTEN_ADDR": f"127.0.0.1:{port}",
            "DIALTONE_RATE_LIMITS": "off",
            "DIALTONE_ADMIN_TOKEN": admin_token,
            "DIALTONE_USERNAME_PEPPER": secrets.token_hex(16),
            "DIALTONE_LOG_LEVEL": "warning",
        }
        env.pop("DIALTONE_DB_URL", None)
        if pg_url:
            env["DIALTONE_DB_URL"] = pg_url
        env.update(extra_env or {})
        log_path = Path(data_dir) / "server.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [_dialtone_executable(), "serve"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
            )
            try:
                wait_for_health(f"http://127.0.0.1:{port}", process, timeout=60)
                db_url = pg_url or f"sqlite:///{Path(data_dir) / 'dialtone.db'}"
                yield Target("127.0.0.1", port, admin_token, process.pid, db, db_url)
            except BaseException:
                sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
                raise
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextmanager
def _no_database() -> Iterator[None]:
    yield None


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="bench a running server instead of starting one")
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("DIALTONE_ADMIN_TOKEN"),
        help="with --url: the server's admin token (default: $DIALTONE_ADMIN_TOKEN)",
    )
    parser.add_argument("--server-pid", type=int, help="with --url: measure this process")
    parser.add_argument(
        "--db-url", help="with --url: the server's database, for seeding data (history)"
    )


@contextmanager
def target_from_args(args: argparse.Namespace) -> Iterator[Target]:
    if args.url:
        parts = urlsplit(args.url)
        if not args.admin_token:
            raise SystemExit("--url needs --admin-token or DIALTONE_ADMIN_TOKEN")
        wait_for_health(args.url.rstrip("/"), None, timeout=10)
        db_url: str | None = args.db_url
        db = "postgres" if db_url and db_url.startswith("postgres") else "sqlite"
        yield Target(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            args.admin_token,
            args.server_pid,
            db if db_url else "unknown",
            db_url,
        )
        return
    db = os.environ.get("DIALTONE_BENCH_DB", "sqlite").strip().lower() or "sqlite"
    if db not in {"sqlite", "postgres"}:
        raise SystemExit("DIALTONE_BENCH_DB must be sqlite or postgres")
    with started_server(db) as target:
        yield target


# ------------------------------------------------------------------ users and data


def new_public_key() -> str:
    from nacl.public import PrivateKey

    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


@dataclass
class User:
    username: str
    password: str
    public_key: str
    token: str = ""
    user_id: str = ""
    device_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def gather_limited(
    count: int, concurrency: int, make: Callable[[int], Awaitable[Any]]
) -> list[Any]:
    """Run ``make(i)`` for i in range(count), at most ``concurrency`` at a time, in order."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> Any:
        async with semaphore:
            return await make(index)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def create_invites(target: Target, count: int, concurrency: int = 8) -> list[str]:
    pool = ConnectionPool(target.host, target.port, concurrency)
    headers = {"X-Admin-Token": target.admin_token}
    try:
        bodies = await gather_limited(
            count, concurrency, lambda _: pool.json("POST", "/server/invites", None, headers)
        )
    finally:
        await pool.close()
    return [body["token"] for body in bodies]


async def register_users(
    target: Target,
    count: int,
    concurrency: int = 16,
    latencies: list[float] | None = None,
) -> list[User]:
    """Register ``count`` users (invites first), ``concurrency`` registrations at a time.

    Registration hashes a password (argon2id), so it is as slow as a login; the
    latencies of the registrations themselves are appended to ``latencies``.
    """
    invites = await create_invites(target, count)
    run = secrets.token_hex(3)
    users = [User(f"bench{run}u{i}", f"bench-password-{i}", new_public_key()) for i in range(count)]
    pool = ConnectionPool(target.host, target.port, concurrency)

    async def register(index: int) -> None:
        user = users[index]
        started = time.perf_counter()
        body = await pool.json(
            "POST",
            "/auth/register",
            {
                "username": user.username,
                "password": user.password,
                "public_key": user.public_key,
                "invite_token": invites[index],
            },
            expect=201,
        )
        if latencies is not None:
            latencies.append(time.perf_counter() - started)
        user.token, user.user_id, user.device_id = body["token"], body["user_id"], body["device_id"]

    try:
        await gather_limited(count, concurrency, register)
    finally:
        await pool.close()
    return users


def seed_messages(
    db_url: str,
    channel_id: str,
    sender: User,
    count: int,
    body_bytes: int = 240,
) -> None:
    """Insert ``count`` messages straight into the database, through the project's models.

    History needs thousands of stored messages; sending them over the API would
    measure the writer, not the reader. Bodies are random base64, like ciphertext.
    """
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    from dialtone.config import Settings, normalise_db_url
    from dialtone.db.engine import create_engine, create_sessionmaker
    from dialtone.db.models import ChannelMessage
    from dialtone.db.repositories.messages import MessageRepository

    async def run() -> None:
        engine = create_engine(Settings(db_url=normalise_db_url(db_url)))
        sessions = create_sessionmaker(engine)
        start = datetime.now(UTC) - timedelta(seconds=count)
        try:
            for offset in range(0, count, 1000):
                async with sessions() as session, session.begin():
                    await MessageRepository(session).add_many(
                        [
                            ChannelMessage(
                                channel_id=channel_id,
                                sender_id=sender.user_id,
                                sender_device_id=sender.device_id,
                                sender_name_enc=base64.b64encode(os.urandom(48)).decode(),
                                body=base64.b64encode(os.urandom(body_bytes * 3 // 4)).decode(),
                                sent_at=start + timedelta(seconds=i),
                            )
                            for i in range(offset, min(count, offset + 1000))
                        ]
                    )
            if engine.dialect.name == "postgresql":
                # A server's tables have statistics (autovacuum analyzes a table soon
                # after it grows); rows seeded a second ago have none, and without them
                # PostgreSQL's planner reads and sorts the whole channel for every page.
                async with engine.begin() as conn:
                    await conn.execute(text("ANALYZE channel_messages"))
        finally:
            await engine.dispose()

    asyncio.run(run())


# ------------------------------------------------------------------ load over processes


@dataclass
class Job:
    """What one load-generator process runs: GET ``path`` with ``headers`` on N connections."""

    host: str
    port: int
    method: str
    path: str
    headers: dict[str, str]
    connections: int
    duration: float
    body: bytes | None = None


async def wait_for_start(ready: Any, start: Any) -> None:
    """In a generator process: say it is ready, then wait until every process is."""
    ready.put(os.getpid())
    await asyncio.get_running_loop().run_in_executor(None, start.wait)


def report_outcome(
    run: Callable[[], Coroutine[Any, Any, dict[str, Any]]], ready: Any, results: Any
) -> None:
    """In a generator process: run it and hand its figures (or its failure) back."""
    try:
        results.put(asyncio.run(run()))
    except BaseException as exc:
        ready.put(-1)
        results.put({"failure": repr(exc)})


def run_generators(
    worker: Callable[..., None], parts: Sequence[Any], server: CpuMeter, timeout: float
) -> tuple[list[dict[str, Any]], int]:
    """Run ``worker(part, ready, start, results)`` in one spawned process per non-empty
    part; start them together once all are ready, measuring the server's CPU over the
    window. Returns each process's figures and how many processes ran."""
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    results = context.Queue()
    start = context.Event()
    workers = []
    for part in parts:
        if part:
            process = context.Process(target=worker, args=(part, ready, start, results))
            process.start()
            workers.append(process)
    pending = len(workers)
    deadline = time.monotonic() + 120
    while pending:
        try:
            if ready.get(timeout=0.5) == -1:
                start.set()
                raise RuntimeError(f"a load generator failed: {results.get(timeout=10)}")
            pending -= 1
        except queue.Empty:
            dead = [w.exitcode for w in workers if w.exitcode is not None]
            if dead or time.monotonic() > deadline:
                start.set()
                raise RuntimeError(f"load generators did not start (exit codes {dead})") from None
    server.start()
    start.set()
    outcomes = [results.get(timeout=timeout) for _ in workers]
    server.stop()
    for process in workers:
        process.join(timeout=10)
    failures = [o["failure"] for o in outcomes if "failure" in o]
    if failures:
        raise RuntimeError(f"a load generator failed: {failures[0]}")
    return outcomes, len(workers)


def _worker(job: Job, ready: Any, start: Any, results: Any) -> None:
    async def run() -> dict[str, Any]:
        conns = [HttpConnection(job.host, job.port) for _ in range(job.connections)]
        for conn in conns:  # warm: connect and one request each, outside the window
            await conn.request(job.method, job.path, job.body, job.headers)
        await wait_for_start(ready, start)
        cpu0 = own_cpu_seconds()
        t0 = time.monotonic()
        deadline = t0 + job.duration
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        errors = 0

        async def loop(conn: HttpConnection) -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                began = time.perf_counter()
                try:
                    status, _ = await conn.request(job.method, job.path, job.body, job.headers)
                except HttpError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(loop(c) for c in conns))
        elapsed = time.monotonic() - t0
        cpu = own_cpu_seconds() - cpu0
        for conn in conns:
            await conn.close()
        return {
            "latencies": latencies,
            "statuses": statuses,
            "errors": errors,
            "elapsed": elapsed,
            "cpu_seconds": cpu,
        }

    report_outcome(run, ready, results)


def run_load(job: Job, processes: int, server: CpuMeter) -> dict[str, Any]:
    """Spread ``job.connections`` over ``processes`` generator processes; run them together.

    Returns the merged figures: requests, req/s, latency percentiles, status counts,
    and the CPU of the generator processes next to the server's for the same window.
    """
    share, extra = divmod(job.connections, processes)
    jobs = [
        Job(**{**job.__dict__, "connections": share + (1 if index < extra else 0)})
        for index in range(processes)
    ]
    parts, procs = run_generators(
        _worker, [j if j.connections else None for j in jobs], server, job.duration + 120
    )
    latencies = [x for p in parts for x in p["latencies"]]
    statuses: dict[str, int] = {}
    for p in parts:
        for status, n in p["statuses"].items():
            statuses[str(status)] = statuses.get(str(status), 0) + n
    elapsed = max(p["elapsed"] for p in parts)
    generator_cpu = sum(p["cpu_seconds"] for p in parts)
    return {
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / elapsed, 1),
        **latency_figures(latencies),
        "statuses": statuses,
        "errors": sum(p["errors"] for p in parts),
        "duration_s": round(elapsed, 2),
        "generator_procs": procs,
        "generator_cpu_pct": round(100 * generator_cpu / elapsed, 1),
        **server.figures(),
        "server_us_per_request": server.per_unit_us(len(latencies)),
    }


# ------------------------------------------------------------------ wrk (compiled HTTP load)

_WRK_SCRIPT = """
local bodies = {%(bodies)s}
local method, path = %(method)s, %(path)s
local headers = {%(headers)s}
local n = 0
request = function()
  n = n + 1
  local body = nil
  if #bodies > 0 then body = bodies[(n %% #bodies) + 1] end
  return wrk.format(method, path, headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"errors_connect":%%d,"errors_read":%%d,' ..
    '"errors_write":%%d,"errors_status":%%d,"errors_timeout":%%d,"p50_us":%%d,' ..
    '"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string literal for ASCII


def run_wrk(
    target: Target,
    method: str,
    path: str,
    headers: dict[str, str],
    connections: int,
    duration: float,
    server: CpuMeter,
    bodies: Sequence[bytes] = (),
    threads: int = 1,
) -> dict[str, Any]:
    """Load ``path`` with wrk (Debian's, C, one thread by default) on ``connections``
    keep-alive connections for ``duration`` seconds; bodies rotate per request. Returns
    req/s, latency percentiles, errors (non-2xx counted as ``errors_status``), wrk's own
    CPU share and the server's CPU per request over the same window."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: run `make bench-deps`")
    all_headers = dict(headers)
    if bodies:
        all_headers["Content-Type"] = "application/json"
    script = _WRK_SCRIPT % {
        "bodies": ", ".join(_lua(b.decode()) for b in bodies),
        "method": _lua(method),
        "path": _lua(path),
        "headers": ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in all_headers.items()),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        command = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            handle.name,
            target.base_url,
        ]
        server.start()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        server.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
        out = (process.stdout.read() if process.stdout else b"").decode()
        err = (process.stderr.read() if process.stderr else b"").decode()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    finally:
        os.unlink(handle.name)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err or out}")
    raw = json.loads(line[len("WRKJSON ") :])
    elapsed = raw["duration_us"] / 1e6
    requests = raw["requests"]
    errors = {k[len("errors_") :]: v for k, v in raw.items() if k.startswith("errors_") and v}
    return {
        "generator": "wrk",
        "requests": requests,
        "req_per_s": round(requests / elapsed, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "errors": errors,
        "duration_s": round(elapsed, 2),
        "generator_cpu_pct": round(100 * (usage.ru_utime + usage.ru_stime) / elapsed, 1),
        **server.figures(),
        "server_us_per_request": server.per_unit_us(requests),
    }


# ------------------------------------------------------------------ lean WebSocket client


def run_async(main: Awaitable[Any]) -> Any:
    """asyncio.run on uvloop: the generator's per-read cost matters when it receives
    hundreds of thousands of small frames."""
    import uvloop

    return uvloop.run(main)  # type: ignore[arg-type]


def raise_open_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by a server started here)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class WsClient(asyncio.Protocol):
    """A lean WebSocket client: websockets' sans-I/O protocol on a bare asyncio transport.

    The load generator shares the CPU with the server, so it must cost little per
    frame: no task per socket, no per-frame awaits. Subclasses override ``on_text``.
    ``opened`` resolves when the handshake succeeds (or fails with the HTTP status).
    """

    def __init__(self, ws_url: str, token: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.ws = ClientProtocol(parse_uri(ws_url), max_size=None)
        self.token = token
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.close_code: int | None = None
        self.frames = 0
        self._buffer: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        request = self.ws.connect()
        request.headers["Authorization"] = f"Bearer {self.token}"
        self.ws.send_request(request)
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self._buffer is not None:
            self._fast_receive(data)
            return
        from websockets.http11 import Response

        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if event.status_code == 101:
                    self.opened.set_result(None)
                    # From here on frames are parsed by _fast_receive; bytes that came
                    # with the handshake response are still parsed by websockets here.
                    self._buffer = bytearray()
                else:
                    self.opened.set_exception(OSError(f"handshake: {event.status_code}"))
                continue
            self._frame(event.opcode.value, bytes(event.data))
        self.flush()

    def _fast_receive(self, data: bytes) -> None:
        """Server frames are unmasked and (from this server) never fragmented: read the
        length and slice, ~1 µs a frame instead of websockets' general parser."""
        buffer = self._buffer
        assert buffer is not None
        buffer += data
        offset = 0
        end = len(buffer)
        while end - offset >= 2:
            opcode = buffer[offset] & 0x0F
            size = buffer[offset + 1] & 0x7F
            head = 2
            if size == 126:
                if end - offset < 4:
                    break
                size = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
                head = 4
            elif size == 127:
                if end - offset < 10:
                    break
                size = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
                head = 10
            if end - offset < head + size:
                break
            start = offset + head
            offset = start + size
            self._frame(opcode, bytes(buffer[start:offset]))
        del buffer[:offset]

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            self.frames += 1
            self.on_text(payload)
        elif opcode == 0x9:
            self.ws.send_pong(payload)
            self.flush()
        elif opcode == 0x8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.on_close(self.close_code)
            if self.transport is not None:
                self.transport.close()

    def on_text(self, data: bytes) -> None:
        """One text frame from the server."""

    def on_close(self, code: int) -> None:
        """The server closed the socket with ``code``."""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or OSError("connection lost"))

    def send_text(self, text: str) -> None:
        self.ws.send_text(text.encode())
        self.flush()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_ws(
    target: Target,
    make: Callable[[], WsClient],
    source_ip: str | None = None,
    within: float = 60.0,
) -> WsClient:
    """Connect one client (from ``source_ip`` when given) and wait for its handshake."""
    loop = asyncio.get_running_loop()
    local = (source_ip, 0) if source_ip else None
    _, client = await loop.create_connection(make, target.host, target.port, local_addr=local)
    await asyncio.wait_for(client.opened, within)
    return client


def source_address(index: int, spread: int) -> str | None:
    """127.0.0.x source addresses, so many sockets to one port never run out of
    ephemeral ports (each source address has a range of its own)."""
    if spread <= 1:
        return None
    return f"127.0.0.{2 + index % spread}"
