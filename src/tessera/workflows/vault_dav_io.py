"""Streaming a vault file out, for the WebDAV mount (:mod:`.vault_dav`).

:class:`RestoreStream` is a readable, seekable file of one object's plaintext.  It opens
the object's fragment on every store at once and takes the first k that answer (the
others keep opening, for a fallback), checks before the first byte that their tag lists
are the ones the signed manifest commits to, then combines block by block on a thread
of its own into a short queue.  Every block is authenticated by the core before it is
queued; the last one is queued only once the whole object restored, so a reader never
receives every byte of a file that did not restore.  A store failing midway is replaced
(the combine starts again from every store that answers and skips what was already
handed out).  A forward seek skips, a backward one starts over: a range costs its
offset in restoring time.  Writing is :mod:`.vault_dav_put`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import FIRST_COMPLETED, Future, wait
from functools import partial
from typing import IO, Any, BinaryIO, cast

from tessera.core.fragment import combine_stream, read_header
from tessera.errors import (
    InsufficientSharesError,
    IntegrityError,
    TesseraError,
)
from tessera.vault import Manifest, Vault
from tessera.vault.store import Store
from tessera.vault.tags import fragment_digest
from tessera.vault.transfer import StoreReader, in_background

__all__ = ["QUEUE_BYTES", "RestoreStream"]

#: Bytes of plaintext queued ahead of the reader (and of a put, behind the writer).
QUEUE_BYTES = 8 << 20
_POLL_S = 0.5


class _CancelledError(Exception):
    """The reader went away: the restore thread stops."""


_END = object()
Pending = dict[Future[IO[bytes]], Store]


# ------------------------------------------------------------------------ reading


class _Sources:
    """The object's fragments being opened on every store; the readers that opened."""

    def __init__(self, vault: Vault, manifest: Manifest) -> None:
        self.vault, self.manifest = vault, manifest
        path = manifest.data_path()
        self.pending: Pending = {
            in_background(partial(store.open_read, path)): store for store in vault.stores
        }
        self.readers: dict[int, StoreReader] = {}
        self.missing: dict[int, str] = {}

    def first_k(self) -> None:
        """Wait for the fastest k stores (at most ``open_timeout_s`` for each next one)."""
        while self.pending and len(self.readers) < self.manifest.k:
            done, _ = wait(
                self.pending, timeout=self.vault.open_timeout_s, return_when=FIRST_COMPLETED
            )
            if not done:
                break
            self._collect(done)

    def all_in_time(self) -> None:
        """Wait for every store still opening (``open_timeout_s``), for a fallback."""
        if self.pending:
            done, _ = wait(self.pending, timeout=self.vault.open_timeout_s)
            self._collect(done)
            for store in self.pending.values():
                self.missing[store.id] = f"store {store.label}: no answer in time"
            self.pending.clear()

    def _collect(self, done: set[Future[IO[bytes]]]) -> None:
        for future in done:
            store = self.pending.pop(future)
            try:
                self.readers[store.id] = StoreReader(
                    store, future.result(), stall_s=self.vault.read_stall_s
                )
            except TesseraError as exc:
                self.missing[store.id] = str(exc)

    def usable(self) -> list[int]:
        """Stores whose reader has not failed, local ones first."""
        ok = [sid for sid, r in self.readers.items() if r.failure is None]
        return sorted(ok, key=lambda sid: (not self.readers[sid].store.local, sid))

    def unrecoverable(self, error: TesseraError | None = None) -> InsufficientSharesError:
        """The error when fewer than k usable fragments remain."""
        down = sorted(set(self.missing) | {s for s, r in self.readers.items() if r.failure})
        what = f"stores {', '.join(map(str, down))} unavailable" if down else "no store down"
        reason = f"; {error}" if error is not None else ""
        return InsufficientSharesError(
            f"cannot restore {self.manifest.name!r}: {len(self.usable())} readable fragments, "
            f"need {self.manifest.k} valid ones ({what}){reason}"
        )

    def check(self) -> None:
        """Some opened fragment carries the tag lists the signed manifest commits to
        (format 1 manifests: its header names the object)."""
        m = self.manifest
        for sid in self.usable():
            source = cast(BinaryIO, self.readers[sid])
            try:
                if m.tags:
                    if fragment_digest(source) == m.tags:
                        return
                else:
                    source.seek(0)
                    if read_header(source).object_id.hex() == m.object_id:
                        return
            except (TesseraError, OSError):
                continue
        raise InsufficientSharesError(f"fragments of {m.name!r} do not match its signed manifest")

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


class _Sink:
    """Where the combine writes: bytes before ``skip`` are dropped, the rest is queued
    in order, always one chunk behind (the last one waits for the end)."""

    def __init__(self, run: _Run, skip: int) -> None:
        self.run = run
        self.skip = skip  # bytes handed out (or skipped by a seek): a restart drops them
        self.at = 0
        self.held: bytes | None = None
        self.held_end = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        start, self.at = self.at, self.at + view.nbytes
        if self.at <= self.skip:
            return view.nbytes
        chunk = bytes(view[max(0, self.skip - start) :])
        if self.held is not None:
            self.run.put(self.held)
            self.skip = self.held_end
        self.held, self.held_end = chunk, self.at
        return view.nbytes

    def flush(self) -> None:
        """Nothing: the queue is the buffer."""


