"""The custodians enforce every table's policy on their own, on real node processes.

Each test plays the party who would break a rule (a forger, a replayer, a researcher
without a grant, a patched client that drops or shrinks the noise or lowers the minimum
group, a steward acting alone, a requester whose own state was deleted, a crowd of
concurrent jobs) and checks that every honest custodian refuses with a one-line reason
and charges nothing, even when one custodian stopped enforcing.
"""

from __future__ import annotations

import copy
import secrets
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from tessera.config import Environment
from tessera.dp import Policy
from tessera.errors import BudgetExhaustedError, PolicyError, TesseraError
from tessera.keys import generate
from tessera.keys.documents import SignedDocument
from tessera.samples.cohort import write_cohort
from tessera.workflows import nodes as node_client
from tessera.workflows.custodian import POLICY_CONTEXT
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import ensure_nodes, sign_job, start_node, stop_nodes
from tessera.workflows.people import Signer, add_person, unlock
from tessera.workflows.policies import catalog_bounds, installed_policy, set_policy
from tessera.workflows.query import run_query, run_sql
from tessera.workflows.tables import import_csv
from tessera.workflows.validation import validate_table

# one worker runs the module: its tests share one environment and its node processes
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("custodians")]

PASS = b"custodian test passphrase"
DP_SQL = "SELECT sex, COUNT(*), AVG(age) FROM patients GROUP BY sex"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """3 custodians; 'patients' under DP (granted to rita), 'plain' exact; four people."""
    base = tmp_path_factory.mktemp("custodians")
    paths = write_cohort(base / "data", 120, hospitals=1, seed=3)
    env = init_environment(base / "home", nodes=3, passphrase=PASS)
    owner = unlock(env, "owner", PASS, record=False)
    try:
        for name in ("patients", "plain", "ward"):
            import_csv(env, paths[0], name, schema_path=base / "data" / "patients.schema.yaml")
        for name, roles in (
            ("otto", ["officer"]),
            ("rita", ["researcher"]),
            ("mal", ["researcher"]),
        ):
            add_person(env, name, roles, PASS, [owner])
        people = {n: unlock(env, n, PASS, record=False) for n in ("otto", "rita", "mal")}
        bounds, _ = catalog_bounds(env, "patients")
        policy = Policy.dp(total_epsilon=3.0, default_epsilon=1.0, grants=("rita",), bounds=bounds)
        set_policy(env, "patients", policy, steward=owner)
        yield {"env": env, "owner": owner, **people}
    finally:
        stop_nodes(env)


def spent(env: Environment, table: str = "patients") -> list[float]:
    """Each custodian's spend on ``table`` (asked one by one)."""
    clients = ensure_nodes(env)
    try:
        return [
            next(
                r["spent_rho"] for r in c.request("GET", "/v1/budgets") if r["table"] == "patients"
            )
            for c in clients.values()
        ]
    finally:
        for c in clients.values():
            c.close()


def each_node(env: Environment, envelope: dict[str, Any]) -> list[str]:
    """Post ``envelope`` to every node on its own; every node's refusal message."""
    clients = ensure_nodes(env)
    reasons = []
    try:
        for c in clients.values():
            with pytest.raises(TesseraError) as caught:
                c.request("POST", "/v1/jobs", json=envelope)
            reasons.append(str(caught.value))
    finally:
        for c in clients.values():
            c.close()
    for reason in reasons:
        assert "\n" not in reason and len(reason) < 300
    return reasons


