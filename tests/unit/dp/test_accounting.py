"""Accounting: the distributed discrete Gaussian bound, conversions, composition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tessera.dp.accounting import (
    MIN_SHARE_SIGMA,
    composed_rho,
    distributed_gaussian_rho,
    epsilon_for_rho,
    rho_for_epsilon,
    solve_share_sigma,
    subgaussian_half_width,
)


def discrete_gaussian_pmf(sigma: float, radius: int) -> np.ndarray:
    k = np.arange(-radius, radius + 1, dtype=float)
    w = np.exp(-(k**2) / (2 * sigma**2))
    return w / w.sum()


def sum_pmf(sigma: float, shares: int, radius: int) -> np.ndarray:
    one = discrete_gaussian_pmf(sigma, radius)
    out = one
    for _ in range(shares - 1):
        out = np.convolve(out, one)
    return out


def renyi(p: np.ndarray, q: np.ndarray, alpha: float) -> float:
    mask = (p > 1e-300) & (q > 1e-300)  # skip subnormals; the mass sits near k = alpha
    terms = alpha * np.log(p[mask]) + (1 - alpha) * np.log(q[mask])
    top = terms.max()
    return float((top + np.log(np.exp(terms - top).sum())) / (alpha - 1))


@pytest.mark.parametrize(("sigma", "honest"), [(0.5, 2), (0.6, 2), (0.8, 3), (2.0, 2), (1.0, 4)])
def test_bound_dominates_exact_renyi_divergence(sigma: float, honest: int) -> None:
    # The KLS21 bound must dominate the exact Rényi divergences of the summed shares.
    rho = distributed_gaussian_rho(1, sigma, honest, cells=1)
    radius = int(14 * sigma) + 12
    p = sum_pmf(sigma, honest, radius)
    q = np.roll(p, 1)  # Z + 1
    q[0] = 0.0
    for alpha in (1.5, 2.0, 4.0, 8.0, 16.0):
        assert renyi(p, q, alpha) <= alpha * rho * (1 + 1e-9), alpha


def test_bound_reduces_to_gaussian_for_one_share() -> None:
    assert distributed_gaussian_rho(3, 2.0, 1, 1) == pytest.approx(9 / 8)


def test_solve_share_sigma_meets_rho_and_fails_just_below() -> None:
    for sensitivity, rho, honest, cells in [(1, 0.5, 2, 1), (120, 0.01, 2, 4), (1, 0.001, 3, 50)]:
        sigma = solve_share_sigma(sensitivity, rho, honest, cells)
        assert distributed_gaussian_rho(sensitivity, sigma, honest, cells) <= rho
        assert distributed_gaussian_rho(sensitivity, sigma * (1 - 1e-6), honest, cells) > rho


def test_solve_share_sigma_respects_minimum() -> None:
    assert solve_share_sigma(1, 100.0, 2, 1) == MIN_SHARE_SIGMA
    with pytest.raises(ValueError):
        distributed_gaussian_rho(1, MIN_SHARE_SIGMA / 2, 2, 1)


def test_epsilon_rho_round_trip_meets_and_fails_just_below() -> None:
    for eps, delta in [(1.0, 1e-6), (0.1, 1e-9), (5.0, 1e-5)]:
        rho = rho_for_epsilon(eps, delta)
        assert epsilon_for_rho(rho, delta) <= eps
        assert epsilon_for_rho(rho * 1.0001, delta) > eps
        classic = rho + 2 * math.sqrt(rho * math.log(1 / delta))
        assert classic >= eps * 0.999  # OpenDP's conversion is at least as tight


def test_composition_is_opendps_sum() -> None:
    terms = [(1.0, 2.0), (10.0, 20.0), (3.0, 1.5)]
    expected = sum(d * d / (2 * s * s) for d, s in terms)
    assert composed_rho(terms) == pytest.approx(expected, rel=1e-12)
    assert composed_rho(terms) >= expected


def test_subgaussian_half_width() -> None:
    h = subgaussian_half_width(2.0, 3, 0.95)
    assert h == pytest.approx(2.0 * math.sqrt(2 * 3 * math.log(40)))
    assert subgaussian_half_width(0.0, 3, 0.95) == 0.0


def test_separate_l1_and_l2_sensitivities() -> None:
    import math

    sigma, honest, cells = 3.0, 2, 4
    same = distributed_gaussian_rho(2, sigma, honest, cells)
    assert distributed_gaussian_rho(2, sigma, honest, cells, l2=2) == same
    smaller = distributed_gaussian_rho(2, sigma, honest, cells, l2=math.sqrt(2))
    assert smaller < same
    # Without the tau term the bound is the Gaussian's D2^2 / (2 m s^2).
    assert smaller == pytest.approx(2 / (2 * honest * sigma**2), rel=1e-6)
    loose = solve_share_sigma(2, 0.05, honest, cells)
    tight = solve_share_sigma(2, 0.05, honest, cells, l2=math.sqrt(2))
    assert tight == pytest.approx(loose / math.sqrt(2), rel=1e-3)
    assert distributed_gaussian_rho(2, tight, honest, cells, l2=math.sqrt(2)) <= 0.05
    with pytest.raises(ValueError, match="L2"):
        distributed_gaussian_rho(2, sigma, honest, cells, l2=3)
