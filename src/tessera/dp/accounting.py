"""Privacy accounting: zCDP of the distributed discrete Gaussian, composition, conversion.

Each of the ``n`` custodians adds an independent discrete Gaussian ``N_Z(0, s^2)`` to
every released integer statistic; at most ``t`` of them may collude, so only the sum
of the ``m = n - t`` honest shares protects anyone (what colluders add themselves they
can subtract again: post-processing).  A sum of discrete Gaussians is *not* a discrete
Gaussian, so the guarantee is the bound of Kairouz, Liu and Steinke, "The Distributed
Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation" (ICML 2021,
arXiv:2102.06387, Prop. 14, building on Canonne, Kamath and Steinke, NeurIPS 2020): for
``s >= 1/2``, adding ``Z = X_1 + ... + X_m`` with ``X_i ~ N_Z(0, s^2)`` to a
``d``-dimensional integer statistic of L2 sensitivity ``D2`` and L1 sensitivity ``D1``
is ``eps^2 / 2``-zCDP with::

    tau = 10 * sum_{k=1}^{m-1} exp(-2 pi^2 s^2 k / (k + 1))
    eps = min( sqrt(D2^2 / (m s^2) + tau d / 2),  D1 / (sqrt(m) s) + tau sqrt(d) )

The first term ``D2^2 / (2 m s^2)`` is the zCDP of one discrete Gaussian of variance
``m s^2``; OpenDP computes it (``make_gaussian(...).map``, rounded up), and zCDP
composition over the statistics of a release is OpenDP's ``make_composition``.  The
conversion to ``(epsilon, delta)``-DP is OpenDP's ``make_zCDP_to_approxDP``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

from tessera.dp._engine import opendp

__all__ = [
    "DELTA_RANGE",
    "EPSILON_RANGE",
    "MIN_SHARE_SIGMA",
    "composed_rho",
    "distributed_gaussian_rho",
    "epsilon_for_rho",
    "rho_for_epsilon",
    "solve_share_sigma",
    "subgaussian_half_width",
]

#: The KLS21 bound holds for per-share standard deviation parameters of at least 1/2.
MIN_SHARE_SIGMA = 0.5
#: The epsilons :func:`rho_for_epsilon` converts (outside, a search would leave the
#: floats: an epsilon below ~1e-154 squares to 0).  The gateway accepts less.
EPSILON_RANGE = (1e-9, 1e6)
#: The deltas it converts at: above 0.3 the search has no proven end (see
#: ``_bracket_rho``), and a delta that large is no privacy anyway.
DELTA_RANGE = (1e-100, 0.3)
_MAX_DOUBLINGS = 128
_MAX_ROUNDS = 200
_MAX_NUDGES = 1000


def _gaussian_rho(sensitivity: float, sigma: float) -> float:
    """OpenDP's zCDP of one (discrete) Gaussian with ``sigma`` at ``sensitivity``."""
    dp = opendp()
    space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    return float(dp.m.make_gaussian(*space, scale=float(sigma)).map(float(sensitivity)))


def _tau(share_sigma: float, honest: int) -> float:
    return 10.0 * sum(
        math.exp(-2.0 * math.pi**2 * share_sigma**2 * k / (k + 1)) for k in range(1, honest)
    )


def _kls_rho(
    main: float, share_sigma: float, honest: int, cells: int, l1_over_l2: float = 1.0
) -> float:
    """KLS21's bound from ``main = D2^2 / (2 m s^2)``; its second branch needs
    ``D1 / (sqrt(m) s) = sqrt(2 main) * D1 / D2``."""
    tau = _tau(share_sigma, honest)
    if tau == 0.0:
        return main
    eps_a = math.sqrt(2.0 * main + tau * cells / 2.0)
    eps_b = math.sqrt(2.0 * main) * l1_over_l2 + tau * math.sqrt(cells)
    return min(eps_a, eps_b) ** 2 / 2.0


def _l2(sensitivity: float, l2: float | None) -> float:
    d2 = sensitivity if l2 is None else l2
    if not 0 <= d2 <= sensitivity or (sensitivity > 0 and d2 == 0):
        raise ValueError("the L2 sensitivity is positive and at most the L1 sensitivity")
    return d2


def _check_args(share_sigma: float, honest: int, cells: int) -> None:
    if honest < 1 or cells < 1:
        raise ValueError("honest and cells must be >= 1")
    if share_sigma < MIN_SHARE_SIGMA:
        raise ValueError(f"share sigma must be >= {MIN_SHARE_SIGMA}")