class _Run:
    """One restore from position ``start`` on a daemon thread, into a bounded queue."""

    def __init__(self, sources: _Sources, start: int) -> None:
        self.sources = sources
        self.start = start
        # Chunks are blocks (1 MiB for shamir, 4 MiB for ssms): a few are enough.
        self.queue: queue.Queue[object] = queue.Queue(maxsize=4)
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=self._work, name="vault-dav-read", daemon=True)
        self.thread.start()

    def put(self, item: object) -> None:
        while True:
            if self.cancel.is_set():
                raise _CancelledError
            try:
                self.queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def take(self) -> bytes:
        """The next chunk (b"" at the end); the restore's error if it failed."""
        while True:
            try:
                item = self.queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self.thread.is_alive() and self.queue.empty():
                    raise IntegrityError("the restore stopped without an answer") from None
                continue
            if item is _END:
                return b""
            if isinstance(item, BaseException):
                raise item
            return cast(bytes, item)

    def stop(self) -> None:
        self.cancel.set()
        self.thread.join(5.0)

    def _work(self) -> None:
        try:
            self._restore()
        except _CancelledError:
            return
        except TesseraError as exc:
            self._report(exc)
        except Exception as exc:  # an unexpected failure still ends the reader's wait
            self._report(IntegrityError(f"restore failed ({exc.__class__.__name__})"))

    def _report(self, error: BaseException) -> None:
        with contextlib.suppress(_CancelledError):
            self.put(error)

    def _restore(self) -> None:
        s = self.sources
        m = s.manifest
        sink = _Sink(self, self.start)
        tried: list[list[int]] = []
        last: TesseraError | None = None
        while True:
            usable = s.usable()
            chosen = sorted(usable if tried else usable[: m.k])
            if len(chosen) < m.k or chosen in tried:
                raise s.unrecoverable(last)
            tried.append(chosen)
            sink.at, sink.held = 0, None
            try:
                for sid in chosen:
                    s.readers[sid].seek(0)
                report = combine_stream(
                    cast(list[BinaryIO], [s.readers[i] for i in chosen]), cast(BinaryIO, sink)
                )
            except TesseraError as exc:
                last = exc
                s.all_in_time()
                continue
            if report.object_id.hex() != m.object_id or report.size != m.size:
                raise InsufficientSharesError(
                    f"fragments of {m.name!r} do not match its signed manifest"
                )
            if sink.held is not None:
                self.put(sink.held)
            self.put(_END)
            return


class RestoreStream:
    """One vault object's plaintext as a readable, seekable binary file (see the module
    docstring).  :meth:`start` opens and checks the fragments: call it before sending
    anything, so that a lost or foreign object is an error, never partial bytes."""

    def __init__(self, vault: Vault, manifest: Manifest) -> None:
        self.vault, self.manifest = vault, manifest
        self.size = manifest.size
        self._sources: _Sources | None = None
        self._run: _Run | None = None
        self._pos = 0
        self._chunk = memoryview(b"")
        self.closed = False

    def start(self) -> None:
        """Open the fragments, check them against the manifest and start restoring."""
        if self._sources is None:
            sources = _Sources(self.vault, self.manifest)
            self._sources = sources
            sources.first_k()
            if len(sources.usable()) < self.manifest.k:
                raise sources.unrecoverable()
            sources.check()
        if self._run is None and self.size:
            self._run = _Run(self._sources, self._pos)

    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always True."""
        return True

    def writable(self) -> bool:
        """Always False."""
        return False

    def tell(self) -> int:
        """The read position."""
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move the read position (forward: skipped while restoring; back: restarted)."""
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        target = min(max(0, base + offset), self.size)
        if target < self._pos and self._run is not None:
            self._run.stop()
            self._run = None
            self._chunk = memoryview(b"")
        elif target > self._pos and self._run is not None:
            self._skip(target - self._pos)
        self._pos = target
        return target

    def _skip(self, count: int) -> None:
        while count:
            if not self._chunk:
                self._chunk = memoryview(self._next())
            step = min(count, len(self._chunk))
            self._chunk = self._chunk[step:]
            count -= step

    def _next(self) -> bytes:
        assert self._run is not None
        data = self._run.take()
        if not data:
            raise IntegrityError(f"{self.manifest.name!r} restored shorter than its manifest")
        return data

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the read position; 0 at the end of the file."""
        if self.closed:
            raise ValueError("read from a closed stream")
        view = memoryview(buffer).cast("B")
        if self._pos >= self.size or not view.nbytes:
            return 0
        if self._run is None:
            self.start()
        if not self._chunk:
            self._chunk = memoryview(self._next())
        step = min(view.nbytes, len(self._chunk), self.size - self._pos)
        view[:step] = self._chunk[:step]
        self._chunk = self._chunk[step:]
        self._pos += step
        return step

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left for a negative size)."""
        left = self.size - self._pos
        want = left if size < 0 else min(size, left)
        out = bytearray(want)
        got = 0
        while got < want:
            step = self.readinto(memoryview(out)[got:])
            if not step:
                break
            got += step
        return bytes(out[:got])

    def close(self) -> None:
        """Stop restoring and let go of the fragments."""
        if self.closed:
            return
        self.closed = True
        if self._run is not None:
            self._run.stop()
        if self._sources is not None:
            self._sources.close()

    def __enter__(self) -> RestoreStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
