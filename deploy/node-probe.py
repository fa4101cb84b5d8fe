"""A custodian node's health probe, for container health checks and Kubernetes probes.

    python node-probe.py [PATH] [--config FILE]

PATH is ``/v1/health`` (alive; the default) or ``/v1/ready``; FILE the node's
``node.toml`` (default ``$TESSERA_NODE_CONFIG``, else ``/etc/tessera/node.toml``).

The node speaks mutual TLS only, so the probe connects to its listen port on loopback
with the node's own certificate and key (the node pins its own certificate with its
peers') and accepts only that same certificate from the server.  Exit 0 when the node
answers 200; else 1, with one line on standard error.  Only the standard library is used.
"""

from __future__ import annotations

import os
import ssl
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 4.0
PATHS = ("/v1/health", "/v1/ready")


def _url(listen: str, path: str) -> str:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):  # noqa: S104 - the any-address the node binds, not ours
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"https://{f'[{host}]' if ':' in host else host}:{int(port)}{path}"


def probe(config: Path, path: str) -> str | None:
    """None when the node answers ``path`` with 200; else why not (one line)."""
    try:
        node = tomllib.loads(config.read_text(encoding="utf-8"))["node"]
        base = config.resolve().parent
        cert, key = (base / node["tls_cert"], base / node["tls_key"])
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # the certificate names the node's public address
        context.load_cert_chain(cert, key)
        url = _url(str(node["listen"]), path)
    except (OSError, KeyError, ValueError, ssl.SSLError, tomllib.TOMLDecodeError) as exc:
        return f"{config}: {exc}"
    try:
        with urllib.request.urlopen(url, context=context, timeout=TIMEOUT_S) as answer:  # noqa: S310
            return None if answer.status == 200 else f"{url}: HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (OSError, ssl.SSLError) as exc:
        return f"{url}: {exc}"


def main(argv: list[str]) -> int:
    args = list(argv)
    config = Path(os.environ.get("TESSERA_NODE_CONFIG", "/etc/tessera/node.toml"))
    if "--config" in args:
        at = args.index("--config")
        config = Path(args[at + 1]) if at + 1 < len(args) else Path()
        del args[at : at + 2]
    path = args[0] if args else PATHS[0]
    if path not in PATHS or len(args) > 1 or not config.name:
        sys.stderr.write(f"usage: node-probe.py [{'|'.join(PATHS)}] [--config FILE]\n")
        return 2
    problem = probe(config, path)
    if problem:
        sys.stderr.write(f"node-probe: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
