"""Requests and approvals, enforced by every custodian on real node processes.

Each test plays the party who would break the rule: a researcher who skips the request,
a patched client that sends a job without its approval or with another query than the
approved one, a replayer of an approval, a forger of the steward's decision, someone
other than the steward approving, a researcher spending more epsilon than approved.
Every custodian refuses on its own, with a one-line reason.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tessera.dp import Policy
from tessera.errors import PolicyError, TesseraError
from tessera.keys.documents import SignedDocument
from tessera.samples.cohort import write_cohort
from tessera.workflows import nodes as node_client
from tessera.workflows import requests as flow
from tessera.workflows.approvals import DECISION_CONTEXT, decision_body
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import ensure_nodes, sign_job, stop_nodes
from tessera.workflows.people import Signer, add_person, unlock
from tessera.workflows.policies import catalog_bounds, set_policy
from tessera.workflows.query import run_query, run_sql
from tessera.workflows.tables import import_csv

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("approvals")]

PASS = b"approval test passphrase"
SQL = "SELECT sex, COUNT(*) FROM gated GROUP BY sex"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """'gated' (exact, approval required) and 'gated_dp' (DP, approval required)."""
    base = tmp_path_factory.mktemp("approvals")
    paths = write_cohort(base / "data", 80, hospitals=1, seed=5)
    env = init_environment(base / "home", nodes=3, passphrase=PASS)
    owner = unlock(env, "owner", PASS, record=False)
    try:
        for name in ("gated", "gated_dp"):
            import_csv(env, paths[0], name, schema_path=base / "data" / "patients.schema.yaml")
        for name, roles in (("otto", ["officer"]), ("rita", ["researcher"])):
            add_person(env, name, roles, PASS, [owner])
        people = {n: unlock(env, n, PASS, record=False) for n in ("otto", "rita")}
        set_policy(env, "gated", replace(Policy.none(), approval_required=True), steward=owner)
        bounds, _ = catalog_bounds(env, "gated_dp")
        dp = Policy.dp(total_epsilon=5.0, default_epsilon=1.0, bounds=bounds)
        set_policy(env, "gated_dp", replace(dp, approval_required=True), steward=owner)
        yield {"env": env, "owner": owner, **people}
    finally:
        stop_nodes(env)


def each_node(env: Any, envelope: dict[str, Any]) -> list[str]:
    """Post ``envelope`` to every node on its own; every node's one-line refusal."""
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
    assert len(reasons) == 3
    for reason in reasons:
        assert "\n" not in reason and len(reason) < 300
    return reasons


def approved(world: dict[str, Any], sql: str = SQL, epsilon: float | None = None) -> str:
    """A request rita filed and the owner (steward) approved; its id."""
    env = world["env"]
    req = flow.file_request(env, world["rita"], purpose="cohort sizes", sql=sql, epsilon=epsilon)
    assert req.state == "pending"
    done = flow.decide(env, req.id, world["owner"], approve=True, reason="fine")
    assert done.state == "approved"
    return req.id


def captured(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, request_id: str) -> Any:
    """Run the approved request for real; the envelope rita's client signed, and the answer."""
    seen: list[dict[str, Any]] = []
    real = node_client.sign_job

    def keep(job: dict[str, Any], signer: Signer) -> dict[str, Any]:
        envelope = real(job, signer)
        seen.append(copy.deepcopy(envelope))
        return envelope

    monkeypatch.setattr(node_client, "sign_job", keep)
    answer = flow.run_request(world["env"], request_id, world["rita"])
    monkeypatch.setattr(node_client, "sign_job", real)
    return seen[-1], answer


def fresh(envelope: dict[str, Any], signer: Signer, **changes: Any) -> dict[str, Any]:
    job = copy.deepcopy(envelope["job"])
    job.update(job_id=secrets.token_hex(16), issued_at=int(time.time()), **changes)
    return sign_job(job, signer)


def test_unapproved_job_refused_by_every_node(world: dict[str, Any]) -> None:
    env, rita = world["env"], world["rita"]
    with pytest.raises(PolicyError, match="requires an approved request"):
        run_sql(env, SQL, signer=rita)  # the client says so before asking anyone
    # a patched client that skips the check: every custodian refuses on its own
    with pytest.raises(PolicyError, match="refused by every custodian: gated requires an"):
        run_query(env, SQL, signer=rita)


