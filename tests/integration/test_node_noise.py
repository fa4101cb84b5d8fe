"""The DP hook: every custodian's private noise vector enters the MPC as its own input
and only the sum is added to the released cells (before group-size suppression)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tessera.config import Environment
from tessera.node.app import create_app
from tessera.node.service import NodeService
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import run_job
from tessera.workflows.query import plan_query
from tessera.workflows.tables import import_csv

pytestmark = pytest.mark.integration

P = 2**61 - 1


def _noise(party_values: dict[int, int]) -> Any:
    def source(spec: Mapping[str, Any], party: int, parties: int) -> Sequence[int]:
        assert parties == 3
        return [party_values[party]] * int(spec["cells"])

    return source


@pytest.fixture
def env_with_noisy_nodes(tmp_path: Path) -> Iterator[Environment]:
    env = init_environment(tmp_path / "home", nodes=3)
    pki = env.home / "pki"
    servers = []
    (env.home / "run").mkdir()
    try:
        for node in env.nodes:
            service = NodeService(
                env, node.id, warm=False, noise_source=_noise({0: 1, 1: 20, 2: 300})
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


def test_noise_shares_are_summed_inside_the_mpc(
    env_with_noisy_nodes: Environment, tmp_path: Path
) -> None:
    env = env_with_noisy_nodes
    csv = tmp_path / "w.csv"
    csv.write_text("age,sex\n" + "".join(f"{30 + i},{'FM'[i % 2]}\n" for i in range(20)))
    import_csv(env, csv, "w")
    plan = plan_query(env, "SELECT sex, COUNT(*), SUM(age) FROM w GROUP BY sex", min_group=1)
    groups = len(plan["groups"][0]["labels"])  # F, M, NULL
    cells = len(plan["measures"]) * groups
    inputs = [{"alias": "w", "table": "w", "parts": plan["sources"][0]["parts"]}]
    values, _ = run_job(
        env,
        "sql",
        inputs,
        {"plan": plan, "prime": P},
        prime=P,
        noise={"cells": cells, "groups": groups},
    )
    flags, measures = values[:groups], values[groups : groups + cells]
    assert flags == [1, 1, 0]  # the flag comes from the exact count; NULL group is empty
    ages_f = [30 + i for i in range(0, 20, 2)]
    ages_m = [30 + i for i in range(1, 20, 2)]
    exact = {
        ("count", None): [10, 10],
        ("count", "w.age.valid"): [10, 10],
        ("sum", "w.age.val"): [sum(ages_f), sum(ages_m)],
    }
    for m, spec in enumerate(plan["measures"]):
        got = measures[m * groups : (m + 1) * groups]
        want = exact[(spec["kind"], spec["part"])]
        assert got == [want[0] + 321, want[1] + 321, 0]  # noise 1 + 20 + 300; suppressed -> 0
