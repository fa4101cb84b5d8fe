"""Statistical tests of the distributed noise (OpenDP style: KS over many draws)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tessera.dp import Aggregate, Policy, plan_release, sample_noise_share

DRAWS = 20_000
ALPHA = 1e-4  # false-alarm rate of each KS test; the KS bound is conservative for discrete data


def discrete_gaussian_sum_cdf(sigma: float, shares: int) -> tuple[np.ndarray, np.ndarray]:
    radius = int(14 * sigma) + 12
    k = np.arange(-radius, radius + 1, dtype=float)
    one = np.exp(-(k**2) / (2 * sigma**2))
    one /= one.sum()
    pmf = one
    for _ in range(shares - 1):
        pmf = np.convolve(pmf, one)
    support = np.arange(-(len(pmf) // 2), len(pmf) // 2 + 1)
    return support, np.cumsum(pmf)


def ks_distance(samples: np.ndarray, support: np.ndarray, cdf: np.ndarray) -> float:
    ecdf = np.searchsorted(np.sort(samples), support, side="right") / len(samples)
    return float(np.max(np.abs(ecdf - cdf)))


@pytest.fixture(scope="module")
def plan():  # type: ignore[no-untyped-def]
    policy = Policy.dp(total_epsilon=100.0, default_epsilon=2.0)
    return plan_release(policy, [Aggregate("count")], cells=DRAWS, custodians=5, threshold=2)


@pytest.fixture(scope="module")
def shares(plan):  # type: ignore[no-untyped-def]
    return [sample_noise_share(plan) for _ in range(plan.custodians)]


def test_share_shape_and_type(plan, shares) -> None:  # type: ignore[no-untyped-def]
    assert shares[0].shape == (1, DRAWS) and shares[0].dtype == np.int64
    assert not np.array_equal(shares[0], shares[1])


def test_honest_sum_matches_target_distribution(plan, shares) -> None:  # type: ignore[no-untyped-def]
    sigma = plan.statistics[0].share_sigma
    honest = sum(shares[: plan.honest])[0]
    support, cdf = discrete_gaussian_sum_cdf(sigma, plan.honest)
    critical = stats.kstwo.ppf(1 - ALPHA, DRAWS)
    assert ks_distance(honest, support, cdf) < critical
    # The same test rejects a distribution 15% wider: it has the power to fail.
    support, wrong = discrete_gaussian_sum_cdf(sigma * 1.15, plan.honest)
    assert ks_distance(honest, support, wrong) > critical


def test_all_shares_sum_matches_and_interval_covers(plan, shares) -> None:  # type: ignore[no-untyped-def]
    stat = plan.statistics[0]
    total = sum(shares)[0]
    support, cdf = discrete_gaussian_sum_cdf(stat.share_sigma, plan.custodians)
    assert ks_distance(total, support, cdf) < stats.kstwo.ppf(1 - ALPHA, DRAWS)
    # The subgaussian half-width is conservative: coverage well above 95%.
    assert np.mean(np.abs(total) <= stat.half_width) >= 0.95


def test_no_noise_without_dp() -> None:
    plan = plan_release(Policy.none(), [Aggregate("count")], cells=7, custodians=3, threshold=1)
    assert not sample_noise_share(plan).any()
