"""Run the vault's WebDAV mount: ``python -m tessera.server.dav --home HOME [--host H]
[--port P] [--read-only] [--tls-cert FILE --tls-key FILE] [--max-failed-logins N]
[--key-fd FD] [--no-access-log]`` (what ``tessera vault mount`` starts).

Binds loopback by default; any other address needs TLS (Basic authentication carries
the token).  ``--port 0`` binds a free port.  The first line on stdout is ``vault
mounted at URL``, then how to connect; the address is also written to
``HOME/run/mount.json`` and the start recorded in the audit log (``vault.mount``).
``--key-fd`` is a pipe carrying the owner's 32-byte key seed, unlocked by the command
line (never in the arguments or the environment).  cheroot (BSD-3-Clause) serves it,
16 threads.  SIGTERM or Ctrl-C stop it (requests in flight get a few seconds), as does
the environment folder disappearing; the exit status is then 0.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from cheroot import wsgi

from tessera.config import Environment
from tessera.core.audit_sink import AuditEvent
from tessera.errors import ConfigError, TesseraError, UsageError
from tessera.keys.signing import SEED_SIZE, SigningKey
from tessera.server.dav.app import create_app
from tessera.server.dav.gate import CLIENT, Grants
from tessera.workflows import audit
from tessera.workflows.vault import open_vault, vault_settings
from tessera.workflows.vault_dav import check_listen

__all__ = ["THREADS", "WATCH_S", "main", "mount"]

#: Requests served at once (desktop clients open several connections).
THREADS = 16
#: How often the mount checks that its environment is still there (seconds).
WATCH_S = 1.0
#: Seconds that requests in flight get once a stop is asked for.
GRACE_S = 5


class _Server(wsgi.Server):
    """cheroot's server, its errors one line each (no traceback unless TESSERA_DEBUG)."""

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        if level < logging.WARNING and not os.environ.get("TESSERA_DEBUG"):
            return
        line = str(msg).strip().splitlines()[0] if str(msg).strip() else "error"
        sys.stderr.write(f"tessera vault mount: {line}\n")
        if traceback and os.environ.get("TESSERA_DEBUG"):
            super().error_log("", level, traceback=True)


def _owner_user(env: Environment) -> str | None:
    """The gateway user whose own key signs the vault's manifests, if it is one's."""
    key = Path(str(vault_settings(env)["signing_key"]))
    return key.stem if key.parts[:2] == ("gateway", "keys") else None


def _read_seed(fd: int) -> SigningKey:
    chunks = []
    while chunk := os.read(fd, 64):
        chunks.append(chunk)
    os.close(fd)
    seed = b"".join(chunks)
    if len(seed) != SEED_SIZE:
        raise ConfigError("the owner's key did not arrive (--key-fd)")
    return SigningKey(seed)


def _shown_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - shown, not bound
        return socket.getfqdn()
    return f"[{host}]" if ":" in host else host


def mount(
    home: Path,
    host: str = "127.0.0.1",
    port: int = 8472,
    *,
    read_only: bool = False,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    max_failed_logins: int = 20,
    signer: SigningKey | None = None,
) -> None:
    """Serve the vault of ``home`` until interrupted or the environment disappears."""
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    check_listen(host, tls=tls_cert is not None)
    if max_failed_logins < 1:
        raise UsageError("--max-failed-logins must be at least 1")
    env = Environment.load(home)
    owner_user = None if read_only else _owner_user(env)
    vault = open_vault(env, write=signer is not None, signer=signer)
    grants = Grants(read_only=read_only, can_write=signer is not None, owner_user=owner_user)
    app, gate = create_app(env, vault, grants, max_failed_logins=max_failed_logins)
    server = _Server((host, port), app, numthreads=THREADS, server_name="tessera", timeout=60)
    server.shutdown_timeout = GRACE_S
    if tls_cert is not None and tls_key is not None:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(str(tls_cert), str(tls_key))
    server.prepare()
    scheme = "https" if tls_cert is not None else "http"
    url = f"{scheme}://{_shown_host(host)}:{server.bind_addr[1]}/"
    info = _announce(env, url, grants, tls=tls_cert is not None)
    stopping = threading.Event()
    stopper = threading.Thread(target=server.stop, name="mount-stop", daemon=True)

    def stop(reason: str) -> None:
        if not stopping.is_set():
            stopping.set()
            if reason:
                sys.stderr.write(f"tessera vault mount: stopping, {reason}\n")
            stopper.start()

    signal.signal(signal.SIGTERM, lambda *_: stop(""))
    signal.signal(signal.SIGINT, lambda *_: stop(""))
    watcher = threading.Thread(
        target=_watch, args=(env.home / "tessera.toml", stopping, stop), daemon=True
    )
    watcher.start()
    try:
        server.serve()
    finally:
        stop("")
        stopper.join(GRACE_S + 2)  # requests in flight finish (or are left behind)
        gate.journal.close()
        _forget(info)
        _leave_stuck_requests()


