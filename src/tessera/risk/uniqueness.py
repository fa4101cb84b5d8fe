"""Population uniqueness estimated from a sample: Pitman, Zayatz, SNB and Dankar's rule.

Input is the frequency of class sizes in the sample (``C_i`` = number of classes of
size i), the sample size n and the population size N (sampling fraction ``pi = n/N``).
Each model returns the estimated *number* of population uniques (NaN when it does not
apply or its solver does not converge); ``fraction = count / N``.

* **Zayatz (1991)**: P(a sample unique is a population unique) =
  ``(C_1/J) h(1; N, 1, n) / sum_i (C_i/J) h(1; N, i, n)`` with h the hypergeometric
  probability of drawing exactly one of i population members into a sample of n;
  uniques = ``C_1 * P / pi`` (as ARX implements it).
* **Pitman (Hoshino 2001)**: the sample is a Pitman sampling formula with parameters
  (theta, alpha) fitted by maximum likelihood (2-D Newton, ARX's starting point);
  uniques = ``Gamma(theta+1) / Gamma(theta+alpha) * N^alpha``.
* **SNB (Chen & Keller-McNulty 1998)**: population class sizes are 1 + NegBin(alpha,
  beta), sampled by Bernoulli(pi); the expected numbers of sample classes of size 1
  and 2 are matched to C_1 and C_2 with K (non-empty population classes) from
  Shlosser's estimator; uniques = ``K beta^alpha``.
* **Dankar et al. (2012)**: pi <= 0.1 -> Pitman if it converges, else Zayatz;
  pi > 0.1 -> the smaller of SNB and Zayatz when SNB converges, else Zayatz.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import digamma, polygamma

__all__ = ["UniquenessEstimate", "estimate_uniqueness", "pitman", "snb", "zayatz"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_ACCURACY = 1e-6
_ITERATIONS = 200


def _size_frequencies(sizes: IntArray) -> tuple[IntArray, IntArray]:
    """(distinct class sizes, number of classes of each size)."""
    vals, freq = np.unique(sizes, return_counts=True)
    return vals.astype(np.int64), freq.astype(np.int64)


def _log_comb(a: FloatArray | float, b: FloatArray | float) -> FloatArray:
    a_ = np.asarray(a, dtype=np.float64)
    b_ = np.asarray(b, dtype=np.float64)
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    return np.asarray(lg(a_ + 1) - lg(b_ + 1) - lg(a_ - b_ + 1), dtype=np.float64)


def zayatz(sizes: IntArray, population: int) -> float:
    """Zayatz's estimate of the number of population uniques."""
    n = int(sizes.sum())
    vals, freq = _size_frequencies(sizes)
    c1 = int(freq[vals == 1].sum())
    if c1 == 0:
        return 0.0
    big_n = float(population)
    # h(1; N, i, n) = C(i,1) C(N-i, n-1) / C(N, n)
    valid = vals <= population
    v = vals[valid].astype(np.float64)
    logh = np.log(v) + _log_comb(big_n - v, n - 1) - _log_comb(big_n, n)
    h = np.exp(logh)
    temp = float(np.sum(freq[valid] * h))
    h1 = float(h[v == 1][0])
    if temp <= 0:
        return math.nan
    prob = c1 * h1 / temp
    return c1 * prob / (n / big_n)


Vec = Callable[[FloatArray], FloatArray]


def _newton(f: Vec, x0: FloatArray, *, jac: Vec | None = None) -> FloatArray | None:
    """2-D damped Newton; returns the root or None when it does not converge."""
    x = x0.astype(np.float64).copy()
    for _ in range(_ITERATIONS):
        y = np.asarray(f(x), dtype=np.float64)
        if not np.all(np.isfinite(y)):
            return None
        if np.max(np.abs(y)) < _ACCURACY:
            return x
        if jac is not None:
            j = np.asarray(jac(x), dtype=np.float64)
        else:
            j = np.empty((2, 2))
            for k in range(2):
                step = 1e-7 * max(1.0, abs(x[k]))
                xp = x.copy()
                xp[k] += step
                j[:, k] = (np.asarray(f(xp)) - y) / step
        try:
            dx = np.linalg.solve(j, -y)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(dx)):
            return None
        # Damping: halve the step until the residual does not grow (or give up halving).
        lam = 1.0
        norm = np.max(np.abs(y))
        for _ in range(30):
            cand = x + lam * dx
            yc = np.asarray(f(cand), dtype=np.float64)
            if np.all(np.isfinite(yc)) and np.max(np.abs(yc)) < norm:
                break
            lam /= 2
        x = x + lam * dx
    y = np.asarray(f(x), dtype=np.float64)
    return x if np.all(np.isfinite(y)) and np.max(np.abs(y)) < _ACCURACY else None


