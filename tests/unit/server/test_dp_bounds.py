"""Issue #17: every numerical search behind a query ends, on any input (the gateway
checks epsilon at the edge; these are the searches' own bounds)."""

from __future__ import annotations

import math

import pytest

from tessera.dp.accounting import (
    DELTA_RANGE,
    EPSILON_RANGE,
    epsilon_for_rho,
    rho_for_epsilon,
    solve_share_sigma,
)
from tessera.dp.ledger import _units

OUTSIDE = [1e-17, 5e-324, 0.0, -1.0, 1e308, math.inf, -math.inf, math.nan]


@pytest.mark.parametrize("epsilon", OUTSIDE)
def test_rho_for_epsilon_refuses_what_it_cannot_search(epsilon: float) -> None:
    with pytest.raises(ValueError, match="epsilon must be between"):
        rho_for_epsilon(epsilon, 1e-6)


@pytest.mark.parametrize("delta", [0.0, 1.0, 0.5, 1e-300, math.nan])
def test_rho_for_epsilon_refuses_deltas_without_a_proven_end(delta: float) -> None:
    with pytest.raises(ValueError, match="delta must be between"):
        rho_for_epsilon(1.0, delta)


@pytest.mark.parametrize(
    ("epsilon", "delta"),
    [
        (EPSILON_RANGE[0], 1e-6),
        (EPSILON_RANGE[1], 1e-6),
        (1e-6, 1e-6),  # the gateway's range
        (100.0, 1e-6),
        (1.0, DELTA_RANGE[0]),
        (1.0, DELTA_RANGE[1]),
        (EPSILON_RANGE[1], DELTA_RANGE[1]),
    ],
)
def test_rho_for_epsilon_at_the_ends_of_its_range(epsilon: float, delta: float) -> None:
    rho = rho_for_epsilon(epsilon, delta)
    assert 0 < rho < math.inf and epsilon_for_rho(rho, delta) <= epsilon


@pytest.mark.parametrize("rho", [5e-324, 0.0, -1.0, math.nan, math.inf])
def test_solve_share_sigma_refuses_rhos_it_cannot_reach(rho: float) -> None:
    with pytest.raises(ValueError):
        solve_share_sigma(1.0, rho, 2, 1)


def test_ledger_units_are_finite_and_a_charge_is_never_free() -> None:
    assert _units(1e-20) == 1 and _units(0.0) == 0 and _units(2e-12) == 2
    for bad in (math.inf, math.nan, -1e-12, 1e308):
        with pytest.raises(ValueError):
            _units(bad)