def captured_envelope(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The envelope rita's client signs for DP_SQL (the job is run once, for real)."""
    seen: list[dict[str, Any]] = []
    real = node_client.sign_job

    def keep(job: dict[str, Any], signer: Signer) -> dict[str, Any]:
        envelope = real(job, signer)
        seen.append(copy.deepcopy(envelope))
        return envelope

    monkeypatch.setattr(node_client, "sign_job", keep)
    run_sql(world["env"], DP_SQL, signer=world["rita"])
    monkeypatch.setattr(node_client, "sign_job", real)
    return seen[-1]


def fresh(envelope: dict[str, Any], signer: Signer, **job_changes: Any) -> dict[str, Any]:
    """``envelope``'s job with a new id and time, changed and re-signed by ``signer``."""
    job = copy.deepcopy(envelope["job"])
    job.update(job_id=secrets.token_hex(16), issued_at=int(time.time()), **job_changes)
    return sign_job(job, signer)


def test_forged_replayed_and_ungranted_jobs_refused_by_every_node(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = world["env"]
    envelope = captured_envelope(world, monkeypatch)
    before = spent(env)
    for reason in each_node(env, envelope):
        assert "replayed" in reason
    stranger = Signer("rita", generate())
    for reason in each_node(env, fresh(envelope, stranger)):
        assert "does not verify" in reason
    for reason in each_node(env, fresh(envelope, world["mal"], requester="mal")):
        assert "mal is not granted table patients" in reason
    with pytest.raises(PolicyError, match="refused by every custodian: mal is not granted"):
        run_sql(env, DP_SQL, signer=world["mal"])
    assert spent(env) == before  # nothing charged


def test_patched_client_noise_and_group_size_refused(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, rita = world["env"], world["rita"]
    envelope = captured_envelope(world, monkeypatch)
    before = spent(env)
    quiet = copy.deepcopy(envelope["job"]["noise"])
    for stat in quiet["release_plan"]["statistics"]:
        stat["share_sigma"] /= 4
    for reason in each_node(env, fresh(envelope, rita, noise=quiet)):
        assert "noise does not match" in reason
    for reason in each_node(env, fresh(envelope, rita, noise=None)):
        assert "without noise" in reason
    # the exact path of a patched client on the DP table
    with pytest.raises(PolicyError, match=r"every custodian.*without noise"):
        run_query(env, DP_SQL, signer=rita, min_group=5)
    # a lower minimum group on an exact table
    with pytest.raises(PolicyError, match="every custodian: minimum group size 1 is below"):
        run_query(env, "SELECT sex, COUNT(*) FROM plain GROUP BY sex", signer=rita, min_group=1)
    assert run_sql(env, "SELECT sex, COUNT(*) FROM plain GROUP BY sex", signer=rita)["rows"]
    assert spent(env) == before


def test_one_custodian_without_checks_cannot_release_alone(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, rita = world["env"], world["rita"]
    envelope = captured_envelope(world, monkeypatch)
    stop_nodes(env)
    start_node(env, 3, enforce=False)
    deadline = time.monotonic() + 30
    while node_client._known(env, 3) is None:  # serving (else ensure_nodes starts another)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    try:
        before = spent(env)
        quiet = copy.deepcopy(envelope["job"]["noise"])
        for stat in quiet["release_plan"]["statistics"]:
            stat["share_sigma"] /= 4
        patched = fresh(envelope, rita, noise=quiet)
        started = time.monotonic()
        clients = ensure_nodes(env)
        try:
            results, errors = node_client._run_everywhere(clients, patched)
        finally:
            for c in clients.values():
                c.close()
        assert set(errors) == {1, 2, 3} and not results  # node 3 ran it, and was aborted
        assert all("noise does not match" in str(errors[i]) for i in (1, 2))
        assert "aborted" in str(errors[3]) or "failed" in str(errors[3])
        assert time.monotonic() - started < 60  # the lone party did not wait for its peers
        assert spent(env)[:2] == before[:2]
    finally:
        stop_nodes(env)


def test_weakening_needs_two_people_on_every_node(world: dict[str, Any]) -> None:
    env, owner = world["env"], world["owner"]
    current = installed_policy(env, "patients")
    assert current is not None
    looser = replace(current.policy, total_rho=current.policy.total_rho * 100)  # type: ignore[operator]
    with pytest.raises(PolicyError, match="second person"):
        set_policy(env, "patients", looser, steward=owner)
    # a patched client sends it anyway: every custodian refuses on its own
    body = replace(current, serial=current.serial + 1, policy=looser).body()
    alone = owner.sign(SignedDocument(body), context=POLICY_CONTEXT)
    with pytest.raises(PolicyError, match=r"every custodian.*needs a second signature"):
        node_client.broadcast(env, "POST", "/v1/policies", json=alone.to_dict())
    assert installed_policy(env, "patients") == current
    installed = set_policy(env, "patients", looser, steward=owner, cosigners=[world["otto"]])
    assert installed_policy(env, "patients") == installed
    set_policy(env, "patients", current.policy, steward=owner)  # tightening: one steward


def test_deleted_requester_state_still_dp(world: dict[str, Any]) -> None:
    env = world["env"]
    shutil.rmtree(env.home / "gateway", ignore_errors=True)  # ledger, users, audit
    for leftover in env.home.rglob("*ledger*"):
        if "stores" not in leftover.parts:
            leftover.unlink()
    result = run_sql(env, DP_SQL, signer=world["rita"])
    assert result["privacy"] is not None and result["privacy"]["epsilon"] <= 1.0


def test_concurrent_jobs_never_overspend(world: dict[str, Any]) -> None:
    """100 DP queries at once against a budget for 10: no custodian spends more."""
    env, owner, rita = world["env"], world["owner"], world["rita"]
    probe = Policy.dp(total_rho=1.0, default_epsilon=0.05)
    rho = probe.query_rho(0.05)
    bounds, _ = catalog_bounds(env, "ward")
    tight = Policy.dp(total_rho=10.5 * rho, default_epsilon=0.05, bounds=bounds)
    set_policy(env, "ward", tight, steward=owner)
    validate_table(env, "ward", owner)  # once, not by every job of the crowd
    allowed = 10
    sql = "SELECT COUNT(*) FROM ward"

    def one(_: int) -> str:
        try:
            run_sql(env, sql, signer=rita, epsilon=0.05)
        except BudgetExhaustedError:
            return "budget"
        except TesseraError:
            return "failed"
        return "released"

    with ThreadPoolExecutor(max_workers=100) as pool:
        outcomes = list(pool.map(one, range(100)))
    released = outcomes.count("released")
    # every refusal is the budget's; jobs a custodian admitted while another refused were
    # aborted everywhere and refunded (then counted "failed" only if no reason was clearer)
    assert 1 <= released <= allowed, outcomes
    assert outcomes.count("budget") >= 50, outcomes
    clients = ensure_nodes(env)
    try:
        rows = [
            next(r for r in c.request("GET", "/v1/budgets") if r["table"] == "ward")
            for c in clients.values()
        ]
    finally:
        for c in clients.values():
            c.close()
    for row in rows:  # every custodian on its own
        assert row["spent_rho"] <= row["total_rho"] and row["pending_rho"] == 0
        assert row["spent_rho"] >= released * rho * 0.999
