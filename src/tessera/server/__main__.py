"""Run the gateway: ``python -m tessera.server --home HOME [--host H] [--port P]
[--tls-cert FILE --tls-key FILE]`` (what ``tessera serve`` starts).

Binds loopback by default; any other address needs TLS (tokens must never cross a
network in the clear).  ``--port 0`` binds a free port.  The first line on stdout is
``gateway listening on URL``; the address is also written to ``HOME/run/gateway.json``.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import os
import socket
import sys
from pathlib import Path

import uvicorn

from tessera.core.audit_sink import AuditEvent
from tessera.errors import TesseraError, UsageError
from tessera.server.app import CLIENT, create_app
from tessera.workflows import audit

__all__ = ["main", "serve"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    home: Path,
    host: str = "127.0.0.1",
    port: int = 8470,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    max_failed_logins: int = 20,
) -> None:
    """Serve the gateway of ``home`` until interrupted."""
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    if tls_cert is None and not _loopback(host):
        raise UsageError(
            f"serving on {host} needs --tls-cert and --tls-key (loopback only without)"
        )
    if max_failed_logins < 1:
        raise UsageError("--max-failed-logins must be at least 1")
    app = create_app(home, max_failed_logins=max_failed_logins)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"{scheme}://{shown}:{bound}/"
    run_dir = home / "run"
    run_dir.mkdir(exist_ok=True)
    info_path = run_dir / "gateway.json"
    tmp = run_dir / ".gateway.json.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    os.replace(tmp, info_path)
    config = uvicorn.Config(
        app,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level="warning",
        access_log=False,
    )
    audit.gateway_log(home).append(
        [
            AuditEvent(
                "gateway.start",
                user=getpass.getuser(),
                client=CLIENT,
                source="gateway",
                entity=url,
                entity_type="service",
                detail={"tls": tls_cert is not None},
            )
        ]
    )
    print(f"gateway listening on {url}", flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        try:
            if json.loads(info_path.read_text()).get("pid") == os.getpid():
                info_path.unlink()
        except (OSError, ValueError):
            pass


def main(argv: list[str] | None = None) -> int:
    """Command-line entry for the gateway process."""
    parser = argparse.ArgumentParser(prog="python -m tessera.server")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8470)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--max-failed-logins", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        serve(
            args.home.resolve(),
            args.host,
            args.port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            max_failed_logins=args.max_failed_logins,
        )
    except UsageError as exc:
        sys.stderr.write(f"tessera serve: error: {exc}\n")
        return 2
    except TesseraError as exc:
        sys.stderr.write(f"tessera serve: error: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"tessera serve: error: {exc.strerror or exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