def pitman(sizes: IntArray, population: int) -> float:
    """Pitman-model estimate of the number of population uniques."""
    n = float(sizes.sum())
    vals, freq = _size_frequencies(sizes)
    c1 = float(freq[vals == 1].sum())
    if c1 == 0:
        return 0.0
    u = float(sizes.size)
    c2 = float(freq[vals == 2].sum()) or 1.0
    c = c1 * (c1 - 1) / c2
    denom = 2 * c1 * u + c1 * c - n * c
    if denom == 0:
        return math.nan
    t0 = (n * u * c - c1 * (n - 1) * (2 * u + c)) / denom
    a0 = (t0 * (c1 - n) + (n - 1) * c1) / (n * u)
    iu = np.arange(1, int(u), dtype=np.float64)
    inn = np.arange(1, int(n), dtype=np.float64)
    big = vals > 1
    svals, sfreq = vals[big].astype(np.float64), freq[big].astype(np.float64)

    def parts_iterative(t: float, a: float) -> tuple[float, ...]:
        r = 1.0 / (t + iu * a)
        rn = 1.0 / (t + inn)
        s0, s1 = float(r.sum()), float((iu * r).sum())
        t0_, t1_, t2_ = (
            float((r * r).sum()),
            float((iu * r * r).sum()),
            float((iu * iu * r * r).sum()),
        )
        return s0, s1, t0_, t1_, t2_, float(rn.sum()), float((rn * rn).sum())

    def parts_closed(t: float, a: float) -> tuple[float, ...]:
        # Sums over i = 1..u-1 and 1..n-1 through digamma/trigamma (as in ARX).
        b = t / a
        ends = np.array([b + u, b + 1.0, t + n, t + 1.0])
        psi, psi1 = digamma(ends), polygamma(1, ends)
        s0 = (psi[0] - psi[1]) / a
        s1 = (u - 1) / a - (t / a) * s0
        t0_ = (psi1[1] - psi1[0]) / (a * a)
        t1_ = (s0 - t * t0_) / a
        t2_ = (s1 - t * t1_) / a
        return s0, s1, t0_, t1_, t2_, float(psi[2] - psi[3]), float(psi1[3] - psi1[2])

    def parts(x: FloatArray) -> tuple[float, ...]:
        t, a = float(x[0]), float(x[1])
        closed = a > 0 and t / a + 1 > 0 and t + 1 > 0
        s0, s1, t0_, t1_, t2_, o2, d2 = (parts_closed if closed else parts_iterative)(t, a)
        if svals.size and a < 1:
            ends = np.concatenate(([1.0 - a], svals - a))
            psi, psi1 = digamma(ends), polygamma(1, ends)
            o4 = float(np.sum(sfreq * (psi[1:] - psi[0])))
            d4 = float(np.sum(sfreq * (psi1[0] - psi1[1:])))
        elif svals.size:
            return (math.nan,) * 9
        else:
            o4 = d4 = 0.0
        return s0, o2, s1, o4, t0_, d2, t2_, d4, t1_

    def fun(x: FloatArray) -> FloatArray:
        o1, o2, o3, o4, *_ = parts(x)
        return np.array([o1 - o2, o3 - o4])

    def jac(x: FloatArray) -> FloatArray:
        *_, d1, d2, d3, d4, d5 = parts(x)
        return np.array([[d2 - d1, -d5], [-d5, -d3 - d4]])

    with np.errstate(all="ignore"):
        root = _newton(fun, np.array([t0, a0]), jac=jac)
    if root is None:
        return math.nan
    t, a = float(root[0]), float(root[1])
    if a == 0 or not math.isfinite(t) or not math.isfinite(a) or t + a <= 0 or t <= -1:
        return math.nan
    try:
        value = math.exp(math.lgamma(t + 1) - math.lgamma(t + a) + a * math.log(population))
    except (ValueError, OverflowError):
        return math.nan
    return value if 0 <= value <= population else math.nan


def _shlosser(vals: IntArray, freq: IntArray, u: float, c1: float, f: float) -> float:
    """Shlosser's estimate of the number of non-empty population classes."""
    v = vals.astype(np.float64)
    num = float(np.sum((1 - f) ** v * freq))
    den = float(np.sum(v * f * (1 - f) ** (v - 1) * freq))
    return u + c1 * num / den if den > 0 else u


