"""Syntactic privacy models measured on a :class:`ClassTable` (vectorised, no loops).

Definitions (q is a class's distribution of the sensitive attribute, p the table's):

* k-anonymity: the smallest class size.
* distinct l-diversity: the smallest number of distinct sensitive values in a class.
* entropy l-diversity: ``exp(min over classes of -sum q log q)`` (a real number; pycanon
  reports its integer part).
* recursive (c,l)-diversity (Machanavajjhala et al.): with a class's counts sorted in
  *descending* order r1 >= r2 >= ... >= rm, the class satisfies (c,l) iff
  ``r1 < c * (r_l + ... + r_m)``.  We report, for the given l, the bound
  ``c* = max r1 / (r_l + ... + r_m)``: the table is (c,l)-diverse exactly for c > c*.
  (pycanon 1.0 sorts the counts ascending, so its c differs; see docs/risk.md.)
* t-closeness: the largest Earth Mover's Distance between q and p.  *Ordered* distance
  for ordered attributes: ``1/(m-1) * sum_i |sum_{j<=i} (q_j - p_j)|``; *equal* distance
  for categorical ones: ``1/2 * sum_i |q_i - p_i|`` (Li et al. 2007, as in pycanon).
* delta-disclosure (Brickell & Shmatikov): ``max |log(q_i / p_i)|`` over values present
  in a class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.risk.classes import ClassTable, SensitiveHistograms

__all__ = [
    "DiversityProfile",
    "class_entropy",
    "delta_disclosure",
    "distinct_values",
    "diversity_profile",
    "k_anonymity",
    "recursive_c",
    "t_closeness_equal",
    "t_closeness_ordered",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def k_anonymity(table: ClassTable) -> int:
    """The smallest equivalence-class size."""
    return int(table.sizes.min())


def _hist(table: ClassTable) -> SensitiveHistograms:
    if table.sensitive is None:
        raise ValueError("this class table has no sensitive attribute")
    return table.sensitive


def distinct_values(table: ClassTable) -> IntArray:
    """Number of distinct sensitive values in every class."""
    h = _hist(table)
    return np.bincount(h.cls, minlength=table.num_classes).astype(np.int64)


def _q(table: ClassTable, h: SensitiveHistograms) -> FloatArray:
    return h.count / table.sizes[h.cls]


def class_entropy(table: ClassTable) -> FloatArray:
    """Shannon entropy (natural log) of the sensitive values in every class."""
    h = _hist(table)
    q = _q(table, h)
    ent = np.bincount(h.cls, weights=q * np.log(q), minlength=table.num_classes)
    return np.asarray(-ent, dtype=np.float64)


def recursive_c(table: ClassTable, ell: int) -> FloatArray:
    """Per class, r1 / (r_l + ... + r_m) with counts sorted descending (inf if < l values)."""
    if ell < 1:
        raise ValueError("l must be at least 1")
    h = _hist(table)
    order = np.lexsort((-h.count, h.cls))
    cls = h.cls[order]
    cnt = h.count[order]
    starts = np.searchsorted(cls, np.arange(table.num_classes))
    rank = np.arange(cls.size) - starts[cls]
    top = cnt[starts]
    tail = np.bincount(cls, weights=np.where(rank >= ell - 1, cnt, 0), minlength=table.num_classes)
    with np.errstate(divide="ignore"):
        return np.where(tail > 0, top / np.where(tail > 0, tail, 1), np.inf)


def t_closeness_equal(table: ClassTable) -> FloatArray:
    """Equal-distance EMD between every class's distribution and the table's."""
    h = _hist(table)
    q = _q(table, h)
    p = h.prior[h.value]
    # 1/2 (sum over the class's support |q-p| + sum of p outside it) = 1/2 (1 + sum(|q-p| - p))
    part = np.bincount(h.cls, weights=np.abs(q - p) - p, minlength=table.num_classes)
    return np.clip(0.5 * (1.0 + part), 0.0, 1.0)


def t_closeness_ordered(table: ClassTable) -> FloatArray:
    """Ordered-distance EMD between every class's distribution and the table's.

    The class's cumulative distribution Q is a step function, constant between two of
    its values; the table's cumulative P is non-decreasing, so the sum of |Q - P| over a
    run of indices splits at one ``searchsorted`` point and closes with prefix sums.
    """
    h = _hist(table)
    m = h.m
    nclass = table.num_classes
    if m <= 1:
        return np.zeros(nclass)
    cum_p = np.cumsum(h.prior)
    cum_p[-1] = 1.0
    pre = np.concatenate(([0.0], np.cumsum(cum_p)))  # pre[i] = sum_{j<i} cum_p[j]
    q = _q(table, h)
    # Within a class, Q after entry e: running sum of q.  Segments [v_e, v_{e+1}) carry
    # Q_e; the first segment [0, v_first) carries 0.
    csum = np.cumsum(q)
    starts = np.searchsorted(h.cls, np.arange(nclass))
    base = np.concatenate(([0.0], csum))[starts]
    level = csum - base[h.cls]
    nxt = np.empty_like(h.value)
    nxt[:-1] = h.value[1:]
    last = np.ones(h.cls.size, dtype=bool)
    last[:-1] = h.cls[1:] != h.cls[:-1]
    nxt[last] = m
    seg_lo = np.concatenate((np.zeros(nclass, dtype=np.int64), h.value))
    seg_hi = np.concatenate((h.value[starts], nxt))
    seg_c = np.concatenate((np.zeros(nclass), np.minimum(level, 1.0)))
    seg_cls = np.concatenate((np.arange(nclass, dtype=np.int64), h.cls))
    split = np.clip(np.searchsorted(cum_p, seg_c, side="left"), seg_lo, seg_hi)
    below = seg_c * (split - seg_lo) - (pre[split] - pre[seg_lo])
    above = (pre[seg_hi] - pre[split]) - seg_c * (seg_hi - split)
    total = np.bincount(seg_cls, weights=below + above, minlength=nclass)
    return np.maximum(total, 0.0) / (m - 1)


def delta_disclosure(table: ClassTable) -> FloatArray:
    """Per class, the largest |log(q_i / p_i)| over the values present in it."""
    h = _hist(table)
    q = _q(table, h)
    d = np.abs(np.log(q / h.prior[h.value]))
    starts = np.searchsorted(h.cls, np.arange(table.num_classes))
    return np.maximum.reduceat(d, starts)


@dataclass(frozen=True)
class DiversityProfile:
    """Per-class sensitive-attribute measures, computed once and shared by the report."""

    distinct: IntArray
    entropy: FloatArray
    t_ordered: FloatArray
    t_equal: FloatArray
    delta: FloatArray


def diversity_profile(table: ClassTable) -> DiversityProfile:
    """Every per-class diversity/closeness measure of ``table``."""
    return DiversityProfile(
        distinct=distinct_values(table),
        entropy=class_entropy(table),
        t_ordered=t_closeness_ordered(table),
        t_equal=t_closeness_equal(table),
        delta=delta_disclosure(table),
    )