def test_approved_request_runs_once(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    env, rita = world["env"], world["rita"]
    rid = approved(world)
    envelope, answer = captured(world, monkeypatch, rid)
    assert sum(n for _, n in answer["rows"]) == 80
    assert flow.show_request(env, rid).state == "done"
    with pytest.raises(PolicyError, match="ran already"):
        flow.run_request(env, rid, rita)
    # replaying the approval in a new job: every custodian says it was used
    for reason in each_node(env, fresh(envelope, rita)):
        assert "was used already" in reason


def test_patched_client_cannot_swap_the_query(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, rita = world["env"], world["rita"]
    rid = approved(world)
    envelope, _ = captured(world, monkeypatch, rid)
    # a new request for the harmless query, approved; a job running another one with it
    rid2 = approved(world)
    record = flow._load(env.home / "requests", rid2)
    approval = {"request": record["document"], "decisions": record["decisions"]}
    other = copy.deepcopy(envelope["job"]["params"])
    other["plan"] = run_plan_dict(env, "SELECT smoker, COUNT(*) FROM gated GROUP BY smoker")
    for reason in each_node(env, fresh(envelope, rita, params=other, approval=approval)):
        assert "does not run the approved query" in reason


def run_plan_dict(env: Any, sql: str) -> dict[str, Any]:
    from tessera.workflows.query import plan_query

    return plan_query(env, sql).to_dict()


def test_forged_or_foreign_decisions_refused(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, rita, otto, owner = world["env"], world["rita"], world["otto"], world["owner"]
    rid = approved(world)
    envelope, _ = captured(world, monkeypatch, rid)
    rid2 = approved(world)
    record = flow._load(env.home / "requests", rid2)
    decision = copy.deepcopy(record["decisions"][0])
    # an officer (not the table's steward) signs an approval in the steward's name
    by_otto = otto.sign(SignedDocument(decision["body"]), context=DECISION_CONTEXT)
    bad = {"request": record["document"], "decisions": [by_otto.to_dict()]}
    for reason in each_node(env, fresh(envelope, rita, approval=bad)):
        assert "not signed by its steward owner" in reason
    # the steward's signature over a refusal, edited into an approval
    refusal = copy.deepcopy(decision)
    refusal["body"]["reason"] = "edited afterwards"
    bad = {"request": record["document"], "decisions": [refusal]}
    for reason in each_node(env, fresh(envelope, rita, approval=bad)):
        assert "not signed by its steward" in reason
    # an approval of another request
    rid3 = flow.file_request(env, rita, purpose="other", sql=SQL).id
    record3 = flow._load(env.home / "requests", rid3)
    bad = {"request": record3["document"], "decisions": record["decisions"]}
    for reason in each_node(env, fresh(envelope, rita, approval=bad)):
        assert "about another request" in reason
    # a steward who refused
    refused = flow.decide(env, rid3, owner, approve=False, reason="not this one")
    assert refused.state == "refused"
    with pytest.raises(PolicyError, match="was refused"):
        flow.run_request(env, rid3, rita)


def test_only_the_steward_decides_and_only_the_filer_runs(world: dict[str, Any]) -> None:
    env, rita, otto = world["env"], world["rita"], world["otto"]
    req = flow.file_request(env, rita, purpose="sizes", sql=SQL)
    with pytest.raises(PolicyError, match="otto is not the steward of gated"):
        flow.decide(env, req.id, otto, approve=True, reason="I say so")
    flow.decide(env, req.id, world["owner"], approve=True, reason="ok")
    with pytest.raises(PolicyError, match="only rita"):
        flow.run_request(env, req.id, otto)
    listed = flow.list_requests(env, viewer="rita")
    assert req.id in {r.id for r in listed}
    assert all(r.researcher == "rita" for r in listed)
    shown = flow.show_request(env, req.id).to_dict()
    assert shown["decisions"][0]["by"] == "owner" and shown["decisions"][0]["reason"] == "ok"


def test_dp_request_binds_its_epsilon(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, rita = world["env"], world["rita"]
    sql = "SELECT sex, COUNT(*) FROM gated_dp GROUP BY sex"
    rid = approved(world, sql, epsilon=0.5)
    _, answer = captured(world, monkeypatch, rid)
    assert answer["privacy"]["epsilon"] == pytest.approx(0.5)
    # a patched client runs the query at epsilon 1 with an approval for 0.5
    rid2 = approved(world, sql, epsilon=0.5)
    record = flow._load(env.home / "requests", rid2)
    approval = {"request": record["document"], "decisions": record["decisions"]}
    with pytest.raises(PolicyError, match="every custodian: the job spends another epsilon"):
        run_sql(env, sql, signer=rita, epsilon=1.0, approval=approval)
    # the approval was not used up by the refused job: at 0.5 it runs
    answer = run_sql(env, sql, signer=rita, epsilon=0.5, approval=approval)
    assert answer["privacy"]["epsilon"] == pytest.approx(0.5)


def test_a_steward_cannot_approve_their_own_request(world: dict[str, Any]) -> None:
    """The founder holds every role: as a researcher they file, as the table's steward
    they would approve; the client refuses, and so does every custodian."""
    env, owner = world["env"], world["owner"]
    req = flow.file_request(env, owner, purpose="my own", sql=SQL)
    with pytest.raises(PolicyError, match="cannot approve or refuse their own request"):
        flow.decide(env, req.id, owner, approve=True, reason="trust me")
    record = flow._load(env.home / "requests", req.id)
    body = decision_body(
        subject="request", target=req.id, table="gated", approve=True, reason="trust me",
        steward="owner", request=record["document"]["body"],
    )  # fmt: skip
    decision = owner.sign(SignedDocument(body), context=DECISION_CONTEXT)
    approval = {"request": record["document"], "decisions": [decision.to_dict()]}
    with pytest.raises(PolicyError, match="every custodian: owner cannot approve their own"):
        run_sql(env, SQL, signer=owner, approval=approval)
