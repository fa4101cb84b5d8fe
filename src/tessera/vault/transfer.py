"""Moving fragment bytes to and from several stores at once.

:class:`StoreWriter` is a file-like sink whose writes go to a store from its own thread
through a short bounded queue, so a splitter writing n fragments block by block keeps
all n stores busy at once while holding only a few blocks per store in memory.  A store
that fails stops receiving data but never stops the others: its error is reported when
the writer is finished, and the caller decides whether the write quorum still holds.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import IO, Any, TypeVar, cast

from tessera.errors import StorageUnavailableError, TesseraError
from tessera.vault.store import Store

__all__ = ["StoreReader", "StoreWriter", "in_background", "on_each"]

T = TypeVar("T")
K = TypeVar("K")

_END = object()


class StoreWriter:
    """Write one file on one store (write-only, sequential).

    Remote stores are written from a background thread through a bounded queue, so a
    slow store never holds up the others.  A local folder is written directly from the
    caller's thread: the page cache makes those writes non-blocking, and the copy into
    the queue would cost more than it saves.
    """

    def __init__(self, store: Store, relative: str, *, depth: int = 8, stall_s: float = 120.0):
        self.store = store
        self.relative = relative
        self.error: BaseException | None = None
        self._stall_s = stall_s
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._position = 0
        self._closed = False
        self._direct: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        if store.local:
            try:
                self._direct = store.open_write(relative)
            except BaseException as exc:
                self.error = exc
        else:
            self._thread = threading.Thread(
                target=self._run, name=f"vault-write-{store.id}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        target: IO[bytes] | None = None
        try:
            target = self.store.open_write(self.relative)
        except BaseException as exc:
            self.error = exc
        while True:
            item = self._queue.get()
            if item is _END:
                break
            buffer, length = cast(tuple[bytearray, int], item)
            if target is not None and self.error is None:
                try:
                    target.write(memoryview(buffer)[:length])
                except BaseException as exc:
                    self.error = self.store._fail(f"write {self.relative}", exc)
            self._free.put(buffer)
        if target is not None:
            try:
                target.close()
            except BaseException as exc:
                if self.error is None:
                    self.error = self.store._fail(f"write {self.relative}", exc)

    # -- the file-like surface the splitter uses -------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue a copy of ``data`` for the store; never raises for store failures."""
        view = memoryview(data).cast("B")
        size = view.nbytes
        if self._direct is not None and self.error is None:
            try:
                self._direct.write(view)
            except BaseException as exc:
                self.error = self.store._fail(f"write {self.relative}", exc)
        elif self._thread is not None and self.error is None:
            # Copy into a recycled buffer: the caller may reuse ``data`` at once, and
            # fresh 1 MiB allocations per write cost more than the copy itself.
            try:
                buffer = self._free.get_nowait()
            except queue.Empty:
                buffer = bytearray(size)
            if len(buffer) < size:
                buffer = bytearray(size)
            buffer[:size] = view
            try:
                self._queue.put((buffer, size), timeout=self._stall_s)
            except queue.Full:
                self.error = StorageUnavailableError(f"store {self.store.label}: write stalled")
        self._position += size
        return size

    def tell(self) -> int:
        """Bytes written so far."""
        return self._position

    def writable(self) -> bool:
        """Always True."""
        return True

    def readable(self) -> bool:
        """Always False."""
        return False

    def seekable(self) -> bool:
        """Always False: fragments are written front to back."""
        return False

    def flush(self) -> None:
        """Nothing to do: the background thread writes as it can."""

    def finish(self) -> BaseException | None:
        """Wait until everything is written and the file closed; the store's error, if any."""
        if not self._closed and self._thread is None:
            self._closed = True
            if self._direct is not None:
                try:
                    self._direct.close()
                except BaseException as exc:
                    if self.error is None:
                        self.error = self.store._fail(f"write {self.relative}", exc)
        if not self._closed and self._thread is not None:
            self._closed = True
            try:
                self._queue.put(_END, timeout=self._stall_s)
            except queue.Full:
                self.error = self.error or StorageUnavailableError(
                    f"store {self.store.label}: write stalled"
                )
            self._thread.join(self._stall_s)
            if self._thread.is_alive() and self.error is None:
                self.error = StorageUnavailableError(f"store {self.store.label}: write stalled")
        return self.error

    def close(self) -> None:
        """Same as :meth:`finish`, ignoring the result."""
        self.finish()


