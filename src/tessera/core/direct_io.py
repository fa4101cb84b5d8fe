"""Writing large files around the page cache (``O_DIRECT``) where the system allows it.

A custodian stores gigabytes of shares per import.  Written through the page cache, the
kernel's dirty-page throttling and write-back limit that to a few hundred MB/s on the
machines measured (and charge the writer's CPU for it); written with ``O_DIRECT`` the
same disk takes them at its own speed.  The price: the first queries after an import
read the new shares from the disk rather than from memory.

:class:`DirectWriter` writes a byte range at an offset: the whole pages inside it go
straight to the disk from a page-aligned copy, the partial pages at its ends through
the page cache (two writes of one file may share a page there, never a direct one).
Where ``O_DIRECT`` is missing or refused (tmpfs, some network file systems, macOS),
everything goes through the page cache, as any file.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path
from types import TracebackType

__all__ = ["PAGE", "DirectWriter"]

PAGE = 4096  # the alignment O_DIRECT needs: offsets, lengths and buffer addresses
_MIN_DIRECT = 64 * 1024  # smaller runs go through the cache (a direct write waits)


class DirectWriter:
    """Positioned writes to an existing file at ``path`` (see the module)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY)
        self._direct: int | None = None
        flag = getattr(os, "O_DIRECT", 0)
        if flag:
            try:
                self._direct = os.open(path, os.O_WRONLY | flag)
            except OSError:
                self._direct = None
        self._buffer: mmap.mmap | None = None

    def __enter__(self) -> DirectWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _staging(self, size: int) -> memoryview:
        """A page-aligned buffer of at least ``size`` bytes (anonymous memory: mapped
        pages are aligned), kept for the next write."""
        if self._buffer is None or len(self._buffer) < size:
            if self._buffer is not None:
                self._buffer.close()
            self._buffer = mmap.mmap(-1, max(size, PAGE))
        return memoryview(self._buffer)

    def write(self, data: memoryview, offset: int) -> None:
        """Write ``data`` (bytes) at ``offset``."""
        data = data.cast("B") if data.format != "B" else data
        end = offset + len(data)
        first = -(-offset // PAGE) * PAGE  # the whole pages inside [offset, end)
        last = end // PAGE * PAGE
        if self._direct is None or last - first < _MIN_DIRECT:
            _pwrite_all(self._fd, data, offset)
            return
        if first > offset:
            _pwrite_all(self._fd, data[: first - offset], offset)
        staging = self._staging(last - first)
        try:
            staging[: last - first] = data[first - offset : last - offset]
            _pwrite_all(self._direct, staging[: last - first], first)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # the file system took the open but not the write: the cache from now on
            os.close(self._direct)
            self._direct = None
            _pwrite_all(self._fd, data[first - offset : last - offset], first)
        finally:
            staging.release()
        if end > last:
            _pwrite_all(self._fd, data[last - offset :], last)

    def close(self) -> None:
        """Close the file (the cached writes are the kernel's to write back)."""
        for fd in (self._fd, self._direct):
            if fd is not None and fd >= 0:
                os.close(fd)
        self._fd, self._direct = -1, None
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte is written (a write may be short)."""
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
