"""Where de-identified objects and the pseudonym-to-identity map go: injected seams.

:class:`ObjectSink` and :class:`IdentityStore` are Protocols so that ``tessera.dicom``
never imports the vault: ``tessera.workflows`` passes in a vault-backed implementation
(secret-shared, quorum to read); the folder implementations here serve the embedded
default and tests.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from tessera.errors import InputError, NotFoundError, UsageError

__all__ = ["FolderIdentityStore", "FolderSink", "IdentityStore", "ObjectSink"]

_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PSEUDONYM = re.compile(r"TS[0-9A-F]{20}")


class ObjectSink(Protocol):
    """Stores named objects (``name`` is a relative, slash-separated path)."""

    def put(self, name: str, data: bytes) -> str:
        """Store ``data`` under ``name``; return where it went (for the report)."""
        ...


class IdentityStore(Protocol):
    """Keeps the pseudonym -> identity table needed to re-identify under policy."""

    def put(self, pseudonym: str, identity: Mapping[str, str]) -> None:
        """Record (or confirm) the identity behind ``pseudonym``."""
        ...

    def get(self, pseudonym: str) -> dict[str, str]:
        """The identity behind ``pseudonym``; NotFoundError if unknown."""
        ...


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FolderSink:
    """Writes objects under a local folder (temp file, then atomic rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, name: str, data: bytes) -> str:
        """Write ``data`` to ``root/name``; return the path."""
        parts = name.split("/")
        if not parts or not all(_NAME_PART.fullmatch(p) for p in parts):
            raise UsageError(f"unsafe object name {name!r}")
        path = self.root.joinpath(*parts)
        _atomic_write(path, data)
        return str(path)


class FolderIdentityStore:
    """Pseudonym -> identity as one JSON file per patient (mode 0600) in a folder.

    Plaintext on the local disk: for the embedded default and tests only; deployments
    wire the vault-backed store in through ``tessera.workflows``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, pseudonym: str) -> Path:
        if not _PSEUDONYM.fullmatch(pseudonym):
            raise UsageError("not a Tessera patient pseudonym")
        return self.root / f"{pseudonym}.json"

    def put(self, pseudonym: str, identity: Mapping[str, str]) -> None:
        """Record the identity (the first one recorded for a pseudonym is kept)."""
        path = self._path(pseudonym)
        if path.exists():
            return
        body = json.dumps(dict(identity), sort_keys=True).encode()
        _atomic_write(path, body, 0o600)

    def get(self, pseudonym: str) -> dict[str, str]:
        """The identity behind ``pseudonym``."""
        path = self._path(pseudonym)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError("no identity recorded for this pseudonym") from None
        except ValueError:
            raise InputError("the identity record is damaged") from None
        return {str(k): str(v) for k, v in data.items()}
