"""``DIALTONE_WORKERS=N``: N server processes on one port, one per core.

Each worker is a whole server (its own event loop, database pool and hub) started with
``multiprocessing``'s spawn method. Every worker opens its own listening socket with
``SO_REUSEPORT`` on the same address, so the kernel spreads new connections over them,
and hands it to uvicorn through the public ``sockets`` argument of ``dialtone.server.serve``.
A socket served by one worker gets the events published on another through the Redis
broker, exactly as between nodes on separate machines; hence N > 1 needs
``DIALTONE_REDIS_URL``.

The parent only supervises: it forwards SIGTERM/SIGINT to every worker (each then shuts
down gracefully, closing its sockets with 1001), and when a worker dies without being
asked to, it stops the others and exits non-zero so that the service manager restarts
the whole set. Workers run in their own process group (a Ctrl-C in a terminal reaches
only the parent, which forwards it once) and stop by themselves if the parent vanishes.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from types import FrameType

from dialtone.config import Settings
from dialtone.errors import ConfigError

log = logging.getLogger("dialtone.workers")

# How long the parent waits for the workers' graceful shutdown before killing them.
STOP_GRACE = 30.0
STOPPED_CLEANLY = {0, -signal.SIGTERM, -signal.SIGINT}


def check_workers(settings: Settings) -> None:
    """Refuse N > 1 without Redis: the workers could not see each other's events."""
    if settings.workers > 1 and not settings.redis_url:
        raise ConfigError(
            f"DIALTONE_WORKERS={settings.workers} needs DIALTONE_REDIS_URL: the worker "
            "processes deliver each other's events through Redis"
        )


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not yet listening (the
    event loop's ``create_server`` calls ``listen`` with uvicorn's backlog)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def freeze_startup_heap() -> None:
    """Exempt everything allocated so far from garbage collection passes.

    A full collection walks every tracked object: after imports that is ~75 000 of
    them (Litestar, SQLAlchemy, uvicorn), tens of milliseconds of a stalled event loop,
    paid by whichever messages were in flight (a p99 spike under steady load). Those
    objects live as long as the process anyway; gc.freeze moves them to the permanent
    generation, so a collection only walks what the running server allocates.
    """
    gc.collect()
    gc.freeze()


def _stop_when_parent_exits() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dialtone-parent-watch", daemon=True).start()


def _worker_main(settings: Settings, index: int = 0, metrics_dir: str | None = None) -> None:
    # Own process group: a terminal's Ctrl-C reaches the parent only, which forwards
    # one SIGTERM; two signals would make uvicorn skip its graceful shutdown.
    os.setpgrp()
    from dialtone.logs import configure_logging
    from dialtone.server import serve

    configure_logging(settings.log_format, settings.log_level)
    _stop_when_parent_exits()
    sock = reuseport_socket(settings.host, settings.port)
    freeze_startup_heap()
    serve(settings, sockets=[sock], worker=index, metrics_dir=metrics_dir)


def run_workers(settings: Settings) -> int:
    """Start ``settings.workers`` workers and supervise them; the process's exit status."""
    check_workers(settings)
    context = multiprocessing.get_context("spawn")
    with ExitStack() as metrics:
        metrics_dir = shared_metrics(settings, metrics) if settings.metrics else None
        workers = [
            context.Process(
                target=_worker_main,
                args=(settings, index, metrics_dir),
                name=f"dialtone-worker-{index}",
            )
            for index in range(settings.workers)
        ]
        return _run(workers, metrics_dir)


def shared_metrics(settings: Settings, stack: ExitStack) -> str:
    """prometheus_client's multiprocess mode for the workers: a fresh folder for this
    start, named in PROMETHEUS_MULTIPROC_DIR before any worker exists (a spawned worker
    inherits the environment, and prometheus_client reads it when first imported), and
    removed when the set stops. With DIALTONE_METRICS=host:port the parent, which
    serves no requests, answers scrapes with every worker's values."""
    from dialtone.config import metrics_address
    from dialtone.metrics import listener, multiprocess_registry

    path = tempfile.mkdtemp(prefix="dialtone-metrics-")
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    if settings.metrics != "token":
        stack.enter_context(
            listener(metrics_address(settings.metrics), lambda: multiprocess_registry(path))
        )
    return path


def _run(workers: list[multiprocessing.context.SpawnProcess], metrics_dir: str | None) -> int:
    stopping = threading.Event()

    def forward(signum: int, _: FrameType | None) -> None:
        stopping.set()
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                with suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for worker in workers:
            if not stopping.is_set():
                worker.start()
        workers[:] = [w for w in workers if w.pid is not None]
        log.info("started %d workers", len(workers))
        return _supervise(workers, stopping, metrics_dir)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(
    workers: Sequence[multiprocessing.process.BaseProcess],
    stopping: threading.Event,
    metrics_dir: str | None = None,
) -> int:
    running = list(workers)
    failed = False
    while running:
        ready = multiprocessing.connection.wait([w.sentinel for w in running])
        for worker in [w for w in running if w.sentinel in ready]:
            worker.join()
            running.remove(worker)
            if metrics_dir is not None and worker.pid is not None:
                from prometheus_client.multiprocess import mark_process_dead

                # Its live gauges (open sockets...) go; its counters still add up.
                mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]
            if stopping.is_set():
                # uvicorn re-raises the signal it stopped on once it has shut down.
                failed = failed or worker.exitcode not in STOPPED_CLEANLY
                continue
            log.error("worker %s exited unexpectedly (status %s)", worker.pid, worker.exitcode)
            failed = True
            stopping.set()
            for other in running:
                if other.pid is not None:
                    with suppress(ProcessLookupError):
                        os.kill(other.pid, signal.SIGTERM)
    for worker in workers:
        worker.join(STOP_GRACE)
        if worker.exitcode is None:
            worker.kill()
            worker.join()
    return 1 if failed else 0