def _watch(config: Path, stopping: threading.Event, stop: Any) -> None:
    while not stopping.wait(WATCH_S):
        if not config.exists():
            stop("its environment folder is gone")


def _announce(env: Environment, url: str, grants: Grants, *, tls: bool) -> Path:
    """Write ``run/mount.json``, record the start, print the URL and how to connect."""
    run_dir = env.home / "run"
    run_dir.mkdir(exist_ok=True)
    info = run_dir / "mount.json"
    tmp = run_dir / ".mount.json.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    os.replace(tmp, info)
    if grants.read_only:
        mode = "read-only"
    elif grants.owner_user is not None:
        mode = f"read-write for {grants.owner_user}, the vault's owner"
    elif grants.can_write:
        mode = "read-write for stewards"
    else:
        mode = "read-only: started without the owner's key"
    audit.gateway_log(env.home).append(
        [
            AuditEvent(
                "vault.mount",
                user=getpass.getuser(),
                client=CLIENT,
                source="gateway",
                entity=url,
                entity_type="service",
                detail={"tls": tls, "read_only": mode.startswith("read-only")},
            )
        ]
    )
    host_port = url.split("://", 1)[1].rstrip("/")
    dav = "davs" if tls else "dav"
    lines = [
        f"vault mounted at {url} ({mode}; Ctrl-C stops it)",
        "sign in as a steward: gateway user name and API token (tessera user add NAME "
        "--role steward)",
        f"  Linux, GNOME Files:  gio mount {dav}://{host_port}/",
        f"  Linux, davfs2:       sudo mount -t davfs {url} /mnt/vault",
        f"  macOS Finder:        Go > Connect to Server > {url}",
        f"  Windows Explorer:    Map network drive > {url}" + ("" if tls else "  (needs https)"),
    ]
    print("\n".join(lines), flush=True)
    return info


def _forget(info: Path) -> None:
    try:
        if json.loads(info.read_text()).get("pid") == os.getpid():
            info.unlink()
    except (OSError, ValueError):
        pass


def _leave_stuck_requests() -> None:
    """Exit now if a request thread outlived the grace period (the interpreter would
    otherwise wait for it at exit)."""
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in stuck:
        thread.join(0.5)
    if any(t.is_alive() for t in stuck):
        sys.stdout.flush()
        sys.stderr.flush()
        audit.close_logs()  # os._exit skips exit hooks: sign the last audit batch first
        os._exit(0)


def _logging(access_log: bool) -> None:
    quiet = logging.getLogger("wsgidav")  # its errors are answered and audited by ours
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    errors = logging.getLogger("tessera.vault.dav")
    errors.addHandler(handler)
    errors.propagate = False
    if access_log:
        log = logging.getLogger("tessera.vault.access")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Command-line entry of the mount process."""
    parser = argparse.ArgumentParser(prog="python -m tessera.server.dav")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8472)
    parser.add_argument("--read-only", action="store_true")
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--max-failed-logins", type=int, default=20)
    parser.add_argument("--key-fd", type=int, default=None)
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    _logging(not args.no_access_log)
    try:
        signer = _read_seed(args.key_fd) if args.key_fd is not None else None
        mount(
            args.home.resolve(),
            args.host,
            args.port,
            read_only=args.read_only,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            max_failed_logins=args.max_failed_logins,
            signer=signer,
        )
    except UsageError as exc:
        sys.stderr.write(f"tessera vault mount: error: {exc}\n")
        return 2
    except TesseraError as exc:
        sys.stderr.write(f"tessera vault mount: error: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"tessera vault mount: error: {exc.strerror or exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
