"""Secure queries in their own worker threads, at most ``limit`` at a time.

A query takes a slot at once or is refused at once (:class:`TooManyQueriesError`, a
503 with ``Retry-After``): it never waits in a queue behind others, so a client sees a
refusal within milliseconds instead of a timeout.  The threads are the pool's own, not
the event loop's nor the shared pool that the metadata routes use, so a long query
never delays them.  A slot is given back when the query's thread finishes, even when
the client has gone away meanwhile (a thread cannot be stopped).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tessera.errors import UsageError
from tessera.server.errors import TooManyQueriesError

__all__ = ["DEFAULT_MAX_QUERIES", "QueryPool"]

#: Secure queries run at once unless configured (``[gateway] max_queries``).
DEFAULT_MAX_QUERIES = 4


class QueryPool:
    """At most ``limit`` blocking calls at a time, each in a thread of this pool."""

    def __init__(self, limit: int = DEFAULT_MAX_QUERIES, retry_after_s: float = 1.0) -> None:
        if limit < 1:
            raise UsageError("max_queries must be at least 1")
        self.limit, self.retry_after_s = limit, retry_after_s
        self._slots = threading.BoundedSemaphore(limit)
        self._running = 0
        self._count_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="tessera-query")

    @property
    def running(self) -> int:
        """Queries holding a slot now."""
        return self._running

    async def run(self, work: Callable[[], Any]) -> Any:
        """``work()`` in a query thread (with this context's variables), or
        TooManyQueriesError at once when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            error = TooManyQueriesError(
                f"{self.limit} secure queries are running already; try again shortly"
            )
            error.retry_after_s = self.retry_after_s
            raise error
        with self._count_lock:
            self._running += 1
        context = contextvars.copy_context()
        try:
            future: Future[Any] = self._pool.submit(context.run, work)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: Future[Any] | None) -> None:
        with self._count_lock:
            self._running -= 1
        self._slots.release()

    def close(self) -> None:
        """Stop taking queries; threads still running are left to finish."""
        self._pool.shutdown(wait=False, cancel_futures=True)
