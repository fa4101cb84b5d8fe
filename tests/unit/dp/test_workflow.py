"""plan -> run -> post-process around a secure query (workflows.dp; the budget is the
custodians', see tests/unit/node/test_custodian.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.dp import Aggregate, Policy, ReleasePlan, sample_noise_share
from tessera.dp.policy import strictest
from tessera.errors import BackendError, PolicyError
from tessera.workflows.dp import run_private_query

AGGS = [Aggregate("count"), Aggregate("avg", "age", 0, 120)]
EXACT = {"count": [120, 80], "sum:age": [120 * 40, 80 * 70]}


def custodians_execute(plan: ReleasePlan) -> dict[str, list[int]]:
    # Each custodian's share, summed as the MPC would before the reveal.
    noise = sum(sample_noise_share(ReleasePlan.from_dict(plan.to_dict())) for _ in range(3))
    return {
        k: [EXACT[k][c] + int(noise[i][c]) for c in range(plan.cells)]
        for i, k in enumerate(plan.keys)
    }


def run(policy: Policy, execute=custodians_execute, **kw):  # type: ignore[no-untyped-def]
    return run_private_query(
        policy=policy,
        aggregates=AGGS,
        cells=2,
        custodians=3,
        threshold=1,
        execute=execute,
        **kw,
    )


def test_private_release_reports_the_custodians_budget() -> None:
    left = {"cohort": {"rho": 0.5, "epsilon": 3.0}}
    answer = run(Policy.dp(total_epsilon=2.0, default_epsilon=1.0), budget=lambda: left)
    privacy = answer.privacy
    assert privacy is not None and privacy["epsilon"] <= 1.0
    assert privacy["budget_remaining"] == left
    assert answer.columns == ["count(*)", "avg(age)"]


def test_epsilon_above_the_cap_is_refused_before_running() -> None:
    ran: list[int] = []

    def counting(plan: ReleasePlan) -> dict[str, list[int]]:
        ran.append(1)
        return custodians_execute(plan)

    with pytest.raises(PolicyError, match="maximum"):
        run(Policy.dp(total_epsilon=2.0, max_epsilon=0.5), counting, epsilon=1.0)
    assert ran == []


def test_failure_propagates() -> None:
    def broken(plan: ReleasePlan) -> dict[str, list[int]]:
        raise BackendError("a node went away")

    with pytest.raises(BackendError):
        run(Policy.dp(total_epsilon=1.0), broken)


def test_exact_release_without_policy() -> None:
    answer = run(Policy.none(), lambda plan: {k: np.array(v) for k, v in EXACT.items()})
    assert answer.privacy is None
    assert answer.rows == [[120.0, 40.0], [80.0, 70.0]]


def test_join_uses_strictest_policy() -> None:
    a = Policy.dp(total_epsilon=5.0, default_epsilon=2.0, min_group_size=3)
    b = Policy.dp(total_epsilon=1.0, default_epsilon=0.5, min_group_size=10)
    c = Policy.none(min_group_size=20)
    policy = strictest([a, b, c])
    assert policy.default_epsilon == 0.5 and policy.min_group_size == 20
    assert policy.total_rho == b.total_rho
    assert strictest([c]).min_group_size == 20 and not strictest([c]).is_private
