"""The gateway's audit events, written by one thread in group commits.

Every request still waits until its event is in the log (appended, and synced as the
log does) before it is answered, but the waiting is on a future, not a thread, and the
events of all requests that arrived meanwhile go into one :meth:`AuditLog.append` call:
one write and one sync for many requests, and no file I/O on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future
from pathlib import Path

from tessera.core.audit_sink import AuditEvent
from tessera.workflows import audit as audit_flow

__all__ = ["BATCH_MAX", "Journal"]

#: The most events written in one append.
BATCH_MAX = 512
_LOG = logging.getLogger("tessera.server")
_Item = tuple[AuditEvent, "Future[None]"] | None


class Journal:
    """Appends events to the gateway log of ``home`` from one writer thread."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, event: AuditEvent) -> Future[None]:
        """Queue ``event``; the future is done once it is in the log (or failed)."""
        future: Future[None] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the gateway's audit journal is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tessera-audit-journal", daemon=True
                )
                self._thread.start()
        self._queue.put((event, future))
        return future

    async def record(self, event: AuditEvent) -> None:
        """Append ``event`` to the log; returns once it is there."""
        await asyncio.wrap_future(self.submit(event))

    def record_sync(self, event: AuditEvent) -> None:
        """The same, from a worker thread (never from the event loop)."""
        self.submit(event).result()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < BATCH_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[AuditEvent, Future[None]]]) -> None:
        try:
            audit_flow.gateway_log(self.home).append([event for event, _ in batch])
        except BaseException as exc:  # every waiting request fails, the thread lives on
            _LOG.error("audit append failed (%s)", exc.__class__.__name__)
            for _, future in batch:
                future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for _, future in batch:
            future.set_result(None)
