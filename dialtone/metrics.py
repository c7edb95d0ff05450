"""Prometheus metrics (``DIALTONE_METRICS``): every metric of the server in one place.

``Metrics`` is made per app (``create_app``), never at import, and reaches the code it
measures through objects that already go there (the hub, the broker, the limiter, the
hashing pool, the message writer, the edge). Each instrumented place makes one call of
its small facade (``socket_opened()``, ``fanout(n)``, ``rate_limited(policy)``...). A
server without metrics, and every object made outside ``create_app`` (tests), holds
``NO_METRICS``, whose calls do nothing.

Values that exist anyway (open sockets, pool use, hashing queue depth, broker drops)
are read when scraped (``watch``), not counted on the hot path. Fan-out counts once per
event, with the number of sockets it reached as the amount, never once per socket.

Labels come from fixed sets chosen by the server (route templates, policies, close
reasons, methods, status codes): never a user id, token, name or address.

With ``DIALTONE_WORKERS=N`` (``dialtone.workers``) prometheus_client's multiprocess
mode is used: the parent makes a fresh directory per start and puts it in
``PROMETHEUS_MULTIPROC_DIR`` before any worker imports prometheus_client; each worker
writes its values there, a scrape sums them with ``MultiProcessCollector``, and the
parent calls ``mark_process_dead`` for a worker that exits. Every series carries a
``worker`` label, so each worker's share stays visible; watched gauges are sampled
every ``SAMPLE_SECONDS`` in each worker (a scrape may be answered by another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("dialtone.metrics")

T = TypeVar("T")

CONTENT_TYPE = CONTENT_TYPE_LATEST
SAMPLE_SECONDS = 1.0

# Server-chosen close reasons (hub.Connection.close); anything else counts as "other".
CLOSE_REASONS = frozenset(
    {
        "slow_consumer",
        "revoked",
        "draining",
        "server shutting down",
        "rate_limited",
        "session_expired",
        "banned",
    }
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

# Values read when sampled (``Metrics.watch``), each the gauge ``dialtone_<name>``.
WATCHED = {
    "sockets_open": "WebSockets open on this worker",
    "users_online": "Users with a socket on this worker",
    "password_hash_queue": "Password hashes waiting or running",
    "message_writer_queue": "Chat messages waiting for the next group commit",
    "db_pool_size": "Connections the database pool keeps",
    "db_pool_checked_out": "Database connections in use",
    "db_pool_overflow": "Database connections opened beyond the pool size",
    "broker_rejected_batches": "Batches on Redis dropped as forged, stale or replayed",
}


class Metrics:
    """The facade the server calls. This base does nothing: ``NO_METRICS``."""

    enabled = False

    def http_request(
        self, scope: Mapping[str, Any], fast: bool, status: int | None, started: float
    ) -> None:
        pass

    def socket_opened(self) -> None:
        pass

    def socket_closed(self, closing: tuple[int, str] | None) -> None:
        pass

    def fanout(self, sockets: int) -> None:
        pass

    def rate_limited(self, policy: str) -> None:
        pass

    def timed_hash(self, function: Callable[..., T]) -> Callable[..., T]:
        return function

    def message_batch(self, size: int, seconds: float, outcomes: Sequence[object]) -> None:
        pass

    def broker_received(self, lag: float) -> None:
        pass

    def broker_reconnect(self) -> None:
        pass

    def watch(self, name: str, read: Callable[[], float]) -> None:
        pass

    def node(self, node_id: str, version: str) -> None:
        pass


NO_METRICS = Metrics()


class PrometheusMetrics(Metrics):
    """Metrics kept with prometheus_client, on a registry of this instance's own
    (single process) or in ``multiprocess_dir`` (worker ``worker`` of several)."""

    enabled = True

    def __init__(self, *, worker: int = 0, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        # Multiprocess: values go to files, not to a registry; a scrape reads them all.
        own = None if multiprocess_dir else CollectorRegistry(auto_describe=True)
        self.registry = own
        w = str(worker)
        self.worker = w

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, ("worker", *labels), registry=own)

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
        ) -> Histogram:
            return Histogram(name, doc, ("worker", *labels), registry=own, buckets=buckets)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            # livesum: a dead worker's value goes (mark_process_dead), the rest add up.
            return Gauge(name, doc, ("worker", *labels), registry=own, multiprocess_mode="livesum")

        self._requests = counter(
            "dialtone_http_requests", "HTTP requests answered", ("method", "route", "status")
        )
        self._latency = histogram(
            "dialtone_http_request_duration_seconds",
            "Time to answer an HTTP request",
            LATENCY_BUCKETS,
            ("method", "route"),
        )
        self._opened = counter("dialtone_sockets_opened", "WebSockets opened").labels(w)
        self._closed = counter(
            "dialtone_sockets_closed", "WebSockets closed, by the server's reason", ("reason",)
        )
        self._events = counter("dialtone_fanout_events", "Events fanned out to sockets").labels(w)
        self._deliveries = counter(
            "dialtone_fanout_deliveries", "Socket deliveries of fanned-out events"
        ).labels(w)
        self._limited = counter(
            "dialtone_rate_limited", "Requests and frames refused by a rate limit", ("policy",)
        )
        self._hash_wait = histogram(
            "dialtone_password_hash_wait_seconds",
            "Time a password hash waited for a hashing thread",
            LATENCY_BUCKETS,
        ).labels(w)
        self._hash_run = histogram(
            "dialtone_password_hash_seconds", "Time to compute a password hash", LATENCY_BUCKETS
        ).labels(w)
        self._batch = histogram(
            "dialtone_message_batch_size", "Messages per group commit", BATCH_BUCKETS
        ).labels(w)
        self._commit = histogram(
            "dialtone_message_batch_commit_seconds",
            "Time to store and commit one batch of messages",
            LATENCY_BUCKETS,
        ).labels(w)
        self._stored = counter("dialtone_messages_stored", "Chat messages stored").labels(w)
        self._lag = histogram(
            "dialtone_broker_lag_seconds",
            "Time from publishing a batch on Redis to receiving it (across nodes' clocks)",
            LAG_BUCKETS,
        ).labels(w)
        self._reconnects = counter(
            "dialtone_broker_reconnects", "Redis subscriptions lost and retried"
        ).labels(w)
        self._gauges = {
            name: gauge(f"dialtone_{name}", doc).labels(w) for name, doc in WATCHED.items()
        }
        self._watched: dict[str, Callable[[], float]] = {}
        self._info = gauge("dialtone_node_info", "This worker's hub node id", ("node", "version"))
        # Child series resolved once per label value, not on every call.
        self._children: dict[tuple[Any, ...], Any] = {}

    # ------------------------------------------------------------ the facade

    def http_request(
        self, scope: Mapping[str, Any], fast: bool, status: int | None, started: float
    ) -> None:
        """One HTTP answer (``started``: its perf_counter at arrival). The route is the
        template Litestar matched; a fast route (dialtone.api.edge) has a fixed path,
        which is its template; anything unrouted is "unmatched", never the raw path."""
        seconds = time.perf_counter() - started
        method = scope.get("method", "")
        method = method if method in METHODS else "other"
        route = scope.get("path_template") or (scope.get("path") if fast else None) or "unmatched"
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                self._requests.labels(self.worker, method, route, str(status or 0)),
                self._latency.labels(self.worker, method, route),
            )
        child[0].inc()
        child[1].observe(seconds)

    def socket_opened(self) -> None:
        self._opened.inc()

    def socket_closed(self, closing: tuple[int, str] | None) -> None:
        if closing is None:
            reason = "client"
        else:
            reason = closing[1] if closing[1] in CLOSE_REASONS else "other"
        self._closed.labels(self.worker, reason).inc()

    def fanout(self, sockets: int) -> None:
        self._events.inc()
        if sockets:
            self._deliveries.inc(sockets)

    def rate_limited(self, policy: str) -> None:
        self._limited.labels(self.worker, policy).inc()

    def timed_hash(self, function: Callable[..., T]) -> Callable[..., T]:
        queued = time.perf_counter()

        def run(*args: Any) -> T:
            started = time.perf_counter()
            self._hash_wait.observe(started - queued)
            try:
                return function(*args)
            finally:
                self._hash_run.observe(time.perf_counter() - started)

        return run

    def message_batch(self, size: int, seconds: float, outcomes: Sequence[object]) -> None:
        """A batch committed: ``outcomes`` holds an exception for each message refused."""
        self._batch.observe(size)
        self._commit.observe(seconds)
        stored = sum(1 for outcome in outcomes if not isinstance(outcome, Exception))
        if stored:
            self._stored.inc(stored)

    def broker_received(self, lag: float) -> None:
        self._lag.observe(max(0.0, lag))

    def broker_reconnect(self) -> None:
        self._reconnects.inc()

    def watch(self, name: str, read: Callable[[], float]) -> None:
        """Report ``read()`` as the gauge ``dialtone_<name>`` (one of WATCHED) when sampled."""
        if name not in WATCHED:
            raise KeyError(name)
        self._watched[name] = read

    def node(self, node_id: str, version: str) -> None:
        self._info.labels(self.worker, node_id, version).set(1)

    # ------------------------------------------------------------ exposition

    def sample(self) -> None:
        for name, read in list(self._watched.items()):
            try:
                value = float(read())
            except Exception as exc:  # a reader must never break a scrape
                log.warning("metric %s could not be read: %s", name, type(exc).__name__)
                continue
            self._gauges[name].set(value)

    def exposition_registry(self) -> CollectorRegistry:
        if self.registry is not None:
            return self.registry
        assert self.multiprocess_dir is not None
        return multiprocess_registry(self.multiprocess_dir)

    def sampled(self) -> CollectorRegistry:
        """The registry to expose, this worker's watched values just read."""
        self.sample()
        return self.exposition_registry()

    def render(self) -> bytes:
        """The Prometheus text exposition (of every worker, in multiprocess mode)."""
        return generate_latest(self.sampled())

    async def sample_forever(self, stop: asyncio.Event) -> None:
        """Multiprocess mode: keep this worker's watched gauges fresh for a scrape
        answered by another process."""
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)


