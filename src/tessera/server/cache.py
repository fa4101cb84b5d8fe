"""What the gateway reads per request, kept in memory until the files change.

A :class:`Watched` value is read once from its files and kept while their *signature*
(inode, size and modification time of each path, one ``stat`` each: no file is read)
stays the same; the signature is looked at no more than once per ``check_s`` (a
``stat`` costs tens of microseconds here, a fair share of a request).  A file changed
within :data:`RACY_NS` of being read is not trusted (a second change in the same tick
of the filesystem's clock would keep the same signature), so it is read again on the
next request, as Git does with racy entries.

:class:`Tokens` keeps the users whose tokens were accepted, keyed by the token's
SHA-256 (never the token), and forgets them all whenever ``users.json`` changes (one
``stat`` per request), so a removed user's token stops working on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from tessera.workflows.users import User, authenticate

__all__ = ["RACY_NS", "Signature", "Tokens", "Watched", "signature"]

T = TypeVar("T")
#: A file modified less than this long before it was read is read again next time.
RACY_NS = 100_000_000
#: Accepted tokens kept at most (the cache starts afresh beyond: memory stays bounded).
TOKENS_MAX = 10_000

Signature = tuple[tuple[int, int, int], ...]


def signature(paths: Sequence[Path]) -> Signature:
    """(inode, size, mtime in ns) of each path; (0, 0, 0) for one that is missing."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            out.append((0, 0, 0))
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _settled(sig: Signature, now_ns: int) -> bool:
    """Whether every file of ``sig`` was last changed long enough ago to trust it."""
    return all(now_ns - mtime >= RACY_NS for _, _, mtime in sig)


class Watched(Generic[T]):
    """``load()``'s value, read again when one of ``paths`` changes (see the module)."""

    def __init__(
        self, paths: Sequence[Path], load: Callable[[], T], *, check_s: float = 0.5
    ) -> None:
        self.paths, self.load, self.check_s = tuple(paths), load, check_s
        self._sig: Signature | None = None
        self._value: T | None = None
        self._checked = -math.inf
        self._lock = threading.Lock()

    def fresh(self) -> T | None:
        """The kept value if the files are unchanged (one ``stat`` each, at most once
        per ``check_s``), else None."""
        value, sig = self._value, self._sig
        if sig is None:
            return None
        now = time.monotonic()
        if now - self._checked >= self.check_s:
            if signature(self.paths) != sig:
                return None
            self._checked = now
        return value

    def refresh(self) -> T:
        """Read the value again (blocking: call it in a worker thread)."""
        with self._lock:
            sig = signature(self.paths)
            if sig == self._sig and self._value is not None:
                return self._value
            value = self.load()
            settled = _settled(sig, time.time_ns())
            self._value, self._sig = (value, sig) if settled else (None, None)
            self._checked = time.monotonic()
            return value


class Tokens:
    """Accepted tokens' users, while ``users.json`` of ``home`` is unchanged."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "gateway" / "users.json"
        self._sig: Signature | None = None
        self._known: dict[str, tuple[bytes, User]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "replace")).digest()

    def cached(self, token: str) -> User | None:
        """The user of an already accepted ``token`` (one ``stat``), or None: ask
        :meth:`authenticate`."""
        sig = signature([self.path])
        if sig != self._sig:
            return None
        digest = self._digest(token)
        entry = self._known.get(digest.hex())
        if entry is None or not hmac.compare_digest(entry[0], digest):
            return None
        return entry[1]

    def authenticate(self, token: str) -> User | None:
        """Check ``token`` against ``users.json`` (blocking: a worker thread) and keep
        the user when it is accepted."""
        sig = signature([self.path])  # before reading: a change meanwhile invalidates
        user = authenticate(self.home, token)
        with self._lock:
            if sig != self._sig:
                self._known.clear()
                self._sig = sig if _settled(sig, time.time_ns()) else None
            if user is not None and self._sig is not None:
                if len(self._known) >= TOKENS_MAX:
                    self._known.clear()
                digest = self._digest(token)
                self._known[digest.hex()] = (digest, user)
        return user