def snb(sizes: IntArray, population: int) -> float:
    """Shifted-negative-binomial estimate of the number of population uniques."""
    n = float(sizes.sum())
    vals, freq = _size_frequencies(sizes)
    c1 = float(freq[vals == 1].sum())
    c2 = float(freq[vals == 2].sum())
    if c1 == 0:
        return 0.0
    if c2 == 0:
        return math.nan
    f = n / population
    if f >= 1:
        return c1
    k = _shlosser(vals, freq, float(sizes.size), c1, f)

    def expected(a: float, b: float) -> tuple[float, float]:
        d = (1 - b) * (1 - f)
        big_d = 1 - d
        e1 = k * f * b**a * big_d ** (-a - 1) * (1 - (1 - a) * d)
        e2 = k * a * b**a * f * f * (1 - b) / 2 * big_d ** (-a - 2) * (2 - (1 - a) * d)
        return e1, e2

    def fun(x: FloatArray) -> FloatArray:
        a = math.exp(float(x[0]))
        b = 1.0 / (1.0 + math.exp(-float(x[1])))
        e1, e2 = expected(a, b)
        return np.array([e1 / c1 - 1.0, e2 / c2 - 1.0])

    best: float | None = None
    with np.errstate(all="ignore"):
        for a0 in (0.1, 1.0, 10.0):
            for b0 in (0.01, 0.1, 0.5):
                try:
                    root = _newton(fun, np.array([math.log(a0), math.log(b0 / (1 - b0))]))
                except OverflowError:
                    root = None
                if root is None:
                    continue
                a = math.exp(float(root[0]))
                b = 1.0 / (1.0 + math.exp(-float(root[1])))
                best = k * b**a
                break
            if best is not None:
                break
    if best is None or not (0 <= best <= population):
        return math.nan
    return best


# Why a model gives no estimate (NaN), as the report says it.
_NO_ESTIMATE = {
    "pitman": "did not converge",
    "zayatz": "does not apply to these class sizes",
    "snb": "did not converge",
}


@dataclass(frozen=True)
class UniquenessEstimate:
    """Estimated numbers of population uniques by model, and Dankar's choice."""

    population: int
    sampling_fraction: float
    sample_uniques: int
    pitman: float
    zayatz: float
    snb: float
    dankar: float
    dankar_model: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: counts and fractions of the population (null where no estimate)."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        def frac(x: float) -> float | None:
            return None if math.isnan(x) else x / self.population

        return {
            "population": self.population,
            "sampling_fraction": self.sampling_fraction,
            "sample_uniques": self.sample_uniques,
            "model": self.dankar_model,
            "population_uniques": num(self.dankar),
            "population_uniqueness": frac(self.dankar),
            # each population unique is sampled with probability pi: of the sample
            # uniques, about dankar * pi / sample_uniques are population uniques
            "sample_uniques_population_unique": None
            if math.isnan(self.dankar) or not self.sample_uniques
            else min(1.0, self.dankar * self.sampling_fraction / self.sample_uniques),
            "models": {
                name: {
                    "uniques": num(v),
                    "fraction": frac(v),
                    "note": None if not math.isnan(v) else _NO_ESTIMATE[name],
                }
                for name, v in (("pitman", self.pitman), ("zayatz", self.zayatz), ("snb", self.snb))
            },
        }


def estimate_uniqueness(sizes: IntArray, population: int) -> UniquenessEstimate:
    """All three models and Dankar et al.'s decision rule for class sizes ``sizes``."""
    n = int(sizes.sum())
    if population < n:
        raise ValueError("the population cannot be smaller than the sample")
    c1 = int(np.count_nonzero(sizes == 1))
    pi = n / population
    if c1 == 0:
        return UniquenessEstimate(population, pi, 0, 0.0, 0.0, 0.0, 0.0, "none")
    p, z, s = pitman(sizes, population), zayatz(sizes, population), snb(sizes, population)
    if pi <= 0.1:
        chosen, model = (p, "pitman") if _ok(p) else (z, "zayatz")
    elif _ok(s) and not (_ok(z) and z < s):
        chosen, model = s, "snb"
    else:
        chosen, model = z, "zayatz"
    return UniquenessEstimate(population, pi, c1, p, z, s, chosen, model)


def _ok(x: float) -> bool:
    return not math.isnan(x) and x != 0.0