class StoreReader:
    """A fragment being read from a store; remembers whether the store failed mid-stream.

    Every call on the store's file runs on the reader's own daemon thread and must
    answer within ``stall_s`` seconds: a store that stops sending data mid-read (a
    half-dead connection, a hung mount) fails like one that errors, instead of hanging
    the restore, and the caller falls back to the other stores.  The stuck thread is
    abandoned (it is a daemon, so it never holds up the process's exit).

    Adds ``readinto`` for backends whose files lack it (sshfs).
    """

    def __init__(self, store: Store, handle: IO[bytes], *, stall_s: float = 60.0) -> None:
        self.store = store
        self.handle = handle
        self.failure: str | None = None
        self._stall_s = stall_s
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stalled = False

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._serve, name=f"vault-read-{self.store.id}", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            call.run()

    def _timed(self, fn: Callable[[], T]) -> T:
        if self._stalled:  # its thread may still be stuck in the store
            raise StorageUnavailableError(self.failure or "store stalled")
        if self._thread is None:
            self._start()
        call = _Call(fn)
        self._calls.put(call)
        if not call.done.wait(self._stall_s):
            raise TimeoutError(f"no answer in {self._stall_s:g} s")
        return cast(T, call.result())

    def _guard(self, action: str, call: Callable[[], T]) -> T:
        try:
            return self._timed(call)
        except StorageUnavailableError:
            raise
        except Exception as exc:
            error = self.store._fail(action, exc)
            if isinstance(exc, TimeoutError):
                self._stalled = True
                error = StorageUnavailableError(
                    f"store {self.store.label}: {action} stalled (no data for {self._stall_s:g} s)"
                )
            self.failure = str(error)
            raise error from exc

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes."""
        return self._guard("read", lambda: self.handle.read(size))

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` as far as the file allows; the count."""
        native = getattr(self.handle, "readinto", None)
        if native is not None:
            return int(self._guard("read", lambda: native(buffer)))
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move the read position."""
        return self._guard("seek", lambda: self.handle.seek(offset, whence))

    def tell(self) -> int:
        """The read position."""
        return self._guard("tell", self.handle.tell)

    def seekable(self) -> bool:
        """Always True."""
        return True

    def readable(self) -> bool:
        """Always True."""
        return True

    def close(self) -> None:
        """Let go of the file (a failed store's errors are ignored here)."""
        if self._stalled:  # closing might block behind the stuck call: let its thread do it
            self._calls.put(_Call(self.handle.close))
        else:
            with contextlib.suppress(Exception):
                self.handle.close()
        self._calls.put(None)


class _Call:
    """One call handed to a reader's thread, with its outcome."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:
            self.error = exc
        self.done.set()

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def in_background(fn: Callable[[], T]) -> Future[T]:
    """Run ``fn`` on a daemon thread: a store that never answers cannot hold up the exit
    of the process (a ThreadPoolExecutor's workers are joined at exit)."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="vault-call", daemon=True).start()
    return future


def _no_answer(item: object, timeout_s: float) -> StorageUnavailableError:
    who = f"store {item.label}" if isinstance(item, Store) else "a store"
    return StorageUnavailableError(f"{who}: no answer in {timeout_s:g} s")


def on_each(
    items: Iterable[K],
    action: Callable[[K], T],
    *,
    workers: int = 16,
    timeout_s: float | None = None,
) -> dict[K, T | TesseraError]:
    """Run ``action`` on every item concurrently; TesseraErrors are returned, not raised.

    With ``timeout_s``, once nothing has finished for that long the items still running
    (a store that hangs) get a StorageUnavailableError; their daemon threads are left
    behind and never hold up the process's exit.
    """
    todo = list(items)
    if not todo:
        return {}
    results: dict[int, object] = {}
    cursor = [0]
    cond = threading.Condition()

    def work() -> None:
        while True:
            with cond:
                if cursor[0] >= len(todo):
                    return
                i = cursor[0]
                cursor[0] += 1
            try:
                outcome: object = action(todo[i])
            except BaseException as exc:
                outcome = exc
            with cond:
                results.setdefault(i, outcome)
                cond.notify_all()

    for _ in range(max(1, min(workers, len(todo)))):
        threading.Thread(target=work, name="vault-each", daemon=True).start()
    with cond:
        last = time.monotonic()
        while len(results) < len(todo):
            before = len(results)
            cond.wait(None if timeout_s is None else max(0.0, last + timeout_s - time.monotonic()))
            if len(results) != before:
                last = time.monotonic()
            elif timeout_s is not None and time.monotonic() - last >= timeout_s:
                for i, item in enumerate(todo):
                    results.setdefault(i, _no_answer(item, timeout_s))
        done = dict(results)
    for outcome in done.values():
        if isinstance(outcome, BaseException) and not isinstance(outcome, TesseraError):
            raise outcome
    return {item: cast("T | TesseraError", done[i]) for i, item in enumerate(todo)}
