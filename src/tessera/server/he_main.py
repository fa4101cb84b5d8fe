"""Run the untrusted HE server: ``python -m tessera.server.he_main [--host H] [--port P]
[--models DIR] [--max-upload-mb N] [--max-store-mb N] [--max-jobs N]
[--tls-cert FILE --tls-key FILE]`` (what ``tessera he serve`` starts).

The process holds no environment, no person's key and no secret key: it reads only the
model files in ``--models`` (``*.json``).  Loopback by default; any other address needs
TLS.  ``--port 0`` binds a free port.  The first line on stdout is ``he server listening
on URL``.  SIGTERM or Ctrl-C stop it.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from tessera.errors import TesseraError, UsageError
from tessera.server.he_app import Limits, create_he_app, load_models

__all__ = ["main", "serve"]

GRACE_S = 5


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


def serve(
    host: str,
    port: int,
    *,
    models: Path | None,
    limits: Limits,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Serve until interrupted."""
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    if tls_cert is None and not _loopback(host):
        raise UsageError(
            f"serving on {host} needs --tls-cert and --tls-key (loopback only without)"
        )
    if models is not None and not models.is_dir():
        raise UsageError(f"--models {models} is not a folder")
    held = load_models(sorted(models.glob("*.json"))) if models is not None else {}
    app = create_he_app(held, limits)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    config = uvicorn.Config(
        app,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACE_S,
    )
    print(f"he server listening on {scheme}://{shown}:{bound}/", flush=True)
    print(f"models: {', '.join(sorted(held)) or 'none'}", flush=True)
    signal.signal(signal.SIGTERM, _terminated)
    uvicorn.Server(config).run(sockets=[sock])


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _mb(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number << 20


def main(argv: list[str] | None = None) -> int:
    """Command-line entry for the HE server process."""
    parser = argparse.ArgumentParser(prog="python -m tessera.server.he_main")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8473)
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--max-upload-mb", type=_mb, default=Limits.max_upload)
    parser.add_argument("--max-store-mb", type=_mb, default=Limits.max_store)
    parser.add_argument("--max-jobs", type=int, default=Limits.max_jobs)
    parser.add_argument("--tls-cert", type=Path, default=None)
    parser.add_argument("--tls-key", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.max_jobs < 1:
            raise UsageError("--max-jobs must be at least 1")
        limits = Limits(args.max_upload_mb, args.max_store_mb, args.max_jobs)
        serve(
            args.host,
            args.port,
            models=args.models,
            limits=limits,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except TesseraError as exc:
        sys.stderr.write(f"tessera he serve: error: {' '.join(str(exc).split())}\n")
        return exc.exit_code
    except OSError as exc:
        sys.stderr.write(f"tessera he serve: error: {exc.strerror or exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
