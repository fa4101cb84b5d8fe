"""Planning releases: guarantees at the boundary, honest-majority calibration, format."""

from __future__ import annotations

import json

import pytest

from tessera.dp import Aggregate, Policy, ReleasePlan, plan_release, rho_for_epsilon
from tessera.dp.accounting import distributed_gaussian_rho
from tessera.errors import InputError, PolicyError, UnsupportedError

AGES = Aggregate("avg", "age", 0, 120)


def dp_policy(**kw: float) -> Policy:
    return Policy.dp(total_epsilon=10.0, **kw)  # type: ignore[arg-type]


def test_plan_meets_epsilon_and_fails_just_below() -> None:
    plan = plan_release(dp_policy(), [Aggregate("count"), AGES], cells=3, custodians=3, threshold=1)
    assert plan.check(epsilon=1.0)
    assert not plan.check(epsilon=0.999)
    assert plan.check(rho=plan.charge_rho)
    assert not plan.check(rho=plan.rho * (1 - 1e-6))
    assert plan.charge_rho == pytest.approx(rho_for_epsilon(1.0, 1e-6))


def test_explicit_epsilon_overrides_default_within_cap() -> None:
    policy = dp_policy(default_epsilon=1.0, max_epsilon=2.0)
    plan = plan_release(
        policy, [Aggregate("count")], cells=1, custodians=3, threshold=1, epsilon=0.5
    )
    assert plan.check(epsilon=0.5) and not plan.check(epsilon=0.4999)
    with pytest.raises(PolicyError, match="maximum"):
        plan_release(policy, [Aggregate("count")], cells=1, custodians=3, threshold=1, epsilon=3)


def test_honest_custodians_alone_give_the_guarantee() -> None:
    # Each share is calibrated for n - t honest shares; fewer would not suffice.
    plan = plan_release(
        dp_policy(), [Aggregate("sum", "age", 0, 120)], cells=2, custodians=5, threshold=2
    )
    assert plan.honest == 3
    for stat in plan.statistics:
        honest = distributed_gaussian_rho(stat.sensitivity, stat.share_sigma, 3, 2)
        assert honest == pytest.approx(stat.rho)
        assert distributed_gaussian_rho(stat.sensitivity, stat.share_sigma, 2, 2) > stat.rho
    assert sum(s.rho for s in plan.statistics) <= plan.charge_rho


def test_statistics_and_sensitivities_from_bounds() -> None:
    aggs = [
        Aggregate("count"),
        Aggregate("sum", "dose", -50, 20),
        Aggregate("stddev", "vl", 10, 1000, scale=10, nullable=True),
    ]
    plan = plan_release(dp_policy(), aggs, cells=4, custodians=3, threshold=1)
    sens = {s.key: s.sensitivity for s in plan.statistics}
    assert sens == {
        "count": 1,
        "sum:dose": 50,
        "count:vl": 1,
        "sum:vl": 1000,
        "sumsq:vl": 1000 * 1000,
    }
    bounds = {s.key: (s.lower, s.upper) for s in plan.statistics}
    assert bounds["sumsq:vl"] == (100, 1000 * 1000)


def test_none_policy_plans_no_noise_and_allows_min_max() -> None:
    plan = plan_release(
        Policy.none(), [Aggregate("max", "age", 0, 120)], cells=1, custodians=3, threshold=1
    )
    assert not plan.is_private and plan.rho == 0
    assert all(not s.noisy for s in plan.statistics)
    with pytest.raises(UnsupportedError, match="MAX"):
        plan_release(
            dp_policy(), [Aggregate("max", "age", 0, 120)], cells=1, custodians=3, threshold=1
        )


def test_plan_round_trips_through_json() -> None:
    plan = plan_release(dp_policy(), [Aggregate("count"), AGES], cells=2, custodians=3, threshold=1)
    assert ReleasePlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    with pytest.raises(InputError):
        ReleasePlan.from_dict({"version": 1})


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        plan_release(dp_policy(), [AGES], cells=0, custodians=3, threshold=1)
    with pytest.raises(ValueError):
        plan_release(dp_policy(), [AGES], cells=1, custodians=3, threshold=3)
    with pytest.raises(ValueError):
        Aggregate("sum", "x", 5, 1)


def test_policy_round_trip_and_validation() -> None:
    policy = Policy.dp(
        total_epsilon=3.0, researcher_rho=0.01, default_epsilon=0.5, min_group_size=10
    )
    assert Policy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert policy.to_dict()["total_epsilon"] == pytest.approx(3.0, rel=1e-6)
    assert Policy.from_dict(Policy.none().to_dict()) == Policy.none()
    with pytest.raises(ValueError):
        Policy.dp(total_epsilon=1.0, total_rho=0.1)
    with pytest.raises(ValueError):
        Policy.dp(total_epsilon=-1.0)
    with pytest.raises(InputError):
        Policy.from_dict({"version": 99, "mode": "dp"})


def test_knn_factor_two_uses_the_l2_change_of_two_cells() -> None:
    """One person entering the k nearest pushes one record out: L1 2D, L2 sqrt(2) D
    (or upper - lower when both records fall in one cell)."""
    aggs = [
        Aggregate("count", sensitivity_factor=2),
        Aggregate("sum", "time", 0, 100, sensitivity_factor=2),
        Aggregate("sum", "dose", -50, 50, sensitivity_factor=2),
    ]
    plan = plan_release(dp_policy(), aggs, cells=5, custodians=3, threshold=1)
    by_key = {s.key: s for s in plan.statistics}
    assert by_key["count"].sensitivity == 2
    assert by_key["count"].l2_sensitivity == pytest.approx(2**0.5)
    assert by_key["sum:time"].sensitivity == 200
    assert by_key["sum:time"].l2_sensitivity == pytest.approx(100 * 2**0.5)
    # -50 out, +50 in, same cell: a change of 100 = L1, so no L2 saving
    assert by_key["sum:dose"].l2_sensitivity is None
    for stat in plan.statistics:
        assert distributed_gaussian_rho(
            stat.sensitivity, stat.share_sigma, 2, 5, l2=stat.l2_sensitivity
        ) == pytest.approx(stat.rho)
    assert plan.check(epsilon=1.0)
    # The same budget buys less noise than calibrating for L2 = 2D would.
    old = plan_release(
        dp_policy(),
        [Aggregate("count", sensitivity_factor=2)],
        cells=5,
        custodians=3,
        threshold=1,
    )
    naive = distributed_gaussian_rho(2, old.statistics[0].share_sigma, 2, 5)
    assert naive > old.statistics[0].rho
    again = ReleasePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
