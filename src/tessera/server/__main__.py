"""Run the gateway: ``python -m tessera.server --home HOME [--host H] [--port P]
[--tls-cert FILE --tls-key FILE] [--trusted-proxies IPS] [--max-queries N]
[--no-access-log]`` (what ``tessera serve`` starts).  One line per request goes to
standard error (:mod:`tessera.server.access`) unless ``--no-access-log``.

Binds loopback by default; any other address needs TLS (tokens must never cross a
network in the clear).  ``--port 0`` binds a free port.  The first line on stdout is
``gateway listening on URL``; the address is also written to ``HOME/run/gateway.json``.
``X-Forwarded-For`` is believed only from ``--trusted-proxies`` (none by default), so a
client cannot choose the address it is locked out and audited under.  SIGTERM or
Ctrl-C stop it: requests in flight get a few seconds, then it exits whatever still runs.

At most ``--max-queries`` secure queries run at once (else ``[gateway] max_queries`` of
``tessera.toml``, else 4); more are refused at once with 503 and ``Retry-After``.  One
process, one event loop (uvloop and httptools when installed: uvicorn picks them): the
lockout, the query slots and the audit journal live in its memory, so several worker
processes would each keep their own and enforce none of them.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn

from tessera.config import Environment
from tessera.core.audit_sink import AuditEvent
from tessera.errors import ConfigError, TesseraError, UsageError
from tessera.server.access import log_to_stderr
from tessera.server.app import CLIENT, DEFAULT_MAX_QUERIES, create_app
from tessera.workflows import audit

__all__ = ["BACKLOG", "GRACE_S", "SWITCH_INTERVAL_S", "main", "max_queries_of", "serve"]

#: Seconds that requests in flight get to finish once a stop is asked for.
GRACE_S = 5
#: Connections the kernel queues before the gateway accepts them (a burst of clients).
BACKLOG = 2048
#: How long a thread may hold the interpreter while another waits for it (Python's
#: default is 5 ms): the event loop gives it up at every poll, so with query and
#: journal threads busy it would wait up to this long before each round of requests.
SWITCH_INTERVAL_S = 0.0005


def max_queries_of(home: Path, given: int | None) -> int:
    """``given``, else ``[gateway] max_queries`` of ``home``'s tessera.toml, else 4."""
    if given is None:
        section = Environment.load(home).extra.get("gateway", {})
        value = section.get("max_queries", DEFAULT_MAX_QUERIES) if isinstance(section, dict) else 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("[gateway] max_queries in tessera.toml must be a whole number")
        given = value
    if given < 1:
        raise UsageError("max_queries must be at least 1")
    return given


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
    trusted_proxies: str = "",
    max_queries: int | None = None,
) -> None:
    """Serve the gateway of ``home`` until interrupted (SIGTERM, SIGINT)."""
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    if tls_cert is None and not _loopback(host):
        raise UsageError(
            f"serving on {host} needs --tls-cert and --tls-key (loopback only without)"
        )
    if max_failed_logins < 1:
        raise UsageError("--max-failed-logins must be at least 1")
    proxies = _proxies(trusted_proxies)
    limit = max_queries_of(home, max_queries)
    app = create_app(home, max_failed_logins=max_failed_logins, max_queries=limit)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on such sockets; without it an
    # answer's second write waits for the client's delayed ACK (40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    bound = sock.getsockname()[1]
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"{scheme}://{shown}:{bound}/"
    config = uvicorn.Config(
        app,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level="warning",
        access_log=False,
        proxy_headers=bool(proxies),  # X-Forwarded-For only from configured proxies
        forwarded_allow_ips=proxies or [],
        server_header=False,
        timeout_graceful_shutdown=GRACE_S,
    )
    info_path = _announce(home, url, tls=tls_cert is not None, proxies=proxies)
    # uvicorn handles SIGTERM itself, then raises it again with the previous handler
    # once it has stopped: this one, so the clean-up below runs and the exit status is 0.
    signal.signal(signal.SIGTERM, _terminated)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        try:
            if json.loads(info_path.read_text()).get("pid") == os.getpid():
                info_path.unlink()
        except (OSError, ValueError):
            pass
        _leave_stuck_requests()


def _announce(home: Path, url: str, *, tls: bool, proxies: list[str]) -> Path:
    """Write ``run/gateway.json``, record the start, print the URL; the file's path."""
    run_dir = home / "run"
    run_dir.mkdir(exist_ok=True)
    info_path = run_dir / "gateway.json"
    tmp = run_dir / ".gateway.json.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    os.replace(tmp, info_path)
    audit.gateway_log(home).append(
        [
            AuditEvent(
                "gateway.start",
                user=getpass.getuser(),
                client=CLIENT,
                source="gateway",
                entity=url,
                entity_type="service",
                detail={"tls": tls, "trusted_proxies": ",".join(proxies)},
            )
        ]
    )
    print(f"gateway listening on {url}", flush=True)
    return info_path


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _proxies(text: str) -> list[str]:
    """The addresses (or networks) whose X-Forwarded-For is believed."""
    out = [p.strip() for p in text.split(",") if p.strip()]
    for item in out:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise UsageError(f"--trusted-proxies: {item!r} is not an address or network") from None
    return out


def _leave_stuck_requests() -> None:
    """Exit now if a request thread outlived the grace period (Python cannot stop a
    thread, and the interpreter would wait for it at exit: a stop that never ends)."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    deadline = time.monotonic() + 2.0  # idle worker threads stop as soon as the loop is gone
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in others if t.is_alive()]
    if stuck:
        sys.stderr.write(f"tessera serve: {len(stuck)} request(s) still running; exiting\n")
        sys.stderr.flush()
        sys.stdout.flush()
        audit.close_logs()  # os._exit skips exit hooks: sign the last audit batch first
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry for the gateway process."""
    parser = argparse.ArgumentParser(prog="python -m tessera.server")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8470)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--max-failed-logins", type=int, default=20)
    parser.add_argument("--trusted-proxies", default="")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_access_log:
        log_to_stderr()
    try:
        serve(
            args.home.resolve(),
            args.host,
            args.port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            max_failed_logins=args.max_failed_logins,
            trusted_proxies=args.trusted_proxies,
            max_queries=args.max_queries,
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