@functools.lru_cache(maxsize=4096)
def distributed_gaussian_rho(
    sensitivity: float,
    share_sigma: float,
    honest: int,
    cells: int,
    *,
    l2: float | None = None,
) -> float:
    """zCDP rho of the sum of ``honest`` discrete Gaussian shares on ``cells`` cells.

    ``sensitivity`` bounds the L1 change of the cell vector when one person is added or
    removed, ``l2`` its L2 change (default: the same, as when the person lands in one
    cell; smaller when one person moves records in two cells).
    """
    _check_args(share_sigma, honest, cells)
    if sensitivity == 0:
        return 0.0
    d2 = _l2(sensitivity, l2)
    main = _gaussian_rho(d2, share_sigma * math.sqrt(honest))  # D2^2 / (2 m s^2)
    return _kls_rho(main, share_sigma, honest, cells, sensitivity / d2)


def _analytic_rho(
    sensitivity: float, d2: float, share_sigma: float, honest: int, cells: int
) -> float:
    main = d2**2 / (2.0 * honest * share_sigma**2)
    return _kls_rho(main, share_sigma, honest, cells, sensitivity / d2 if d2 else 1.0)


@functools.lru_cache(maxsize=4096)
def solve_share_sigma(
    sensitivity: float, rho: float, honest: int, cells: int, *, l2: float | None = None
) -> float:
    """The smallest per-share sigma (to ~1e-9 relative) whose guarantee is at most ``rho``.

    The search runs on the closed form; the answer is then checked with OpenDP's map
    (which rounds up) and nudged up until OpenDP agrees.
    """
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError("rho must be a positive number")
    _check_args(MIN_SHARE_SIGMA, honest, cells)
    d2 = _l2(sensitivity, l2)

    def bound(s: float) -> float:
        return _analytic_rho(sensitivity, d2, s, honest, cells)

    lo = MIN_SHARE_SIGMA
    if bound(lo) <= rho:
        hi = lo
    else:
        hi = _bisect_sigma(bound, rho, lo, max(lo, math.sqrt(d2**2 / (2.0 * honest * rho))))
    # OpenDP's map rounds up by a few ulps (~1e-15 relative) over the closed form, so one
    # or two 1e-10 nudges settle it; 1000 of them (1e-7 relative) mean something is wrong.
    for _ in range(_MAX_NUDGES):
        if distributed_gaussian_rho(sensitivity, hi, honest, cells, l2=l2) <= rho:
            return hi
        hi *= 1.0 + 1e-10
    raise ValueError(f"no share sigma found for rho={rho:g} (OpenDP disagrees with the bound)")


def _bisect_sigma(bound: Callable[[float], float], rho: float, lo: float, hi: float) -> float:
    """The smallest sigma in ``[lo, inf)`` with ``bound(sigma) <= rho``, to 1e-12 relative.

    Range: ``bound`` is decreasing in sigma (its main term ``D2^2 / (2 m s^2)`` and tau
    both are) and tends to 0; ``bound(lo) > rho`` on entry.  The starting ``hi`` makes the
    main term equal ``rho``, so ``bound(hi) >= rho``; the growth factor ``1 + step``
    with ``step`` quadrupling from 1e-12 passes 2 after 20 rounds and then squares the
    distance every few rounds, so 200 rounds pass any finite float (where tau and the
    main term are 0).  Bisection halves ``hi - lo``; 200 halvings pass 1e-12 relative
    from any bracket of finite floats.
    """
    if not math.isfinite(hi):
        raise ValueError(f"rho={rho:g} is too small to solve for")
    step = 1e-12
    for _ in range(_MAX_ROUNDS):
        if bound(hi) <= rho:
            break
        lo, hi, step = hi, hi * (1.0 + step), step * 4.0
    else:
        raise ValueError(f"no share sigma reaches rho={rho:g}")
    for _ in range(_MAX_ROUNDS):
        if (hi - lo) <= 1e-12 * hi:
            break
        mid = (lo + hi) / 2.0
        if bound(mid) > rho:
            lo = mid
        else:
            hi = mid
    return hi


def composed_rho(terms: Sequence[tuple[float, float]]) -> float:
    """zCDP of releasing several Gaussians ``(sensitivity, sigma)`` together (OpenDP)."""
    active = [(d, s) for d, s in terms if d > 0]
    if not active:
        return 0.0
    dp = opendp()
    space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    parts = [dp.m.make_gaussian(*space, scale=float(s / d)) for d, s in active]
    return float(dp.c.make_composition(parts).map(1.0))


@functools.lru_cache(maxsize=1024)
def epsilon_for_rho(rho: float, delta: float) -> float:
    """The (epsilon, delta)-DP that rho-zCDP implies (OpenDP's conversion)."""
    if rho <= 0:
        return 0.0
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    dp = opendp()
    space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    # A Gaussian with this scale has zCDP exactly rho at sensitivity 1 (OpenDP rounds up).
    meas = dp.m.make_gaussian(*space, scale=1.0 / math.sqrt(2.0 * rho))
    try:
        profile = dp.c.make_zCDP_to_approxDP(meas).map(1.0)
        return float(profile.epsilon(delta))
    except dp.OpenDPException:
        # OpenDP overflows for very large rho; Bun-Steinke's bound is valid (looser).
        return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def _check_epsilon_delta(epsilon: float, delta: float) -> None:
    lo, hi = EPSILON_RANGE
    if not (math.isfinite(epsilon) and lo <= epsilon <= hi):
        raise ValueError(f"epsilon must be between {lo:g} and {hi:g}")
    if not (math.isfinite(delta) and DELTA_RANGE[0] <= delta <= DELTA_RANGE[1]):
        raise ValueError(f"delta must be between {DELTA_RANGE[0]:g} and {DELTA_RANGE[1]:g}")


