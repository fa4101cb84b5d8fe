"""Run one custodian node: ``python -m tessera.node --home HOME --id I [--port P]``.

Serves :func:`tessera.node.app.create_app` with uvicorn over mutual TLS (the node's
certificate; clients must present a certificate from the environment's CA).  With
``--port 0`` (or when the configured port is taken and ``--any-port`` is given) it binds
a free port.  The bound address is written to ``HOME/run/node-I.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import uvicorn

from tessera.config import Environment
from tessera.errors import TesseraError
from tessera.node.app import create_app
from tessera.node.service import NodeService

__all__ = ["WATCH_S", "main", "serve"]

WATCH_S = 1.0  # how often a node checks that its environment is still there


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
            sys.stderr.write(f"tessera node {service.node_id}: stopping, {reason}\n")
            server.should_exit = True


def serve(
    home: Path,
    node_id: int,
    port: int | None = None,
    *,
    any_port: bool = False,
    enforce: bool = True,
    idle_exit: float = 0.0,
) -> None:
    """Serve node ``node_id`` until interrupted, its environment is removed, or it was
    idle for ``idle_exit`` seconds (0: never)."""
    env = Environment.load(home)
    service = NodeService(env, node_id, enforce=enforce)
    cfg = next(n for n in env.nodes if n.id == node_id)
    sock = _bind(cfg.host, cfg.port if port is None else port, any_port)
    bound = sock.getsockname()[1]
    run_dir = env.home / "run"
    run_dir.mkdir(exist_ok=True)
    info = {"node": node_id, "pid": os.getpid(), "host": cfg.host, "port": bound}
    tmp = run_dir / f".node-{node_id}.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, run_dir / f"node-{node_id}.json")
    pki = env.home / "pki"
    config = uvicorn.Config(
        create_app(service),
        ssl_certfile=str(pki / f"node-{node_id}.crt"),
        ssl_keyfile=str(pki / f"node-{node_id}.key"),
        ssl_ca_certs=str(pki / "ca.crt"),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        log_level="warning",
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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry for the node process."""
    parser = argparse.ArgumentParser(prog="python -m tessera.node")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--id", required=True, type=int, dest="node_id")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--any-port", action="store_true")
    parser.add_argument(
        "--idle-exit",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="exit after this long without a request (0: never; nodes that commands "
        "start by themselves use 1800)",
    )
    parser.add_argument(
        "--no-policy-checks",
        action="store_true",
        help="run every signed job without checking it against the tables' policies "
        "(plays a custodian that stopped enforcing; tests only)",
    )
    args = parser.parse_args(argv)
    try:
        serve(
            args.home.resolve(),
            args.node_id,
            args.port,
            any_port=args.any_port,
            enforce=not args.no_policy_checks,
            idle_exit=max(0.0, args.idle_exit),
        )
    except TesseraError as exc:
        sys.stderr.write(f"tessera node: error: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"tessera node: error: {exc.strerror or exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
