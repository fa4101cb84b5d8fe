"""Streaming a file into the vault, for the WebDAV mount (:mod:`.vault_dav`).

:class:`PutStream` is a writable file that becomes a vault file when closed: a known
size streams into the vault's put on a thread of its own through a bounded queue (a few
MiB in memory whatever the size); an unknown size (chunked uploads without
``X-Expected-Entity-Length``) is spooled to an unnamed temporary file encrypted under a
key that exists only in memory (:class:`Spool`: AES-256-GCM, 1 MiB records), then put.
A stream that ends short or is aborted makes the put fail, which rolls back: nothing is
stored.
"""

from __future__ import annotations

import queue
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tessera.errors import (
    InputError,
    IntegrityError,
    StorageUnavailableError,
    TesseraError,
    UsageError,
)
from tessera.vault import Vault
from tessera.vault.results import PutResult
from tessera.workflows.vault_dav_io import QUEUE_BYTES

__all__ = [
    "SPOOL_MAX",
    "SPOOL_RECORD",
    "PutStream",
    "Spool",
    "UploadInterruptedError",
    "UploadTooLargeError",
]

#: Plaintext bytes per encrypted record of a spooled upload.
SPOOL_RECORD = 1 << 20
#: The largest upload of unknown size (as the console's upload): larger ones need a length.
SPOOL_MAX = 16 * 1024**3
_POLL_S = 0.5
_END = object()


class UploadInterruptedError(UsageError):
    """The client stopped sending before the whole file arrived: nothing was stored."""

    code = "upload_interrupted"
    http_status = 400


class UploadTooLargeError(UsageError):
    """An upload of unknown size past :data:`SPOOL_MAX`."""

    code = "upload_too_large"
    http_status = 413


class _Pipe:
    """The read end the vault's put pulls from: chunks handed over by :class:`PutStream`."""

    _ABORT = object()

    def __init__(self, depth: int) -> None:
        self.queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._chunk = memoryview(b"")

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._chunk:
            item = self.queue.get()
            if item is self._ABORT:
                raise UploadInterruptedError("the upload was interrupted: nothing was stored")
            if item is _END:
                return 0
            self._chunk = memoryview(cast(bytes, item))
        step = min(view.nbytes, len(self._chunk))
        view[:step] = self._chunk[:step]
        self._chunk = self._chunk[step:]
        return step

    def read(self, size: int = -1) -> bytes:
        out = bytearray(max(0, size))
        return bytes(out[: self.readinto(out)])


