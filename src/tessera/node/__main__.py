"""Run one custodian node: ``python -m tessera.node --home HOME --id I [--port P]``.

Serves :func:`tessera.node.app.create_app` with uvicorn over mutual TLS (the node's
certificate; clients must present a certificate from the environment's CA).  With
``--port 0`` (or when the configured port is taken and ``--any-port`` is given) it binds
a free port.  The bound address is written to ``HOME/run/node-I.json``.

A federated custodian runs from its ``node.toml`` instead
(``python -m tessera.node --config FILE``, what ``tessera node start --config`` runs):
it serves the consortium manifest it installed (``tessera node join``), restarts its
listener when a newer manifest pins other certificates, stops when a manifest no longer
lists it, and logs JSON lines on stdout when the file says ``log = "json"``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from tessera.config import Environment, NodeSettings
from tessera.errors import ConfigError, TesseraError
from tessera.keys.consortium import cert_fingerprint
from tessera.node.app import create_app
from tessera.node.federated import FederationHooks
from tessera.node.service import NodeService
from tessera.workflows.federation import installed_manifest, materialize

__all__ = ["WATCH_S", "JsonLines", "main", "serve", "serve_federated"]

WATCH_S = 1.0  # how often a node checks that its environment is still there
_log = logging.getLogger("tessera.node")


def _bind(host: str, port: int, any_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        if not any_port:
            sock.close()
            raise
        sock.bind((host, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _watch(
    server: uvicorn.Server, service: NodeService, config_file: Path, idle_exit: float
) -> None:
    """Stop the node when its environment disappears, or after ``idle_exit`` seconds
    without a request (0: never)."""
    while not server.should_exit:
        time.sleep(WATCH_S)
        reason = None
        if not config_file.exists():
            reason = "its environment folder is gone"
        elif idle_exit and service.idle_s() > idle_exit:
            reason = f"idle for {int(idle_exit)} s"
        if reason:
            _log.warning("tessera node %d: stopping, %s", service.node_id, reason)
            server.should_exit = True


def serve(
    home: Path,
    node_id: int,
    port: int | None = None,
    *,
    any_port: bool = False,
    enforce: bool = True,
    idle_exit: float = 0.0,
    settings: NodeSettings | None = None,
) -> str:
    """Serve node ``node_id`` until interrupted, its environment is removed, or it was
    idle for ``idle_exit`` seconds (0: never).  A federated node (``settings``) binds its
    configured listen address and also stops when it installs a new manifest: the
    outcome is then "reload" (serve again) or "removed"; otherwise "stopped"."""
    env = Environment.load(home)
    max_jobs = settings.max_jobs if settings is not None else None
    service = NodeService(env, node_id, enforce=enforce, max_jobs=max_jobs)
    cfg = next(n for n in env.nodes if n.id == node_id)
    outcome = ["stopped"]
    if settings is not None:
        host, port = settings.listen
    else:
        host = cfg.host
        port = cfg.port if port is None else port
    sock = _bind(host, port, any_port)
    bound = sock.getsockname()[1]
    run_dir = env.home / "run"
    run_dir.mkdir(exist_ok=True)
    info = {"node": node_id, "pid": os.getpid(), "host": cfg.host, "port": bound}
    tmp = run_dir / f".node-{node_id}.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, run_dir / f"node-{node_id}.json")
    pki = env.home / "pki"

    def on_change(member: bool) -> None:
        outcome[0] = "reload" if member else "removed"
        server.should_exit = True

    hooks = FederationHooks(settings, on_change)
    config = uvicorn.Config(
        create_app(service, hooks),
        ssl_certfile=str(pki / f"node-{node_id}.crt"),
        ssl_keyfile=str(pki / f"node-{node_id}.key"),
        ssl_ca_certs=str(pki / "ca.crt"),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        log_level="warning",
        log_config=None if settings is not None and settings.log == "json" else LOGGING_CONFIG,
        access_log=False,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    watcher = threading.Thread(
        target=_watch, args=(server, service, env.home / "tessera.toml", idle_exit), daemon=True
    )
    watcher.start()
    try:
        server.run(sockets=[sock])
    finally:
        service.close()
        try:
            current = json.loads((run_dir / f"node-{node_id}.json").read_text())
            if current.get("pid") == os.getpid():
                (run_dir / f"node-{node_id}.json").unlink()
        except (OSError, ValueError):
            pass
    return outcome[0]


def serve_federated(settings: NodeSettings, *, enforce: bool = True) -> None:
    """Serve a federated custodian from its installed manifest until stopped; again
    after each new manifest; not at all once a manifest no longer lists it."""
    while True:
        held = installed_manifest(settings)
        if held is None:
            raise ConfigError(
                f"node {settings.id} has not joined a consortium yet: "
                f"tessera node join MANIFEST --config {settings.path}"
            )
        manifest = held[0]
        own = cert_fingerprint(settings.tls_cert.read_text(encoding="ascii"))
        seat = next((e for e in manifest.nodes if e.id == settings.id), None)
        if seat is None or seat.fingerprint != own:
            raise ConfigError(
                f"this node is not in the consortium's manifest (serial {manifest.serial}): "
                "it was removed or replaced"
            )
        materialize(settings, manifest)
        _log.info(
            "node %d serving consortium %s serial %d on %s:%d",
            settings.id,
            manifest.name,
            manifest.serial,
            *settings.listen,
        )
        outcome = serve(
            settings.data,
            settings.id,
            enforce=enforce,
            idle_exit=settings.idle_exit,
            settings=settings,
        )
        if outcome == "reload":
            _log.info("node %d: new consortium manifest installed, restarting", settings.id)
            continue
        if outcome == "removed":
            _log.warning(
                "node %d: the new manifest no longer lists this node; stopping", settings.id
            )
        return


class JsonLines(logging.Formatter):
    """One JSON object per log record (``log = "json"``)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return json.dumps(doc, ensure_ascii=False)


def _setup_logging(json_lines: bool) -> None:
    handler = logging.StreamHandler(sys.stdout if json_lines else sys.stderr)
    handler.setFormatter(JsonLines() if json_lines else logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if json_lines else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry for the node process."""
    parser = argparse.ArgumentParser(prog="python -m tessera.node")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--id", type=int, dest="node_id")
    parser.add_argument(
        "--config", type=Path, help="a federated custodian's node.toml (instead of --home/--id)"
    )
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--any-port", action="store_true")
    parser.add_argument(
        "--idle-exit",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="exit after this long without a request (0: never; nodes that commands "
        "start by themselves use 900)",
    )
    parser.add_argument(
        "--no-policy-checks",
        action="store_true",
        help="run every signed job without checking it against the tables' policies "
        "(plays a custodian that stopped enforcing; tests only)",
    )
    args = parser.parse_args(argv)
    if (args.config is None) == (args.home is None or args.node_id is None):
        parser.error("give --config FILE, or --home HOME and --id I")
    try:
        if args.config is not None:
            settings = NodeSettings.load(args.config)
            _setup_logging(settings.log == "json")
            serve_federated(settings, enforce=not args.no_policy_checks)
            return 0
        _setup_logging(False)
        serve(
            args.home.resolve(),
            args.node_id,
            args.port,
            any_port=args.any_port,
            enforce=not args.no_policy_checks,
            idle_exit=max(0.0, args.idle_exit),
        )
    except TesseraError as exc:
        _log.error("tessera node: error: %s", exc)
        return 1
    except OSError as exc:
        _log.error("tessera node: error: %s", exc.strerror or exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
