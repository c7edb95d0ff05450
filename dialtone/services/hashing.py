"""Password hashing off the event loop: a small dedicated pool, low CPU priority, bounded.

argon2id (19 MiB, t=2, p=1) takes tens of milliseconds of CPU and releases the GIL,
so it runs in threads. Three choices keep a login storm from hurting everyone else:

- its own pool, one thread per core: at most that many 19 MiB hashes in memory at
  once, and the default executor stays free for other work. The pool's queue is
  first come, first served;
- its threads run at a lower CPU priority (nice +10): when the cores are busy the
  kernel prefers the event loop's thread, which delivers messages, over a hash,
  which only makes one login wait a little longer. An idle core still runs hashes
  at full speed;
- a bounded number of hashes waiting or running: past it a login is answered
  429 with Retry-After at once instead of queueing for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from dialtone.errors import RateLimited
from dialtone.metrics import NO_METRICS, Metrics

T = TypeVar("T")

HASH_NICE = 10
MAX_PENDING = 64


def _lower_priority(increment: int) -> None:
    # On Linux a thread has its own nice value, set through its thread id.
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)


class HashingPool:
    def __init__(
        self,
        threads: int | None = None,
        max_pending: int = MAX_PENDING,
        nice: int = HASH_NICE,
    ) -> None:
        self.threads = threads or os.cpu_count() or 1
        self.max_pending = max_pending
        self.pending = 0
        self._nice = nice
        self._executor: ThreadPoolExecutor | None = None
        self.metrics: Metrics = NO_METRICS

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.threads,
                thread_name_prefix="dialtone-hash",
                initializer=_lower_priority,
                initargs=(self._nice,),
            )
        return self._executor

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """Run ``function(*args)`` on the pool; 429 when too many are waiting already."""
        if self.pending >= self.max_pending:
            self.metrics.rate_limited("password_hashing")
            raise RateLimited("too many logins in progress, try again shortly", retry_after=1)
        self.pending += 1
        try:
            timed = self.metrics.timed_hash(function)
            return await asyncio.get_running_loop().run_in_executor(self._pool(), timed, *args)
        finally:
            self.pending -= 1

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
