"""A custodian's own checks: signed policies, the two-person rule, and every job judged
against the policy it holds (never the job's word), with its own budget ledger."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tessera.dp import Aggregate, Policy, plan_release
from tessera.dp.policy import TablePolicy
from tessera.errors import BudgetExhaustedError, InputError, IntegrityError, PolicyError
from tessera.keys import generate
from tessera.keys.documents import SignedDocument
from tessera.keys.people import ROSTER_CONTEXT, Person, Roster
from tessera.mpc.plan import SqlPlan
from tessera.mpc.sql import compile_sql
from tessera.tables.encode import column_info
from tessera.tables.schema import Schema
from tessera.workflows.custodian import JOB_CONTEXT, POLICY_CONTEXT, Custodian
from tessera.workflows.job_checks import bound_aggregate, dp_measures
from tessera.workflows.people import Signer

SCHEMA = """
columns:
  - {name: age, type: integer, min: 18, max: 100}
  - {name: sex, type: categorical, categories: [F, M]}
  - {name: smoker, type: boolean}
"""
PEOPLE = {n: Signer(n, generate()) for n in ("stella", "otto", "rita", "mal")}
ROLES = {
    "stella": ("steward",),
    "otto": ("officer",),
    "rita": ("researcher",),
    "mal": ("researcher",),
}


def manifest() -> dict[str, Any]:
    schema = Schema.from_yaml(SCHEMA)
    return {
        "name": "t",
        "bounds": "declared",
        "columns": [column_info(c) for c in schema.columns],
        "hospitals": ["h1"],
        "schema": schema.to_dict(),
        "rows": 100,
        "chunks": [],
    }


MANIFESTS = {"t": manifest()}


@pytest.fixture
def custodian(tmp_path: Path) -> Any:
    people = tuple(Person(n, frozenset(ROLES[n]), s.key.verify_key) for n, s in PEOPLE.items())
    doc = PEOPLE["stella"].sign(SignedDocument(Roster(1, people).body()), context=ROSTER_CONTEXT)
    c = Custodian(tmp_path / "node", parties=3, threshold=1)
    c.pin_roster(doc)
    yield c
    c.close()


def policy_doc(policy: Policy, serial: int, *signers: str, steward: str = "stella") -> Any:
    doc = SignedDocument(TablePolicy("t", serial, steward, policy).body())
    for name in signers:
        doc = PEOPLE[name].sign(doc, context=POLICY_CONTEXT)
    return doc


DP = Policy.dp(total_epsilon=2.0, default_epsilon=1.0, bounds=(("age", 18, 100),))


def sql_job(
    sql: str, *, min_group: int = 5, requester: str = "rita", plan: SqlPlan | None = None
) -> dict[str, Any]:
    plan = plan or compile_sql(sql, MANIFESTS, min_group=min_group)
    return {
        "version": 1,
        "type": "sql",
        "job_id": secrets.token_hex(16),
        "requester": requester,
        "issued_at": int(time.time()),
        "parties": [["127.0.0.1", 1], ["127.0.0.1", 2], ["127.0.0.1", 3]],
        "inputs": [{"alias": s.alias, "table": "t", "parts": list(s.parts)} for s in plan.sources],
        "noise": None,
        "params": {"plan": plan.to_dict()},
    }


def dp_job(policy: Policy, *, epsilon: float | None = None, **over: Any) -> dict[str, Any]:
    sql = "SELECT sex, COUNT(*), AVG(age) FROM t GROUP BY sex"
    plan = compile_sql(sql, MANIFESTS)
    raw = [Aggregate("count"), Aggregate("avg", "t.age", 0, 0)]
    aggs = [bound_aggregate(a, {"t": "t"}, {"t": policy}, MANIFESTS, 1) for a in raw]
    release = plan_release(policy, aggs, cells=3, custodians=3, threshold=1, epsilon=epsilon)
    measures = dp_measures(release.keys, set())
    secure = replace(plan, min_group=0, extremes=(), aggregates={}, measures=measures)
    job = sql_job(sql, plan=secure)
    assert job["inputs"][0]["alias"] == "t"
    job["noise"] = {"cells": 3 * len(release.keys), "groups": 3, "release_plan": release.to_dict()}
    job.update(over)
    return job


def test_policy_weakening_needs_two_people(custodian: Custodian) -> None:
    custodian.install_policy(policy_doc(DP, 1, "stella"))  # a stronger rule: one steward
    off = Policy.none(min_group_size=5)
    with pytest.raises(PolicyError, match=r"switched off.*second signature"):
        custodian.install_policy(policy_doc(off, 2, "stella"))
    assert custodian.effective("t").is_private
    bigger = replace(DP, total_rho=DP.total_rho * 10)  # type: ignore[operator]
    with pytest.raises(PolicyError, match="larger total budget"):
        custodian.install_policy(policy_doc(bigger, 2, "stella"))
    custodian.install_policy(policy_doc(off, 2, "stella", "otto"))
    assert not custodian.effective("t").is_private


def test_policy_signatures_steward_and_serial(custodian: Custodian) -> None:
    with pytest.raises(PolicyError, match="not signed by its steward"):
        custodian.install_policy(policy_doc(DP, 1, "otto"))  # an officer is not the steward
    with pytest.raises(PolicyError, match="not signed by its steward"):
        custodian.install_policy(policy_doc(DP, 1, "rita", steward="rita"))
    custodian.install_policy(policy_doc(DP, 1, "stella"))
    stricter = replace(DP, min_group_size=10)
    custodian.install_policy(policy_doc(stricter, 2, "stella"))
    with pytest.raises(PolicyError, match="not newer"):  # replaying serial 1
        custodian.install_policy(policy_doc(DP, 1, "stella"))
    # a lower minimum group on a table with no policy weakens the custodian's default
    custodian2 = custodian
    low = Policy.none(min_group_size=1)
    doc = SignedDocument(TablePolicy("u", 1, "stella", low).body())
    with pytest.raises(PolicyError, match="minimum group size 5 -> 1"):
        custodian2.install_policy(PEOPLE["stella"].sign(doc, context=POLICY_CONTEXT))


def test_exact_jobs_keep_the_minimum_group(custodian: Custodian) -> None:
    custodian.admit(sql_job("SELECT COUNT(*) FROM t"), "rita", MANIFESTS)
    with pytest.raises(PolicyError, match="minimum group size 1 is below"):
        custodian.admit(sql_job("SELECT COUNT(*) FROM t", min_group=1), "rita", MANIFESTS)
    noisy = sql_job("SELECT COUNT(*) FROM t")
    noisy["noise"] = {"cells": 1}
    with pytest.raises(PolicyError, match="no DP policy"):
        custodian.admit(noisy, "rita", MANIFESTS)
    with pytest.raises(PolicyError, match="not a researcher"):
        custodian.admit(sql_job("SELECT COUNT(*) FROM t"), "stella", MANIFESTS)
    # the plan is decoded and checked first: suppression must compare COUNT(*), not a sum
    summed = sql_job("SELECT COUNT(*), SUM(age) FROM t")
    summed["params"]["plan"]["measures"][0] = {"kind": "sum", "part": "t.age.val"}
    with pytest.raises(InputError, match="measure 0 must be COUNT"):
        custodian.admit(summed, "rita", MANIFESTS)
    future = sql_job("SELECT COUNT(*) FROM t")
    future["params"]["plan"]["version"] = 2
    with pytest.raises(InputError, match="unsupported version"):
        custodian.admit(future, "rita", MANIFESTS)


def test_dp_jobs_are_checked_against_the_custodians_policy(custodian: Custodian) -> None:
    custodian.install_policy(policy_doc(DP, 1, "stella"))
    assert custodian.admit(dp_job(DP), "rita", MANIFESTS).release is not None
    with pytest.raises(PolicyError, match="without noise"):
        custodian.admit(sql_job("SELECT COUNT(*) FROM t"), "rita", MANIFESTS)
    job = dp_job(DP)
    stats = job["noise"]["release_plan"]["statistics"]
    stats[0]["share_sigma"] /= 10  # a lowered sigma
    with pytest.raises(PolicyError, match="does not match"):
        custodian.admit(job, "rita", MANIFESTS)
    lax = Policy.dp(total_epsilon=50.0, default_epsilon=1.0, delta=1e-3, bounds=DP.bounds)
    with pytest.raises(PolicyError, match="does not match"):  # noise for another policy
        custodian.admit(dp_job(lax), "rita", MANIFESTS)
    with pytest.raises(BudgetExhaustedError):  # a large epsilon is the ledger's to refuse
        custodian.admit(dp_job(DP, epsilon=20.0), "rita", MANIFESTS)
    exact_counts = dp_job(DP)
    exact_counts["params"]["plan"]["min_group"] = 3
    with pytest.raises(PolicyError, match="exact group sizes"):
        custodian.admit(exact_counts, "rita", MANIFESTS)
    sneaky = dp_job(DP)
    sneaky["params"]["plan"]["measures"][1] = {"kind": "sum", "part": "t.age.val"}
    with pytest.raises(PolicyError, match="measures"):
        custodian.admit(sneaky, "rita", MANIFESTS)
    unlisted = dp_job(DP)  # a part the job's inputs do not list: a malformed plan
    unlisted["params"]["plan"]["measures"][1] = {"kind": "sum", "part": "t.age.sq"}
    with pytest.raises(InputError, match=r"measure part 't\.age\.sq'"):
        custodian.admit(unlisted, "rita", MANIFESTS)
    narrow = replace(DP, bounds=(("age", 18, 60),))
    with pytest.raises(PolicyError, match="narrower bounds"):
        custodian.install_policy(policy_doc(narrow, 2, "stella"))


def test_grants_are_the_custodians(custodian: Custodian) -> None:
    custodian.install_policy(policy_doc(replace(DP, grants=("rita",)), 1, "stella"))
    custodian.admit(dp_job(DP), "rita", MANIFESTS)
    with pytest.raises(PolicyError, match="not granted"):
        custodian.admit(dp_job(DP), "mal", MANIFESTS)
    with pytest.raises(PolicyError, match="new grant to mal"):
        custodian.install_policy(policy_doc(replace(DP, grants=("mal", "rita")), 2, "stella"))


def test_budget_reserved_committed_refunded_never_overspent(custodian: Custodian) -> None:
    small = replace(DP, total_rho=10 * DP.query_rho(1.0) * 1.0001)
    custodian.install_policy(policy_doc(small, 1, "stella"))
    failed = custodian.admit(dp_job(small), "rita", MANIFESTS)
    custodian.settle(failed, released=False)  # refunded: the MPC failed before any output
    assert custodian.ledger.balance("t").spent_rho == 0

    def attempt(_: int) -> bool:
        try:
            admitted = custodian.admit(dp_job(small), "rita", MANIFESTS)
        except BudgetExhaustedError:
            return False
        custodian.settle(admitted, released=True)
        return True

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(attempt, range(100)))
    assert sum(results) == 10
    balance = custodian.ledger.balance("t")
    assert balance.spent_rho <= small.total_rho and balance.pending_rho == 0  # type: ignore[operator]


def test_authenticate_needs_a_roster_signature(custodian: Custodian) -> None:
    job = sql_job("SELECT COUNT(*) FROM t")
    doc = PEOPLE["rita"].sign(SignedDocument(job), context=JOB_CONTEXT)
    envelope = {"job": job, "signatures": doc.to_dict()["signatures"]}
    assert custodian.authenticate(envelope) == (job, "rita")
    claimed = {**job, "requester": "mal"}  # rita's signature does not make it mal's job
    with pytest.raises(IntegrityError):
        custodian.authenticate({"job": claimed, "signatures": envelope["signatures"]})
    stranger = Signer("rita", generate()).sign(SignedDocument(job), context=JOB_CONTEXT)
    with pytest.raises(IntegrityError, match="does not verify"):
        custodian.authenticate({"job": job, "signatures": stranger.to_dict()["signatures"]})
    policy_sig = PEOPLE["rita"].sign(SignedDocument(job), context=POLICY_CONTEXT)
    with pytest.raises(IntegrityError):  # a signature for another purpose
        custodian.authenticate({"job": job, "signatures": policy_sig.to_dict()["signatures"]})


def test_recommend_jobs_keep_the_minimum_group_too() -> None:
    from tessera.mpc.knn_spec import Feature, KnnJob
    from tessera.workflows.job_checks import check_exact_job

    def knn_job(min_group: int, rows: int = 100) -> dict[str, object]:
        spec = KnnJob(
            rows, (Feature("age", "numeric", 1, 0, 9),), "rx", 3, "ttf", min_group=min_group
        )
        return {"type": "knn", "params": {"job": spec.to_json()}}

    exact = Policy()  # minimum group 5
    check_exact_job(knn_job(5), exact, ("hiv",))
    with pytest.raises(PolicyError, match="minimum group size 0 is below hiv's 5"):
        check_exact_job(knn_job(0), exact, ("hiv",))  # a patched client asks for no floor
    check_exact_job(knn_job(4, rows=3), exact, ("hiv",))  # 3 rows: everything is hidden
