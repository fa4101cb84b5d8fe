"""One custodian's store: a folder at an fsspec URL, seen through a few safe operations.

A store holds three folders under its root:

``data/<object id>.<generation>``
    one fragment of a file (the object id is 32 random hex digits);
``catalog/<entry id>``
    one fragment of a secret-shared, signed manifest (see :mod:`tessera.vault.manifest`);
``tmp/<token>.<suffix>``
    fragments being written; renamed into place once a write quorum is reached.

The folders are created by the first write only: reading (verify, ls, get) never
creates anything, so a deleted store stays visibly deleted.

A store therefore sees random ids and bucketed fragment lengths, never names or sizes.
Every failure of the backend becomes :class:`StorageUnavailableError` naming the store
(never its credentials); a missing file becomes :class:`FragmentMissingError`.
"""

from __future__ import annotations

import posixpath
import threading
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.spec import AbstractFileSystem

from tessera.errors import NotFoundError, StorageUnavailableError

__all__ = ["FOLDERS", "FragmentMissingError", "Store", "display_url"]

FOLDERS = ("data", "catalog", "tmp")


class FragmentMissingError(NotFoundError):
    """The fragment is not in its store."""

    code = "fragment_missing"


def display_url(url: str) -> str:
    """The URL without user info, query or fragment (safe for logs and errors)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Store:
    """A store by fsspec URL; connects on first use, thread-safe."""

    def __init__(
        self,
        store_id: int,
        url: str,
        options: dict[str, Any] | None = None,
        *,
        fs: AbstractFileSystem | None = None,
        root: str | None = None,
    ) -> None:
        self.id = store_id
        self.url = url
        self._options = dict(options or {})
        self._fs = fs
        self._root = root
        self._lock = threading.Lock()
        self._ready = False

    def __repr__(self) -> str:
        return f"Store({self.id}, {display_url(self.url)!r})"

    @property
    def local(self) -> bool:
        """True for a folder on this machine (``file://`` or a plain path)."""
        return urlsplit(self.url).scheme in ("", "file", "local")

    @property
    def label(self) -> str:
        """How errors and reports name this store: ``"3 (s3://bucket/vault)"``."""
        return f"{self.id} ({display_url(self.url)})"

    def _fail(self, action: str, exc: BaseException) -> StorageUnavailableError:
        reason = exc.__class__.__name__
        if isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        return StorageUnavailableError(f"store {self.label}: {action} failed ({reason})")

    def _connect(self) -> tuple[AbstractFileSystem, str]:
        with self._lock:
            if self._fs is None or self._root is None:
                try:
                    fs, root = fsspec.core.url_to_fs(self.url, **self._options)
                except Exception as exc:
                    raise self._fail("connect", exc) from exc
                self._fs, self._root = fs, str(root).rstrip("/") or "/"
            return self._fs, self._root

    def _prepare(self) -> None:
        """Create the store's folders: only ever before a write (reading creates nothing)."""
        fs, root = self._connect()
        with self._lock:
            if self._ready:
                return
            try:
                for folder in FOLDERS:
                    fs.makedirs(posixpath.join(root, folder), exist_ok=True)
            except Exception as exc:
                raise self._fail("prepare", exc) from exc
            self._ready = True

    def _path(self, relative: str, *, write: bool = False) -> tuple[AbstractFileSystem, str]:
        if write:
            self._prepare()
        fs, root = self._connect()
        return fs, posixpath.join(root, relative)

    def open_write(self, relative: str) -> IO[bytes]:
        """A new binary file for writing (replaces an existing one)."""
        fs, path = self._path(relative, write=True)
        try:
            return fs.open(path, "wb")  # type: ignore[no-any-return]
        except Exception as exc:
            raise self._fail(f"write {relative}", exc) from exc

    def open_read(self, relative: str) -> IO[bytes]:
        """An existing file for reading; FragmentMissingError if it is not there."""
        fs, path = self._path(relative)
        try:
            return fs.open(path, "rb")  # type: ignore[no-any-return]
        except FileNotFoundError:
            raise FragmentMissingError(f"store {self.label}: {relative} is missing") from None
        except Exception as exc:
            raise self._fail(f"read {relative}", exc) from exc

    def read_bytes(self, relative: str) -> bytes:
        """A whole (small) file."""
        with self.open_read(relative) as f:
            try:
                return f.read()
            except Exception as exc:
                raise self._fail(f"read {relative}", exc) from exc

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write a whole (small) file."""
        try:
            with self.open_write(relative) as f:
                f.write(data)
        except StorageUnavailableError:
            raise
        except Exception as exc:
            raise self._fail(f"write {relative}", exc) from exc

    def rename(self, source: str, target: str) -> None:
        """Move ``source`` to ``target``, replacing ``target`` if it exists."""
        fs, src = self._path(source, write=True)
        dst = posixpath.join(self._root or "", target)
        try:
            if fs.exists(dst):
                fs.rm(dst)
            fs.mv(src, dst)
        except FileNotFoundError:
            raise FragmentMissingError(f"store {self.label}: {source} is missing") from None
        except Exception as exc:
            raise self._fail(f"commit {target}", exc) from exc

    def delete(self, relative: str) -> bool:
        """Remove a file; False if it was not there (deleting is idempotent)."""
        fs, path = self._path(relative)
        try:
            fs.rm(path)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._fail(f"delete {relative}", exc) from exc
        return True

    def exists(self, relative: str) -> bool:
        """Whether the file is there."""
        fs, path = self._path(relative)
        try:
            return bool(fs.exists(path))
        except Exception as exc:
            raise self._fail(f"look up {relative}", exc) from exc

    def list(self, folder: str) -> list[str]:
        """The file names in one of the store's folders (fresh, never cached)."""
        fs, path = self._path(folder)
        try:
            fs.invalidate_cache(path)
            entries = fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise self._fail(f"list {folder}", exc) from exc
        return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)