@functools.lru_cache(maxsize=1024)
def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """The largest rho (to 1e-9 relative) whose (epsilon, delta) conversion is <= epsilon.

    ``epsilon`` must lie in :data:`EPSILON_RANGE` and ``delta`` in :data:`DELTA_RANGE`
    (ValueError otherwise): there every step below is a finite, positive float and the
    search ends within its bounds.
    """
    _check_epsilon_delta(epsilon, delta)
    log = math.log(1.0 / delta)
    # Bun-Steinke: rho-zCDP implies (rho + 2 sqrt(rho log(1/delta)), delta); its inverse
    # (sqrt(log + eps) - sqrt(log))^2, written without cancellation, is a valid lower end,
    # and OpenDP's tighter conversion lets us go a little higher.  lo >= 1e-18 / (4 * 231)
    # > 0 on the accepted range (the old form rounded to 0 for eps < ~1e-16: a hang);
    # 1e-6 below it, so that rounding in the conversion cannot put it above epsilon.
    lo = (epsilon / (math.sqrt(log + epsilon) + math.sqrt(log))) ** 2 * (1.0 - 1e-6)
    hi = _bracket_rho(lo, epsilon, delta)
    lo = hi / 2.0 if hi > lo else lo
    return _illinois(lo, hi, epsilon, delta)


def _bracket_rho(lo: float, epsilon: float, delta: float) -> float:
    """The first ``lo * 2^k`` whose conversion exceeds ``epsilon``.

    Range: the Gaussian mechanism of sensitivity 1 is exactly rho-zCDP and its privacy
    loss is ``L ~ N(rho, 2 rho)``, so any valid conversion (OpenDP's, or Bun-Steinke's
    fallback) is at least its exact epsilon(delta).  If ``eps' <= rho - 1`` then
    ``delta(eps') = E[(1 - e^(eps' - L))+] >= P(L >= rho) (1 - 1/e) = 0.316``; so for
    ``delta <= 0.3`` every rho > epsilon + 1 converts to more than ``epsilon``.  From
    ``lo >= 1e-21`` (the smallest epsilon and delta accepted) to ``epsilon + 1 <= 1e6 + 1``
    is fewer than 2^91: 128 doublings always suffice.
    """
    hi = lo
    for _ in range(_MAX_DOUBLINGS):
        if epsilon_for_rho(hi, delta) > epsilon:
            return hi
        hi *= 2.0
    raise ValueError(f"no rho converts to epsilon={epsilon:g} at delta={delta:g}")


def _illinois(lo: float, hi: float, epsilon: float, delta: float) -> float:
    """Illinois (regula falsi) on ``[lo, hi]``: a handful of OpenDP conversions instead
    of ~30 bisections; at most 100 rounds, each of which keeps ``lo`` valid."""
    f_lo = epsilon_for_rho(lo, delta) - epsilon
    f_hi = epsilon_for_rho(hi, delta) - epsilon
    if f_lo > 0:  # the Bun-Steinke end itself converts to more: cannot happen
        raise ValueError(f"no rho converts to epsilon={epsilon:g} at delta={delta:g}")
    side = 0
    for _ in range(100):
        if (hi - lo) <= 1e-9 * hi or f_lo == 0:
            break
        mid = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        if not lo < mid < hi:
            mid = (lo + hi) / 2.0
        f_mid = epsilon_for_rho(mid, delta) - epsilon
        if f_mid <= 0:
            lo, f_lo = mid, f_mid
            if side == -1:
                f_hi /= 2.0
            side = -1
        else:
            hi, f_hi = mid, f_mid
            if side == 1:
                f_lo /= 2.0
            side = 1
    return lo


def subgaussian_half_width(share_sigma: float, shares: int, confidence: float) -> float:
    """Half-width that the sum of ``shares`` discrete Gaussians exceeds w.p. <= 1 - confidence.

    A discrete Gaussian ``N_Z(0, s^2)`` is ``s``-subgaussian (Canonne-Kamath-Steinke,
    Cor. 9), so the sum of ``k`` of them satisfies ``P(|Z| >= x) <= 2 exp(-x^2 / (2 k s^2))``.
    """
    if share_sigma == 0:
        return 0.0
    beta = 1.0 - confidence
    return share_sigma * math.sqrt(2.0 * shares * math.log(2.0 / beta))
