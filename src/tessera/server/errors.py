"""The gateway's own refusals, in the Tessera exception tree (each answers with its
``http_status`` in the one error shape ``{"error": code, "message": text}``)."""

from __future__ import annotations

from tessera.errors import BackendError, NotFoundError, TesseraError, UsageError

__all__ = [
    "InternalServerError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "RequestTooLargeError",
    "RouteNotFoundError",
    "ServiceUnavailableError",
    "TooManyQueriesError",
]


class InvalidRequestError(UsageError):
    """A request whose parameters or body do not match the published API."""

    code = "invalid_request"
    http_status = 422


class RequestTooLargeError(UsageError):
    """A request body over the gateway's limit."""

    code = "request_too_large"
    http_status = 413


class MethodNotAllowedError(UsageError):
    """A route asked with a method it does not answer."""

    code = "method_not_allowed"
    http_status = 405


class RouteNotFoundError(NotFoundError):
    """No such route."""

    code = "not_found"


class ServiceUnavailableError(BackendError):
    """The gateway cannot answer now (shutting down); try again later."""

    code = "unavailable"
    http_status = 503


class TooManyQueriesError(ServiceUnavailableError):
    """Every secure-query slot of the gateway is taken; try again after ``Retry-After``."""

    code = "too_many_queries"
    retry_after_s: float = 1.0


class InternalServerError(TesseraError):
    """An unexpected failure; the details are in the server's log only."""

    code = "internal_error"
    http_status = 500
