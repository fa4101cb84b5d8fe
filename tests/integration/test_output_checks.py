"""Output checking (SACRO/ACRO rules) enforced by the custodians, on real node processes.

The checker holds back a cell of 3, a sum one record dominates (p% rule) and two
releases whose cohorts differ by one row; the researcher never sees a held result, the
table's steward reviews it and releases or withholds it, and neither a patched client
nor one custodian that stopped checking gets it out.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tessera.dp import Policy
from tessera.dp.policy import OutputChecks
from tessera.errors import OutputHeldError, PolicyError, TesseraError
from tessera.keys.documents import SignedDocument
from tessera.keys.ephemeral import Receiver, open_sealed
from tessera.workflows import nodes as node_client
from tessera.workflows import requests as flow
from tessera.workflows.airlock import collect_body
from tessera.workflows.approvals import COLLECT_CONTEXT, DECISION_CONTEXT, decision_body
from tessera.workflows.audit import node_log
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import broadcast, start_node, stop_nodes
from tessera.workflows.people import add_person, unlock
from tessera.workflows.policies import set_policy
from tessera.workflows.query import run_query
from tessera.workflows.tables import import_csv

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("output-checks")]

PASS = b"output checks passphrase"
SCHEMA = """columns:
  - {name: ward, type: categorical, categories: [A, B, C]}
  - {name: age, type: integer, min: 0, max: 100}
  - {name: cost, type: integer, min: 0, max: 100000}
