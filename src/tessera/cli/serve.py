"""``tessera serve``: the gateway's REST API and web console."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from tessera.cli._common import HomeOption, resolve_home
from tessera.config import Environment

__all__ = ["register", "serve"]


def serve(
    port: Annotated[int, typer.Option("--port", help="Listen port (0: any free one).")] = 8470,
    host: Annotated[
        str, typer.Option("--host", help="Listen address (beyond loopback only with TLS).")
    ] = "127.0.0.1",
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain) for HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its PEM private key.")] = None,
    max_failed_logins: Annotated[
        int,
        typer.Option(
            "--max-failed-logins",
            help="Failed sign-ins from one address (or with one token) within 10 minutes "
            "before it is locked out (for twice as long each time).",
        ),
    ] = 20,
    trusted_proxies: Annotated[
        str,
        typer.Option(
            "--trusted-proxies",
            help="Comma-separated proxy addresses whose X-Forwarded-For is believed "
            "(default: none; the connecting address is the client's).",
        ),
    ] = "",
    max_queries: Annotated[
        int | None,
        typer.Option(
            "--max-queries",
            min=1,
            help="Secure queries run at once; more are refused with 503 and Retry-After "
            "(default: max_queries in the \\[gateway] table of tessera.toml, else 4).",
        ),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="One line per request on standard error: time, address, user, method, "
            "path, status, milliseconds (never a token or a query string).",
        ),
    ] = True,
    home: HomeOption = None,
) -> None:
    """Serve the REST API and the web console for researchers, stewards and security
    officers (users and their tokens: tessera user add).  Runs until interrupted."""
    root = resolve_home(home).resolve()
    Environment.load(root)  # a missing environment is a one-line error here
    args = [sys.executable, "-m", "tessera.server", "--home", str(root)]
    args += ["--host", host, "--port", str(port), "--max-failed-logins", str(max_failed_logins)]
    args += ["--trusted-proxies", trusted_proxies]
    if max_queries is not None:
        args += ["--max-queries", str(max_queries)]
    if not access_log:
        args.append("--no-access-log")
    if tls_cert is not None:
        args += ["--tls-cert", str(tls_cert)]
    if tls_key is not None:
        args += ["--tls-key", str(tls_key)]
    # The gateway process takes this one's place, so signals (Ctrl-C, a service
    # manager's SIGTERM) reach uvicorn directly and it shuts down cleanly.  It records
    # its own start and every request in the audit log.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, args)  # noqa: S606 - our own interpreter, fixed arguments


def register(app: typer.Typer) -> None:
    """Add ``tessera serve`` to the top-level command."""
    app.command("serve")(serve)
