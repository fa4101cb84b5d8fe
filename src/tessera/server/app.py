"""The gateway: a REST API and a web console over one environment (``tessera serve``).

Routes (JSON; every one but ``/api/v1/health``, the console's files and the API's own
description needs ``Authorization: Bearer <token>``, see :mod:`tessera.workflows.users`)::

    GET  /api/v1/health                  {"status": "ok", "nodes", "threshold"}
    GET  /api/v1/me                      {"name", "role"}                      any role
    GET  /api/v1/tables                  [table, ...]                          researcher, steward
    POST /api/v1/query                   {"sql", "epsilon"?} -> query document researcher, steward
    GET  /api/v1/budget                  a researcher: her own; others: tables any role
    GET  /api/v1/vault                   [object, ...]                         steward
    GET  /api/v1/audit/verify            the audit verify document            officer
    GET  /api/v1/audit/events?limit=N    the newest events, newest first       officer
    GET  /api/v1/monitor/alerts          the monitor scan document             officer
    GET  /api/v1/budget/researchers      every researcher's own balances       steward, officer
    GET  /api/v1/vault/verify            vault verify, a cell per object/store steward, officer
    POST /api/v1/vault/upload?name=N     the body, streamed into the vault     steward (owner)
    ...  /api/v1/requests[/{id}[/...]]   file, list, decide, run requests      see request_routes
    GET  /openapi.json, /docs            the API (OpenAPI 3.1) and a page that shows it
    GET  /                               the web console (console.html, console*.js, .css)

Every request is answered by :mod:`tessera.server.routes`; every error, whatever its
status, is ``{"error": code, "message": one line}`` with the security headers
(:mod:`tessera.server.guard`).  Every authenticated request is one event in the
gateway's audit log (user, role, client address; a query as its SHA-256, never its
text); a missing or wrong token is a ``login`` failure, and failures lock the address
and the token out for a while (:mod:`tessera.server.throttle`).  The console is static:
no inline script (its Content-Security-Policy forbids it), the token lives in the tab's
sessionStorage and travels only in the Authorization header.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

from tessera.config import Environment
from tessera.errors import TesseraError
from tessera.server.access import AccessLog
from tessera.server.auth import CLIENT, Gate
from tessera.server.console_routes import UPLOAD_MAX, UPLOAD_PATH, BodyLimits, console_router
from tessera.server.guard import SECURITY_HEADERS, install_handlers
from tessera.server.models import SQL_MAX
from tessera.server.queries import DEFAULT_MAX_QUERIES, QueryPool
from tessera.server.request_routes import request_router
from tessera.server.routes import CALLS, api_router
from tessera.server.throttle import Digest, Throttle
from tessera.workflows.audit import close_logs

__all__ = ["CLIENT", "DEFAULT_MAX_QUERIES", "MAX_BODY", "Throttle", "create_app"]

#: The largest request body the gateway reads: a query of SQL_MAX characters written
#: as JSON escapes (at most 12 bytes each: a surrogate pair), and room for the rest.
MAX_BODY = 12 * SQL_MAX + 8 * 1024
_STATIC = {
    "/": ("console.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console-dom.js": ("console-dom.js", "text/javascript; charset=utf-8"),
    "/console-charts.js": ("console-charts.js", "text/javascript; charset=utf-8"),
    "/console-views.js": ("console-views.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
    "/docs": ("docs.html", "text/html; charset=utf-8"),
    "/docs.js": ("docs.js", "text/javascript; charset=utf-8"),
}
_DESCRIPTION = (
    "Secure SQL and differential privacy over the custodians' shares, the vault listing, "
    "the audit trail and the monitor's alerts.  Every error is "
    '`{"error": code, "message": text}`; 429 and 503 carry `Retry-After`.'
)


def create_app(
    home: Path,
    *,
    max_failed_logins: int = 20,
    window_s: float = 600.0,
    clock: Callable[[], float] = time.monotonic,
    max_queries: int = DEFAULT_MAX_QUERIES,
) -> FastAPI:
    """The gateway over the environment in ``home``; ``max_failed_logins`` failed
    sign-ins from one address (or with one token) within ``window_s`` seconds lock it
    out, for longer each time; at most ``max_queries`` secure queries run at once."""
    env = Environment.load(home)
    gate = Gate(
        home=home,
        env=env,
        throttle=Throttle(max_failed_logins, window_s, clock),
        refused=Digest(window_s, clock),
        failures=Digest(window_s, clock, free=10 * max_failed_logins),
        queries=QueryPool(max_queries),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:  # the events still queued are written before the process ends
            gate.queries.close()
            gate.journal.close()
            close_logs()  # sign the last batch (uvicorn's SIGTERM skips exit hooks)

    app = FastAPI(
        lifespan=lifespan,
        title="Tessera gateway",
        version="1",
        description=_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.gate = gate

    def on_invalid(request: Request, error: TesseraError) -> None:
        gate.invalid(request, error, CALLS)

    install_handlers(app, on_invalid)
    app.add_middleware(BodyLimits, max_body=MAX_BODY, larger={UPLOAD_PATH: UPLOAD_MAX})
    app.add_middleware(AccessLog)  # outermost: one line per request, refused ones too
    app.include_router(api_router(gate))
    app.include_router(console_router(gate))
    app.include_router(request_router(gate))
    for route, (name, media) in _STATIC.items():
        app.get(route, include_in_schema=False)(_static_file(name, media))

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204, headers=dict(SECURITY_HEADERS))

    return app


def _static_file(name: str, media: str) -> Callable[[], Awaitable[Response]]:
    data = (resources.files("tessera.server") / "static" / name).read_bytes()

    async def serve() -> Response:
        return Response(data, media_type=media, headers=dict(SECURITY_HEADERS))

    return serve