"""


def rows() -> list[tuple[str, int, int]]:
    """Ward A has 3 patients; in ward C one patient's cost dominates; exactly one patient
    is aged 40 (25 are older than 39)."""
    out = [("A", 30 + i, 100) for i in range(3)]
    out += [("B", 10 + i, 200 + i) for i in range(25)]
    out += [("C", 41 + i, 50) for i in range(24)] + [("C", 40, 90000)]
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("output-checks")
    (base / "wards.schema.yaml").write_text(SCHEMA)
    csv = base / "wards.csv"
    csv.write_text("ward,age,cost\n" + "".join(f"{w},{a},{c}\n" for w, a, c in rows()))
    env = init_environment(base / "home", nodes=3, passphrase=PASS)
    owner = unlock(env, "owner", PASS, record=False)
    try:
        for name in ("wards", "other"):
            import_csv(env, csv, name, schema_path=base / "wards.schema.yaml")
        for name, roles in (("rita", ["researcher"]), ("sam", ["steward"])):
            add_person(env, name, roles, PASS, [owner])
        people = {n: unlock(env, n, PASS, record=False) for n in ("rita", "sam")}
        checked = replace(Policy.none(min_group_size=1), output_checks=OutputChecks())
        set_policy(env, "wards", checked, steward=owner, cosigners=[people["sam"]])
        set_policy(env, "other", Policy.none(), steward=people["sam"])
        yield {"env": env, "owner": owner, **people}
    finally:
        stop_nodes(env)


def held(world: dict[str, Any], sql: str, min_group: int | None = None) -> OutputHeldError:
    with pytest.raises(OutputHeldError) as caught:
        flow.run_sql_recorded(world["env"], sql, signer=world["rita"], min_group=min_group)
    assert "\n" not in str(caught.value)
    return caught.value


def test_cell_of_three_held_then_released_by_the_steward(world: dict[str, Any]) -> None:
    env, rita, owner = world["env"], world["rita"], world["owner"]
    # the policy's minimum group is 1: without the checker the 3 would be released
    error = held(world, "SELECT ward, COUNT(*) FROM wards GROUP BY ward", min_group=1)
    assert "1 cell(s) count fewer than 10 rows (threshold rule)" in str(error)
    assert "3" not in str(error).split("rule")[0].split("held")[0]  # no value leaked
    request = flow.show_request(env, error.job_id)
    assert request.kind == "output" and request.state == "held"
    with pytest.raises(PolicyError, match="held for its steward"):
        flow.request_result(env, error.job_id, rita)  # the researcher cannot peek
    review = flow.request_result(env, error.job_id, owner)
    assert review is not None and sorted(review["rows"]) == [["A", 3], ["B", 25], ["C", 25]]
    with pytest.raises(PolicyError, match="sam is not the steward of wards"):
        flow.decide(env, error.job_id, world["sam"], approve=True, reason="not mine")
    flow.decide(env, error.job_id, owner, approve=True, reason="ward sizes are public")
    released = flow.request_result(env, error.job_id, rita)
    assert released is not None and released["rows"] == review["rows"]
    with pytest.raises(PolicyError, match="the output is released already"):
        flow.decide(env, error.job_id, owner, approve=False, reason="changed my mind")
    # every custodian recorded the hold and the release in its own log
    for node in (1, 2, 3):
        actions = [(e.action, e.outcome) for _, e in node_log(env.home, node).events()]
        assert ("output.hold", "success") in actions and ("output.release", "success") in actions


def test_dominated_sum_held_balanced_sum_released(world: dict[str, Any]) -> None:
    env, rita = world["env"], world["rita"]
    error = held(world, "SELECT SUM(cost) FROM wards WHERE ward = 'C'")
    assert "dominated by their largest contributors" in str(error)
    answer = flow.run_sql_recorded(env, "SELECT SUM(cost) FROM wards WHERE ward = 'B'", signer=rita)
    assert answer["rows"] == [[sum(200 + i for i in range(25))]]


def test_two_releases_differing_by_one_row(world: dict[str, Any]) -> None:
    env, rita = world["env"], world["rita"]
    first = flow.run_sql_recorded(env, "SELECT COUNT(*) FROM wards WHERE age > 39", signer=rita)
    assert first["rows"] == [[25]]
    error = held(world, "SELECT COUNT(*) FROM wards WHERE age > 40")
    assert "differs from 1 earlier release(s)" in str(error)
    # withheld: the custodians delete their shares; nobody collects it afterwards
    flow.decide(env, error.job_id, world["owner"], approve=False, reason="differencing")
    with pytest.raises(PolicyError, match="withheld"):
        flow.request_result(env, error.job_id, world["owner"])
    # the same cohort again is no difference at all; a very different one is fine too
    again = flow.run_sql_recorded(env, "SELECT COUNT(*) FROM wards WHERE age > 39", signer=rita)
    assert again["rows"] == [[25]]


def test_patched_client_and_forged_decisions_get_nothing(world: dict[str, Any]) -> None:
    env, rita, owner = world["env"], world["rita"], world["owner"]
    sql = "SELECT ward, COUNT(*) FROM wards GROUP BY ward"
    # a patched client that declares no output checks: every custodian refuses the job
    with pytest.raises(PolicyError, match="every custodian: the job's output checks are not"):
        run_query(env, sql, signer=rita)
    # one that declares looser ones: the same
    with pytest.raises(PolicyError, match="every custodian: the job's output checks are not"):
        run_query(env, sql, signer=rita, checks=OutputChecks(threshold=2))
    # one that skips the recording: the custodians hold the release all the same
    with pytest.raises(OutputHeldError):
        run_query(env, sql, signer=rita, checks=OutputChecks())
    error = held(world, "SELECT ward, COUNT(*) FROM wards GROUP BY ward")
    # the researcher signs a release in the steward's name; sam, steward of another table
    for signer in (rita, world["sam"]):
        body = decision_body(subject="output", target=error.job_id, table="wards",
                             approve=True, reason="me", steward="owner")  # fmt: skip
        forged = signer.sign(SignedDocument(body), context=DECISION_CONTEXT)
        with pytest.raises(TesseraError, match="every custodian: the decision on wards is not"):
            broadcast(env, "POST", f"/v1/held/{error.job_id}/decision", json=forged.to_dict())
    with pytest.raises(PolicyError, match="held for its steward"):
        flow.request_result(env, error.job_id, rita)
    assert flow.request_result(env, error.job_id, owner) is not None


def test_one_custodian_that_stopped_checking_releases_nothing(world: dict[str, Any]) -> None:
    env, rita = world["env"], world["rita"]
    stop_nodes(env)
    start_node(env, 3, enforce=False)
    deadline = time.monotonic() + 30
    while node_client._known(env, 3) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    try:
        sql = "SELECT ward, COUNT(*) FROM wards GROUP BY ward"
        with pytest.raises(OutputHeldError, match="by 2 of 3 custodians"):
            run_query(env, sql, signer=rita, checks=OutputChecks())
        # and a job declaring no checks: the two honest custodians refuse it, the third
        # one's party is aborted
        with pytest.raises(TesseraError):
            run_query(env, sql, signer=rita)
    finally:
        stop_nodes(env)


def test_an_unchecked_table_is_released_as_before(world: dict[str, Any]) -> None:
    answer = flow.run_sql_recorded(
        world["env"], "SELECT ward, COUNT(*) FROM other GROUP BY ward", signer=world["rita"]
    )
    # the default minimum group of 5 suppresses ward A; nothing is held
    assert sorted(answer["rows"]) == [["B", 25], ["C", 25]]
    assert Path(world["env"].home / "requests").is_dir()


def _patched(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """A patched client: ``change(job)`` edits every job before it is signed."""
    real = node_client.sign_job

    def sign(job: dict[str, Any], signer: Any) -> dict[str, Any]:
        job = copy.deepcopy(job)
        change(job)
        return real(job, signer)

    monkeypatch.setattr(node_client, "sign_job", sign)


def test_patched_plans_refused_by_every_custodian(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, rita = world["env"], world["rita"]
    sql = "SELECT ward, COUNT(*), SUM(cost) FROM wards GROUP BY ward"

    def twice(job: dict[str, Any]) -> None:  # every row counted twice: 3 -> 6
        for item in job["inputs"]:
            item["chunks"] = item["chunks"] * 2

    _patched(monkeypatch, twice)
    with pytest.raises(PolicyError, match="every custodian: the job reads other chunks of wards"):
        run_query(env, sql, signer=rita, checks=OutputChecks())

    def negative(job: dict[str, Any]) -> None:  # a negative minimum skips dominance
        job["params"]["plan"]["cols"]["wards.cost"]["min"] = -1

    _patched(monkeypatch, negative)
    with pytest.raises(PolicyError, match=r"describes wards\.cost otherwise than this custodian"):
        run_query(env, sql, signer=rita, checks=OutputChecks())


def test_collected_shares_are_sealed_to_the_collector(world: dict[str, Any]) -> None:
    """A custodian that saw a collect document and replays it to the others gets only
    ciphertexts sealed to the collector's one-time key."""
    env, owner = world["env"], world["owner"]
    error = held(world, "SELECT ward, COUNT(*) FROM wards GROUP BY ward")
    body = collect_body(error.job_id, "owner", Receiver.new().public)
    document = owner.sign(SignedDocument(body), context=COLLECT_CONTEXT)
    answers = broadcast(env, "POST", f"/v1/held/{error.job_id}/collect", json=document.to_dict())
    for node, answer in answers.items():
        assert "shares" not in answer and set(answer["sealed"]) == {"epk", "iv", "ct"}
        with pytest.raises(TesseraError, match="does not open"):
            open_sealed(Receiver.new(), answer["sealed"], label=f"held:{error.job_id}:{node - 1}")
    stale = {**body, "issued_at": 1e300}
    with pytest.raises(TesseraError, match="unix seconds"):
        broadcast(
            env, "POST", f"/v1/held/{error.job_id}/collect",
            json=owner.sign(SignedDocument(stale), context=COLLECT_CONTEXT).to_dict(),
        )  # fmt: skip