def multiprocess_registry(path: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def make_metrics(mode: str, *, worker: int = 0, multiprocess_dir: str | None = None) -> Metrics:
    if not mode:
        return NO_METRICS
    return PrometheusMetrics(worker=worker, multiprocess_dir=multiprocess_dir)


@contextlib.contextmanager
def listener(address: tuple[str, int], registry: Callable[[], CollectorRegistry]) -> Iterator[None]:
    """The separate listener (``DIALTONE_METRICS=host:port``): prometheus_client's own
    HTTP server in a daemon thread, without authentication, for as long as the block."""
    from prometheus_client import start_http_server

    class Fresh(Collector):
        # Read at each scrape: watched values are sampled, worker files re-read.
        def collect(self) -> Iterable[Metric]:
            return registry().collect()

    served = CollectorRegistry()
    served.register(Fresh())
    server, thread = start_http_server(address[1], address[0], registry=served)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def watch_engine(metrics: Metrics, engine: AsyncEngine) -> None:
    """The database pool's use, read when sampled."""
    # Imported here: the limiter (dialtone.security) imports this module, without a database.
    from sqlalchemy.pool import QueuePool

    pool = engine.sync_engine.pool
    if isinstance(pool, QueuePool):
        metrics.watch("db_pool_size", pool.size)
        metrics.watch("db_pool_checked_out", pool.checkedout)
        # overflow() counts up from -pool_size while the pool fills.
        metrics.watch("db_pool_overflow", lambda: max(0, pool.overflow()))
