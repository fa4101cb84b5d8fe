"""What every WebDAV request is checked for before wsgidav sees it, and how errors are
answered.

:func:`check_request` refuses methods the mount does not serve (501, or 405 for HTTP's
own methods such as POST and TRACE), paths no vault name can be (400: traversal, empty
segments, control characters, bytes that are not UTF-8; 414: names too long), the same
for a COPY or MOVE's ``Destination``, and request bodies over :data:`BODY_MAX` for
anything but PUT (wsgidav reads those into memory).

:class:`Answer` takes wsgidav's ErrorPrinter's place: the response starts with the first
byte of the body, so an error raised before it (a lost file, stores down) is answered
with its status and one line of text (or the XML condition RFC 4918 defines), never
after a success status; an error after the first byte aborts the connection (the client
sees a short body, never a complete-looking file).  Unexpected exceptions are logged as
one line (their class), never with a traceback or their text in the answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from wsgidav import util
from wsgidav.dav_error import DAVError, get_http_status_string
from wsgidav.mw.base_mw import BaseMiddleware

from tessera.errors import TesseraError, UsageError
from tessera.server.dav.provider import dav_error
from tessera.workflows.vault_dav import InvalidPathError, split_path

__all__ = [
    "BODY_MAX",
    "METHODS",
    "Answer",
    "MethodNotSupportedError",
    "check_request",
    "plain_response",
    "request_path",
]

#: The methods the mount serves.
METHODS = frozenset(
    {
        "OPTIONS",
        "GET",
        "HEAD",
        "PROPFIND",
        "PROPPATCH",
        "PUT",
        "DELETE",
        "MKCOL",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
    }
)
#: HTTP methods every server knows: refused with 405 (any other: 501).
_HTTP_OWN = frozenset({"POST", "PATCH", "TRACE", "CONNECT"})
#: The largest request body of a method other than PUT (XML: PROPFIND, LOCK ...).
BODY_MAX = 1 << 20
_LOG = logging.getLogger("tessera.vault.dav")
_REASONS = {429: "429 Too Many Requests"}  # not in wsgidav's table


class MethodNotSupportedError(UsageError):
    """A method the mount does not serve."""

    code = "method_not_supported"
    http_status = 501


class _NotAllowedError(MethodNotSupportedError):
    http_status = 405


class _BodyTooLargeError(UsageError):
    code = "body_too_large"
    http_status = 413


def _decoded(raw: str, what: str) -> str:
    """A WSGI string (bytes as latin-1) read as UTF-8."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise InvalidPathError(f"the {what} is not UTF-8") from None


def request_path(environ: dict[str, Any]) -> str:
    """The request's path as text (the server percent-decoded it)."""
    return _decoded(str(environ.get("PATH_INFO", "") or "/"), "path")


def destination_path(environ: dict[str, Any]) -> str | None:
    """The path of a COPY or MOVE's Destination header (None when absent)."""
    header = environ.get("HTTP_DESTINATION")
    if header is None:
        return None
    raw = urlsplit(_decoded(str(header), "destination")).path
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPathError("the destination is not UTF-8") from None


def check_request(environ: dict[str, Any]) -> None:
    """Refuse what the mount never serves (see the module docstring)."""
    method = str(environ.get("REQUEST_METHOD", ""))
    if method not in METHODS:
        allowed = ", ".join(sorted(METHODS))
        if method in _HTTP_OWN:
            raise _NotAllowedError(f"{method} is not allowed here (allowed: {allowed})")
        raise MethodNotSupportedError("the method is not supported (allowed: " + allowed + ")")
    path = request_path(environ)
    if not (method == "OPTIONS" and path == "*"):
        split_path(path)
    if method in ("COPY", "MOVE"):
        dest = destination_path(environ)
        if dest is not None:
            split_path(dest or "/")
    if method != "PUT" and util.get_content_length(environ) > BODY_MAX:
        raise _BodyTooLargeError(f"a {method} body is at most {BODY_MAX} bytes")


def plain_response(
    start_response: Any,
    status: int,
    text: str,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    """A short text answer: ``status`` and one line."""
    body = (text.strip().replace("\n", " ") + "\n").encode()
    start_response(
        _REASONS.get(status) or get_http_status_string(status),
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Date", util.get_rfc1123_time()),
            *headers,
        ],
    )
    return [body]


def _error_page(error: DAVError) -> tuple[str, bytes]:
    if error.err_condition is not None:  # RFC 4918's XML condition (lock conflicts ...)
        return error.get_response_page()  # type: ignore[no-any-return]
    line = str(error.context_info or get_http_status_string(error)).splitlines()[0]
    return "text/plain; charset=utf-8", (line + "\n").encode()


class Answer(BaseMiddleware):  # type: ignore[misc]
    """Errors as answers (see the module docstring): replaces wsgidav's ErrorPrinter."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        sub = util.SubAppStartResponse()
        started = False
        try:
            inner = self.next_app(environ, sub)
            try:
                for chunk in inner:
                    if not started:
                        start_response(sub.status, sub.response_headers, sub.exc_info)
                        started = True
                    yield chunk
            finally:
                close = getattr(inner, "close", None)
                if close is not None:
                    close()
            if not started:
                start_response(sub.status, sub.response_headers, sub.exc_info)
            return
        except GeneratorExit:
            raise
        except DAVError as exc:
            error = exc
        except TesseraError as exc:
            error = dav_error(environ, exc)
        except Exception as exc:
            _LOG.error(
                "webdav: %s %s failed (%s)",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                exc.__class__.__name__,
                exc_info=bool(os.environ.get("TESSERA_DEBUG")),
            )
            error = DAVError(500, context_info="internal error")
        if started:  # the body has begun: only aborting the connection tells the client
            raise error
        status = get_http_status_string(error)
        if error.value in (204, 304):
            start_response(status, [("Content-Length", "0"), ("Date", util.get_rfc1123_time())])
            yield b""
            return
        content_type, body = _error_page(error)
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Date", util.get_rfc1123_time()),
            *(error.add_headers or []),
        ]
        start_response(status, headers)
        if error.add_body:
            yield body
        else:
            yield b""