class Spool:
    """An upload of unknown size, kept encrypted in an unnamed temporary file until it
    is complete: AES-256-GCM records of :data:`SPOOL_RECORD` bytes under a key that only
    this object holds (the plaintext never reaches the disk, and the file is gone when
    closed or when the process dies)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed by close()
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self._pending = bytearray()
        self._records = 0
        self.size = 0
        self._read_chunk = memoryview(b"")
        self._read_record = 0

    def _nonce(self, index: int) -> bytes:
        return index.to_bytes(12, "big")

    def _seal(self, data: bytes) -> None:
        sealed = self._aead.encrypt(self._nonce(self._records), data, None)
        self._file.write(struct.pack(">I", len(sealed)) + sealed)
        self._records += 1

    def write(self, data: Any) -> int:
        """Encrypt and spool ``data``."""
        view = memoryview(data).cast("B")
        self._pending += view
        self.size += view.nbytes
        while len(self._pending) >= SPOOL_RECORD:
            self._seal(bytes(self._pending[:SPOOL_RECORD]))
            del self._pending[:SPOOL_RECORD]
        return view.nbytes

    def rewind(self) -> None:
        """Seal what is pending and read from the start."""
        if self._pending:
            self._seal(bytes(self._pending))
            self._pending.clear()
        self._file.flush()
        self._file.seek(0)
        self._read_record = 0

    def readinto(self, buffer: Any) -> int:
        """Decrypt into ``buffer`` (0 at the end)."""
        view = memoryview(buffer).cast("B")
        if not self._read_chunk:
            head = self._file.read(4)
            if not head:
                return 0
            (length,) = struct.unpack(">I", head)
            sealed = self._file.read(length)
            if len(sealed) != length:
                raise IntegrityError("the spooled upload is truncated")
            try:
                plain = self._aead.decrypt(self._nonce(self._read_record), sealed, None)
            except Exception:
                raise IntegrityError("the spooled upload was changed on disk") from None
            self._read_record += 1
            self._read_chunk = memoryview(plain)
        step = min(view.nbytes, len(self._read_chunk))
        view[:step] = self._read_chunk[:step]
        self._read_chunk = self._read_chunk[step:]
        return step

    def close(self) -> None:
        """Delete the spool file."""
        self._file.close()


class PutStream:
    """A file that becomes the vault file ``name`` when :meth:`close` succeeds; nothing
    is stored when it ends short, fails or is aborted (see the module docstring).
    ``on_done`` runs once, however it ends."""

    def __init__(
        self,
        vault: Vault,
        name: str,
        size: int | None,
        *,
        scheme: str,
        spool_dir: Path,
        on_done: Callable[[], None],
    ) -> None:
        self.vault, self.name, self.size, self.scheme = vault, name, size, scheme
        self.received = 0
        self.spool_max = SPOOL_MAX
        self.result: PutResult | None = None
        self._on_done: Callable[[], None] | None = on_done
        self._error: BaseException | None = None
        self._spool: Spool | None = None
        self._pipe: _Pipe | None = None
        self._thread: threading.Thread | None = None
        if size is None:
            self._spool = Spool(spool_dir)
        else:
            self._pipe = _Pipe(max(2, QUEUE_BYTES // SPOOL_RECORD))
            self._thread = threading.Thread(
                target=self._put, args=(self._pipe, size), name="vault-dav-put", daemon=True
            )
            self._thread.start()

    def _put(self, source: Any, size: int) -> None:
        try:
            self.result = self.vault.put(source, size, self.name, scheme=self.scheme, replace=True)
        except BaseException as exc:
            self._error = exc

    def writable(self) -> bool:
        """Always True."""
        return True

    def write(self, data: Any) -> int:
        """Hand ``data`` on (blocks while the stores are behind)."""
        view = memoryview(data).cast("B")
        if self.size is not None and self.received + view.nbytes > self.size:
            raise UploadInterruptedError("the upload is longer than its stated size")
        self.received += view.nbytes
        if self._spool is not None and self.received > self.spool_max:
            raise UploadTooLargeError(
                f"an upload without a length is at most {self.spool_max} bytes: send its size"
            )
        if self._spool is not None:
            try:
                return self._spool.write(view)
            except OSError as exc:
                raise StorageUnavailableError(
                    f"cannot spool the upload: {exc.strerror or exc.__class__.__name__}"
                ) from None
        assert self._pipe is not None and self._thread is not None
        chunk = bytes(view)
        while True:
            if self._error is not None:
                raise self._failure()
            if not self._thread.is_alive():
                raise IntegrityError("the vault's put stopped before the upload ended")
            try:
                self._pipe.queue.put(chunk, timeout=_POLL_S)
                return view.nbytes
            except queue.Full:
                continue

    def _failure(self) -> BaseException:
        error = self._error
        assert error is not None
        if isinstance(error, InputError):  # the source ended early: the client's doing
            return UploadInterruptedError(str(error))
        if isinstance(error, TesseraError):
            return error
        return IntegrityError(f"the vault's put failed ({error.__class__.__name__})")

    def close(self) -> PutResult:
        """Store the file (all of it arrived) or raise: the put's error, or
        UploadInterruptedError when fewer bytes arrived than stated."""
        if self.result is not None:
            return self.result
        try:
            if self._spool is not None:
                self._spool.rewind()
                self.result = self.vault.put(
                    cast(BinaryIO, self._spool),
                    self._spool.size,
                    self.name,
                    scheme=self.scheme,
                    replace=True,
                )
                return self.result
            assert self._pipe is not None and self._thread is not None and self.size is not None
            if self.received < self.size:
                self._stop(_Pipe._ABORT)
                raise UploadInterruptedError(
                    f"the upload ended after {self.received} of {self.size} bytes: nothing "
                    "was stored"
                )
            self._stop(_END)
            if self._error is not None:
                raise self._failure()
            assert self.result is not None
            return self.result
        finally:
            self._finish()

    def abort(self) -> None:
        """Give up: the put rolls back (nothing is stored)."""
        try:
            if self.result is None and self._pipe is not None:
                self._stop(_Pipe._ABORT)
        finally:
            self._finish()

    def _stop(self, item: object) -> None:
        assert self._pipe is not None and self._thread is not None
        while self._thread.is_alive():
            try:
                self._pipe.queue.put(item, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _finish(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        done, self._on_done = self._on_done, None
        if done is not None:
            done()
