"""Lockout after failed sign-ins, per client address and per account, and a digest that
turns a flood of refused attempts into one audit event per window.

The gateway's accounts are bearer tokens, so an *account* here is the token presented
(kept only as a SHA-256 prefix): a leaked, revoked or guessed token is locked out
wherever it comes from, and an address is locked out whatever tokens it tries.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Digest", "Throttle", "account_key", "address_key"]


def address_key(address: str) -> str:
    """The throttle key of a client address."""
    return f"addr:{address}"


def account_key(token: str) -> str:
    """The throttle key of a presented token (a hash prefix: never the token)."""
    return "tok:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:32]


@dataclass
class _State:
    failures: deque[float] = field(default_factory=deque)
    strikes: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class Throttle:
    """``limit`` failures of one key within ``window_s`` lock it out: for ``window_s``
    the first time, twice as long each time after (exponential back-off, at most
    ``max_lockout_s``); a key quiet for ``max_lockout_s`` starts afresh.  While locked
    out every attempt is refused, right token or not, so guessing stops paying."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        clock: Callable[[], float],
        *,
        max_lockout_s: float = 86_400.0,
        max_keys: int = 100_000,
    ) -> None:
        if limit < 1 or window_s <= 0 or max_lockout_s < window_s or max_keys < 1:
            raise ValueError("limit >= 1, window_s > 0, max_lockout_s >= window_s, max_keys >= 1")
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.max_lockout_s, self.max_keys = max_lockout_s, max_keys
        self._keys: dict[str, _State] = {}
        self._lock = threading.Lock()

    def wait_s(self, *keys: str) -> float:
        """Seconds until every one of ``keys`` may try again (0: now)."""
        with self._lock:
            now = self.clock()
            waits = [self._keys[k].locked_until - now for k in keys if k in self._keys]
            return max([0.0, *waits])

    def failed(self, *keys: str) -> None:
        """Count one failed sign-in against each of ``keys``."""
        with self._lock:
            now = self.clock()
            for key in keys:
                self._fail(key, now)
            if len(self._keys) > self.max_keys:
                self._prune(now)

    def _fail(self, key: str, now: float) -> None:
        state = self._keys.get(key)
        if state is None or now - state.last >= self.max_lockout_s:
            state = self._keys[key] = _State()
        state.last = now
        while state.failures and state.failures[0] <= now - self.window_s:
            state.failures.popleft()
        state.failures.append(now)
        if len(state.failures) >= self.limit:
            state.strikes += 1
            lockout = self.window_s * 2.0 ** min(state.strikes - 1, 32)
            state.locked_until = max(state.locked_until, now + min(lockout, self.max_lockout_s))
            state.failures.clear()

    def _prune(self, now: float) -> None:
        """Forget idle keys (memory stays bounded however many tokens are tried)."""
        for key in [k for k, s in self._keys.items() if s.locked_until <= now]:
            if now - self._keys[key].last >= self.window_s:
                del self._keys[key]
        if len(self._keys) > self.max_keys:
            oldest = sorted(self._keys, key=lambda k: self._keys[k].last)
            for key in oldest[: len(self._keys) - self.max_keys * 9 // 10]:
                del self._keys[key]


class Digest:
    """At most ``free`` events per key and window; the attempts past that are counted
    and reported with the key's first event of a later window (``note`` returns how
    many attempts that event stands for, or None to record nothing now)."""

    def __init__(self, window_s: float, clock: Callable[[], float], free: int = 1) -> None:
        self.window_s, self.clock, self.free = window_s, clock, free
        self._keys: dict[str, tuple[float, int, int]] = {}  # start, recorded, held back
        self._lock = threading.Lock()

    def note(self, key: str) -> int | None:
        """One more attempt under ``key``: the count to record now, or None."""
        with self._lock:
            now = self.clock()
            start, recorded, held = self._keys.get(key, (now - self.window_s, 0, 0))
            if now - start >= self.window_s:
                start, recorded = now, 0
            if recorded < self.free:
                self._keys[key] = (start, recorded + 1, 0)
                if len(self._keys) > 10_000:
                    self._forget(now)
                return held + 1
            self._keys[key] = (start, recorded, held + 1)
            return None

    def _forget(self, now: float) -> None:
        for key in [k for k, (s, _, h) in self._keys.items() if now - s >= self.window_s and not h]:
            del self._keys[key]
