"""A custodian killed during a job settles the reservation it left when it starts again:
refunded when it never answered, committed when its party had written its share; a
second process on the same store settles nothing.  A stale job's refusal names the
clocks."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from tessera.dp import Policy
from tessera.node.service import JOB_WINDOW_S, NodeService, ReplayError
from tessera.workflows.custodian import Custodian
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import sign_job
from tessera.workflows.people import unlock

PASS = b"unit test passphrase"
RHO = 0.01


def states(custodian: Custodian) -> dict[str, str]:
    """Each reservation's state by its job id (the ledger's note)."""
    db = custodian.ledger._connection()
    return {str(n): str(s) for n, s in db.execute("SELECT note, state FROM charges")}


def test_leftovers_refunded_unless_the_party_finished(tmp_path: Path) -> None:
    custodian = Custodian(tmp_path / "node", parties=3, threshold=1)
    try:
        custodian.ledger.set_policy("t", Policy.dp(total_epsilon=3.0))
        for job_id in ("never-answered", "party-finished", "released", "failed"):
            custodian.ledger.reserve(["t"], "rita", RHO, note=job_id)
        custodian.ledger.commit(_token(custodian, "released"))
        custodian.ledger.refund(_token(custodian, "failed"))
        settled = custodian.settle_leftovers({"party-finished", "released"})
        assert settled == {"never-answered": "refunded", "party-finished": "committed"}
        assert states(custodian) == {
            "never-answered": "refunded",
            "party-finished": "committed",
            "released": "committed",
            "failed": "refunded",
        }
        balance = custodian.ledger.balance("t")
        assert balance.pending_rho == 0 and balance.spent_rho == pytest.approx(2 * RHO)
        assert custodian.settle_leftovers() == {}  # nothing left the second time
    finally:
        custodian.close()


def _token(custodian: Custodian, job_id: str) -> str:
    db = custodian.ledger._connection()
    row = db.execute("SELECT reservation FROM charges WHERE note = ?", (job_id,)).fetchone()
    return str(row[0])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return init_environment(tmp_path_factory.mktemp("node") / "home", nodes=3, passphrase=PASS)


def test_node_settles_at_start_only_while_no_other_process_serves_its_store(env: Any) -> None:
    first = NodeService(env, 1, warm=False)
    try:
        first.custodian.ledger.set_policy("t", Policy.dp(total_epsilon=3.0))
        first.custodian.ledger.reserve(["t"], "rita", RHO, note="in-flight")
        finished = first.root / "jobs" / "finished-job"
        finished.mkdir(parents=True)
        (finished / "result.json").write_text("{}")
        first.custodian.ledger.reserve(["t"], "rita", RHO, note="finished-job")
        second = NodeService(env, 1, warm=False)  # the store is held: nothing settled
        second.close()
        assert set(states(first.custodian).values()) == {"reserved"}
    finally:
        first.close()
    again = NodeService(env, 1, warm=False)  # the holder is gone: a restart settles
    try:
        assert states(again.custodian) == {"in-flight": "refunded", "finished-job": "committed"}
        assert not (again.root / "jobs" / "finished-job").exists()
    finally:
        again.close()


@pytest.mark.parametrize("offset", [-1200, 1200])
def test_stale_job_refusal_names_the_clocks(env: Any, offset: int) -> None:
    owner = unlock(env, "owner", PASS, record=False)
    job = {
        "version": 1,
        "type": "sql",
        "job_id": secrets.token_hex(16),
        "issued_at": int(time.time()) + offset,
        "parties": [["127.0.0.1", 1000], ["127.0.0.1", 1001], ["127.0.0.1", 1002]],
        "inputs": [],
        "noise": None,
        "params": {},
    }
    service = NodeService(env, 2, warm=False)
    try:
        with pytest.raises(ReplayError) as caught:
            service.verify(sign_job(job, owner))
    finally:
        service.close()
    message = str(caught.value)
    when = "in the future" if offset > 0 else "ago"
    assert re.search(r"job signed 1(19[89]|20[01]) s ", message) and when in message, message
    assert f"outside the {JOB_WINDOW_S} s time window" in message and "clocks" in message
    assert "\n" not in message
