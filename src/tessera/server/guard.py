"""Every answer in one shape, with the security headers, and bodies of bounded size.

:class:`Guard` wraps the whole application (inside Starlette's last-resort handler, so
that handler never runs): it adds the security headers to every response, refuses a
body over the limit before reading it (413), and turns an unexpected exception into a
500 in the one error shape, the traceback going to the server's log only, without
closing the connection.  :func:`install_handlers` maps the framework's 404/405/422 and
every :class:`TesseraError` to ``{"error": code, "message": text}``; 429 and 503 carry
``Retry-After``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import Response

from tessera.errors import TesseraError, TooManyAttemptsError
from tessera.server.errors import (
    InternalServerError,
    InvalidRequestError,
    MethodNotAllowedError,
    RequestTooLargeError,
    RouteNotFoundError,
)

__all__ = ["SECURITY_HEADERS", "Guard", "error_response", "install_handlers"]

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MESSAGE_MAX = 300
_LOG = logging.getLogger("tessera.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_MAX else line[: MESSAGE_MAX - 3] + "..."


def error_response(exc: TesseraError, extra: Mapping[str, str] | None = None) -> Response:
    """``exc`` as the one error shape, with its status and the security headers."""
    status = exc.http_status
    headers = {**SECURITY_HEADERS, **(extra or {})}
    if status in (429, 503):
        wait = getattr(exc, "retry_after_s", None)
        headers["Retry-After"] = str(max(1, math.ceil(wait or 1)))
    body = json.dumps({"error": exc.code, "message": _one_line(str(exc))}, allow_nan=False)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """Where and what, never the input itself (it may be NaN, huge or secret)."""
    parts = []
    for err in exc.errors()[:3]:
        if err.get("type") == "json_invalid":
            parts.append("body: not valid JSON")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_handlers(
    app: FastAPI, on_invalid: Callable[[Request, TesseraError], None] | None = None
) -> None:
    """Map every error the application raises to the one shape.  ``on_invalid`` is
    told of each request refused as invalid (422), to audit it."""

    @app.exception_handler(TesseraError)
    async def _tessera(request: Request, exc: TesseraError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        error = InvalidRequestError(_validation_message(exc))
        if on_invalid is not None:  # it writes the audit log: not on the event loop
            await run_in_threadpool(on_invalid, request, error)
        return error_response(error)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        allow = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
        return error_response(_from_http(exc), allow)


def _from_http(exc: HTTPException) -> TesseraError:
    if isinstance(exc.__cause__, TesseraError):  # a body read over the limit
        return exc.__cause__
    if exc.status_code == 404:
        return RouteNotFoundError("no such route")
    if exc.status_code == 405:
        return MethodNotAllowedError("this route does not answer that method")
    if exc.status_code == 413:
        return RequestTooLargeError("the request body is too large")
    if exc.status_code == 429:
        return TooManyAttemptsError("too many requests")
    if 400 <= exc.status_code < 500:
        return InvalidRequestError(f"the request cannot be read ({exc.status_code})")
    return InternalServerError("internal error")


class Guard:
    """ASGI middleware: security headers, body size limit, no bare 500 (see module)."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_body: int = 64 * 1024) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    if key.lower() not in headers:
                        headers[key] = value
            await send(message)

        if self._declared_length(scope) > self.max_body:
            await self._send(scope, send, RequestTooLargeError(self._too_large()))
            return
        try:
            await self.app(scope, self._limited(receive), send_with_headers)
        except Exception as exc:
            if started:
                raise  # half an answer is out: nothing better than closing the connection
            if isinstance(exc, TesseraError):
                error: TesseraError = exc
            else:
                _LOG.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
                error = InternalServerError("internal error (see the gateway's log)")
            await self._send(scope, send, error)

    def _too_large(self) -> str:
        return f"the request body is over {self.max_body} bytes"

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise RequestTooLargeError(self._too_large())
            return message

        return limited

    @staticmethod
    async def _send(scope: Scope, send: Send, error: TesseraError) -> None:
        await error_response(error)(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
