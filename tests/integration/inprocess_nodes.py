"""Custodian nodes served in this test process (uvicorn threads over mutual TLS).

For tests that inject something a node process cannot be given from outside, such as
a fixed noise source.  The nodes register themselves in the environment's run folder
exactly as `tessera node start` does, so the normal client code finds them.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn

from tessera.config import Environment
from tessera.node.app import create_app
from tessera.node.service import NodeService

NoiseSource = Callable[[Mapping[str, Any], int, int], Sequence[int]]


def fixed_noise(value: int) -> NoiseSource:
    """A noise source that gives every cell the same value."""
    return lambda spec, party, parties: [value] * int(spec["cells"])


@contextmanager
def inprocess_nodes(
    env: Environment, noise: Mapping[int, NoiseSource], *, enforce: bool = True
) -> Iterator[Environment]:
    """Serve every node of ``env`` in a thread, node i with ``noise[i]``.

    ``enforce=False`` serves custodians that run every signed job without checking it
    against the tables' policies (for tests of the raw MPC and noise hooks).
    """
    pki = env.home / "pki"
    (env.home / "run").mkdir(exist_ok=True)
    servers = []
    try:
        for node in env.nodes:
            service = NodeService(
                env, node.id, warm=False, noise_source=noise[node.id], enforce=enforce
            )
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            config = uvicorn.Config(
                create_app(service),
                ssl_certfile=str(pki / f"node-{node.id}.crt"),
                ssl_keyfile=str(pki / f"node-{node.id}.key"),
                ssl_ca_certs=str(pki / "ca.crt"),
                ssl_cert_reqs=ssl.CERT_REQUIRED,
                log_level="warning",
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
            thread.start()
            servers.append((server, thread, service, sock))
            info = {"node": node.id, "pid": 0, "host": "127.0.0.1", "port": sock.getsockname()[1]}
            (env.home / "run" / f"node-{node.id}.json").write_text(json.dumps(info))
        deadline = time.monotonic() + 30
        while not all(s.started for s, *_ in servers):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield env
    finally:
        for server, thread, service, sock in servers:
            server.should_exit = True
            thread.join(30)
            service.close()
            sock.close()
