"""Helpers for the vault's unit tests: local and memory stores, a failing filesystem."""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

from tessera import keys
from tessera.vault import Store, Vault

OWNER = keys.generate()


class _Failing(io.RawIOBase):
    """A file that raises OSError once more than ``budget`` bytes went through it."""

    def __init__(self, inner: Any, fs: FlakyFS) -> None:
        self._inner = inner
        self._fs = fs

    def _spend(self, amount: int) -> None:
        if self._fs.hang_after is not None:
            self._fs.hang_after -= amount
            if self._fs.hang_after < 0:
                self._fs.released.wait()  # a connection that stops sending data
        if self._fs.budget is not None:
            self._fs.budget -= amount
            if self._fs.budget < 0:
                raise ConnectionResetError(104, "Connection reset by peer")

    def write(self, data: Any) -> int:
        self._spend(len(data))
        return int(self._inner.write(data))

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._spend(len(data))
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._inner.seek(offset, whence))

    def tell(self) -> int:
        return int(self._inner.tell())

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self._inner.close()
        super().close()


class FlakyFS(LocalFileSystem):
    """A local filesystem that breaks (like a dropped connection) after ``budget`` bytes,
    or stops answering (like a half-dead one) after ``hang_after`` bytes until
    ``released`` is set."""

    cachable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget: int | None = None
        self.hang_after: int | None = None
        self.released = threading.Event()
        self.open_delay = 0.0  # seconds before a file opens (a slow store)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if self.open_delay:
            time.sleep(self.open_delay)
        return _Failing(super()._open(path, mode, **kwargs), self)


def folder_stores(root: Path, n: int) -> list[Store]:
    """n stores on local folders under ``root``."""
    return [Store(i, (root / f"store-{i}").as_uri()) for i in range(1, n + 1)]


@pytest.fixture
def make_vault(tmp_path: Path) -> Callable[..., Vault]:
    """Build a vault over local folders (optionally some stores replaced)."""

    def build(
        n: int = 5,
        k: int = 3,
        *,
        stores: list[Store] | None = None,
        state: Path | None = None,
        **kwargs: Any,
    ) -> Vault:
        return Vault(
            stores or folder_stores(tmp_path, n),
            k=k,
            verifier=OWNER.verify_key,
            signer=OWNER,
            state_dir=state or tmp_path / "state",
            **kwargs,
        )

    return build


@pytest.fixture
def memory_url() -> str:
    """A fresh memory:// root."""
    return f"memory://vault-{uuid.uuid4().hex}"


def put_bytes(vault: Vault, name: str, data: bytes, **kwargs: Any) -> Any:
    """Put ``data`` under ``name``."""
    return vault.put(io.BytesIO(data), len(data), name, **kwargs)


def data_file(root: Path, store: int) -> Path:
    """The only data fragment on a local store."""
    (found,) = sorted((root / f"store-{store}" / "data").iterdir())
    return found


def random_bytes(size: int) -> bytes:
    """Test data."""
    return os.urandom(size)
