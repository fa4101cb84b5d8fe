"""One line per request on the gateway's standard error (``tessera serve``).

::

    2026-12-05T01:20:03Z 127.0.0.1 rita POST /api/v1/query 200 412.7 ms

The time (UTC), the client's address, the signed-in user (``-`` before or without a
sign-in), the method, the path without its query string (tokens travel only in the
``Authorization`` header, never in a URL, and nothing from the query or the body is
written), the status and the time to the response's first byte.  A plain ASGI wrapper:
it adds no task and no copy of the body.  ``tessera serve --no-access-log`` turns it
off; the audit log records the same requests either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["LOGGER", "AccessLog", "log_to_stderr"]

LOGGER = "tessera.gateway.access"

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _printable(text: str, limit: int = 200) -> str:
    """``text`` with control characters replaced (one line per request, always)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


class AccessLog:
    """ASGI middleware writing one line per HTTP request to :data:`LOGGER`."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.log = logging.getLogger(LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        elapsed = 0.0

        async def noting(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = int(message["status"])
                elapsed = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            user = getattr(scope.get("state", {}).get("user"), "name", None) or "-"
            client = scope.get("client") or ("-", 0)
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.log.info(
                "%s %s %s %s %s %d %.1f ms",
                when,
                _printable(str(client[0])),
                _printable(str(user), 64),
                _printable(str(scope.get("method", "-")), 16),
                _printable(str(scope.get("path", "-"))),
                status,
                1000 * (elapsed or time.perf_counter() - started),
            )


def log_to_stderr() -> None:
    """Send the access lines to standard error, one per request, unbuffered."""
    logger = logging.getLogger(LOGGER)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
