"""Output checks (statistical disclosure control, SACRO/ACRO rules) inside the MPC.

When a table's policy asks for output checks, the custodian node writes ``checks.json``
into the job folder before the party starts (read with
:meth:`tessera.mpc.party.PartyContext.checks`)::

    {"version": 1, "threshold": 10, "p_percent": 10.0, "nk_n": 2, "nk_k": 90.0,
     "zeros": true, "history": ["history-0.npy", ...]}

(missing keys take these ACRO defaults; ``history`` defaults to none).  The program then
counts, per rule, the result cells that fail it, inside the MPC; only these counts are
opened, to every party, and put in the released result's meta as ``meta["checks"]``:

- ``threshold``: groups with 0 < COUNT(*) < threshold, over every group (the minimum
  group size suppression does not matter);
- ``zeros``: groups with COUNT(*) = 0 (not SQL's NULL group of unrecorded values), when
  ``zeros`` is true and there is more than one group (else 0);
- ``dominance``: (measure, group) cells of every secure SUM of an integer or decimal
  column (SUM and AVG, and the sum behind VARIANCE/STDDEV) that fail the p% rule
  (T > 0 and T - x1 - x2 < p/100 * x1) or the n,k rule (n = 1 or 2; T > 0 and
  x1 [+ x2] > k/100 * T), where x1 >= x2 are the two largest contributions of the
  selected non-NULL rows of the group (x2 = 0 for a single row) and T their total.  The
  rules assume non-negative contributions: a column whose declared minimum is negative
  is not checked (counts 0).  A cell that cannot be checked (the job lacks the column's
  thermometer parts, or its magnitudes do not fit a secure comparison: see
  :func:`_layout`) counts as failing.  None for the knn job (not computed);
- ``differencing``: earlier cohorts h of the same researcher on the table (``history``)
  with 0 < |sel xor h| < threshold, where |sel xor h| = sum(sel) + sum(h) - 2 sel.h; a
  cohort longer than the table is not comparable and not counted.  None for a join and
  for the knn job (no cohort is kept).

A single-table SQL job also writes this party's share of its cohort selection (the
WHERE selection over the table's rows) to ``cohort.npy`` for later differencing checks.

Dominance without comparing row values: x1 is MAX per group, found digit by digit from
the thermometer parts as :func:`tessera.mpc.sql_program._extreme` does, with the "keep"
step done for the last digit too, which gives the rows holding x1; if two or more do,
x2 = x1, else x2 is MAX over the other rows (a second walk).  The rest R = T - x1 - x2 is
a sum of non-negative terms (per digit: the sum of that digit over the other rows; and
the minimum times their number); each term is saturated at the least count that makes
R pass every rule whatever x1 and x2 are, and R is clamped the same way for a rule
whose comparison would still be too wide, so that every comparison stays exact within
the bits a secure comparison allows (prime bits - security parameter - 2: 29 with the
61-bit field).  The rules are then compared as integers (p and k as exact fractions).

Cost (N rows, G groups, H earlier cohorts), on top of the query: threshold and zeros, 2G
comparisons of counts; differencing, one resharing per cohort (none when the selection
is public) and 2H comparisons; dominance, per summed column with D digits, about twice a
MAX of it (two digit walks: per digit G x (base-1) inner products and small comparisons,
a G x N "keep" product and G N multiplications), a G x D inner product for the digit
sums and about (D + 6) G comparisons; then one output round opens the counts.  Measured
(three parties on one 2-core machine, 5,000 rows, 4 groups, WHERE on a small integer,
SUM of a 5-digit and AVG of a 4-digit column): about 1 s of CPU per party instead of
0.05 s, 3 s wall instead of 0.7 s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from tessera.mpc.sql_program import Value, _bits, _Eval, _times_local, _walk

__all__ = [
    "CheckSpec",
    "count_failures",
    "knn_checks",
    "open_counts",
    "rules_of",
    "sql_checks",
    "summed_columns",
]

_DEFAULTS: dict[str, Any] = {
    "threshold": 10,
    "p_percent": 10.0,
    "nk_n": 2,
    "nk_k": 90.0,
    "zeros": True,
}
_SUMMABLE = ("integer", "decimal")


def _percent(value: Any, what: str) -> Fraction:
    """``value`` percent as an exact fraction (e.g. 10.0 -> 1/10)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SystemExit(f"checks.json: {what} must be a number")
    if value < 0:
        raise SystemExit(f"checks.json: {what} must not be negative")
    return Fraction(str(value)).limit_denominator(10**6) / 100


@dataclass(frozen=True)
class CheckSpec:
    """The rules' parameters: threshold, p and k as fractions (p_percent / 100), n, zeros."""

    threshold: int
    p: Fraction
    nk_n: int
    k: Fraction
    zeros: bool

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CheckSpec:
        """The settings in ``checks.json``; SystemExit (the job fails) if malformed."""
        d = {**_DEFAULTS, **{k: v for k, v in doc.items() if k in _DEFAULTS}}
        threshold, n = d["threshold"], d["nk_n"]
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise SystemExit("checks.json: threshold must be a non-negative integer")
        if isinstance(n, bool) or n not in (1, 2):
            raise SystemExit("checks.json: nk_n must be 1 or 2")
        if not isinstance(d["zeros"], bool):
            raise SystemExit("checks.json: zeros must be true or false")
        p, k = _percent(d["p_percent"], "p_percent"), _percent(d["nk_k"], "nk_k")
        return cls(threshold, p, n, k, d["zeros"])


def _ge0(mpc: Any, x: Any, bits: int) -> Any:
    """Secure [x >= 0] elementwise, for |x| < 2^(bits-1)."""
    return 1 - mpc.np_sgn(x, l=bits, LT=True)


# ----- group sizes ------------------------------------------------------------------
def count_failures(
    mpc: Any, counts: Any, spec: CheckSpec, rows: int, labelled: Sequence[bool] | None = None
) -> tuple[Any, Any]:
    """Secure numbers (arrays of one) of groups failing the threshold and zeros rules,
    for the secure group sizes ``counts`` (each in [0, rows]); 0 where a rule cannot
    fail.  ``labelled``: which groups the zeros rule looks at (an empty group of rows
    whose value was not recorded, SQL's NULL group, tells nothing: it is not counted).
    One batch of 2 G small comparisons."""
    gn = counts.shape[0]
    low = min(spec.threshold, rows + 1)  # no group is larger than rows
    want_zeros = spec.zeros and gn > 1
    if low <= 1 and not want_zeros:
        return 0, 0
    shifts = [1, low] if low > 1 else [1]
    ge = _ge0(mpc, mpc.np_concatenate([counts - s for s in shifts]), _bits(rows + 1))
    nonempty = ge[:gn]
    small = mpc.np_sum(nonempty - ge[gn:], keepdims=True) if low > 1 else 0
    zeros: Any = 0
    if want_zeros:
        mask = np.ones(gn, dtype=np.int64) if labelled is None else np.array(labelled, np.int64)
        zeros = int(mask.sum()) - mpc.np_sum(nonempty * mask, keepdims=True)
    return small, zeros


# ----- differencing ---------------------------------------------------------------------
def _differencing(ev: _Eval, sel: Value, spec: CheckSpec) -> Any:
    """Secure number of earlier cohorts h with 0 < |sel xor h| < threshold."""
    hist = [h for h in ev.ctx.history(ev.rows) if h is not None]
    low = min(spec.threshold, ev.rows + 1)
    if not hist or low <= 1:
        return 0
    mpc, p, n = ev.mpc, ev.ctx.prime, len(hist)
    hmat = np.stack(hist, axis=1)  # rows x H: this party's shares
    hsum = ev.ctx.shared(np.mod(hmat.astype(object).sum(axis=0), p))
    if ev.public(sel):
        dot = ev.ctx.shared(np.mod(sel.astype(object) @ hmat.astype(object), p))
        d = hsum - dot * 2 + int(sel.sum())
    else:  # an inner product of two secret vectors: one resharing per cohort
        dot = _times_local(ev, sel.reshape(1, ev.rows), hmat).reshape(n)
        d = hsum - dot * 2 + mpc.np_sum(sel, keepdims=True)
    ge = _ge0(mpc, mpc.np_concatenate([d - 1, d - low]), _bits(ev.rows + 1))
    return mpc.np_sum(ge[:n] - ge[n:], keepdims=True)


async def _cohort_shares(ev: _Eval, sel: Value) -> np.ndarray:
    """This party's shares of the selection (a public one is its own constant sharing)."""
    if ev.public(sel):
        return np.asarray(np.mod(sel.astype(np.int64), ev.ctx.prime), dtype=np.int64)
    share = await ev.mpc.gather(sel)
    return np.array([int(v) for v in np.asarray(share.value, dtype=object)], dtype=np.int64)


# ----- dominance ----------------------------------------------------------------------
def summed_columns(plan: Any) -> list[str]:
    """The integer/decimal columns a measure sums (``alias.column``), in plan order."""
    refs: list[str] = []
    for m in plan.measures:
        if m.kind != "sum" or m.part is None or not m.part.endswith(".val"):
            continue
        ref = m.part.removesuffix(".val")
        info = plan.cols.get(ref)
        if info is not None and info.kind in _SUMMABLE and ref not in refs:
            refs.append(ref)
    return refs


Rule = tuple[int, int, int]  # (a_r, a_1, a_2): a cell fails iff a_r R + a_1 x1 + a_2 x2 < 0


def rules_of(spec: CheckSpec) -> tuple[list[Rule], bool]:
    """The dominance rules as integer comparisons on R = T - x1 - x2, x1 and x2, and
    whether every cell with T > 0 fails (k = 0).  Rules that cannot fail are left out."""
    pa, pb = spec.p.numerator, spec.p.denominator
    ka, kb = spec.k.numerator, spec.k.denominator
    kc = kb - ka
    rules: list[Rule] = []
    if pa > 0:  # p%: R < p x1
        rules.append((pb, -pa, 0))
    if ka > 0 and kc > 0:  # n,k: x1 [+ x2] > k T, T = R + x1 + x2
        rules.append((ka, -kc, -kc) if spec.nk_n == 2 else (ka, -kc, ka))
    return rules, ka == 0


def _need(rule: Rule, top: int) -> int:
    """The least rest R that passes ``rule`` whatever top >= x1 >= x2 >= 0 are."""
    ar, a1, a2 = rule
    worst = max(0, -a1, -(a1 + a2)) * top
    return -(-worst // ar)


@dataclass(frozen=True)
class _Layout:
    """The public shape of one column's check: digits, saturation caps, bit lengths."""

    ref: str
    low: int  # the column's minimum (>= 0): every contribution is low + offset
    steps: list[tuple[str, int]]  # thermometer part and base per digit, most significant first
    weights: list[int]  # weight of each term: the digits' place values, then low
    caps: list[int | None]  # per term: saturate at this count (None: never needed)
    clamps: list[int | None]  # per rule: compare min(R, this) instead of R (None: R)
    l_small: int  # comparisons of row counts and digit sums
    l_sat: int  # saturation and clamping comparisons
    l_rule: int  # the rules' comparisons


def _saturation(
    need: int, weights: list[int], bounds: list[int]
) -> tuple[list[int | None], int, int]:
    """Caps per term (a term at its cap makes R >= need), the comparisons' largest
    magnitude and the largest rest R once saturated."""
    caps: list[int | None] = []
    widest, rest = 1, 0
    for w, bound in zip(weights, bounds, strict=True):
        cap = -(-need // w)
        if bound > cap:
            caps.append(cap)
            widest = max(widest, bound, cap)
            rest += w * cap
        else:
            caps.append(None)
            rest += w * bound
    return caps, widest, rest


def _clamps(rules: list[Rule], top: int, rest: int, lmax: int) -> tuple[list[int | None], int]:
    """Per rule: R clamped at the rule's need when R's range is too wide for its
    comparison (None: not needed); and the largest magnitude a rule compares."""
    clamps: list[int | None] = []
    widest = 1
    for rule in rules:
        ar, a1, a2 = rule
        others = (abs(a1) + abs(a2)) * top
        if _bits(ar * rest + others) <= lmax:
            clamps.append(None)
            widest = max(widest, ar * rest + others)
        else:
            need = _need(rule, top)
            clamps.append(need)
            widest = max(widest, ar * need + others)
    return clamps, widest


def _layout(ev: _Eval, ref: str, rules: list[Rule]) -> _Layout | None:
    """The check's layout, or None when it cannot be computed (counts as failing): the
    job lacks the thermometer parts, or a comparison would need more bits than the field
    allows (prime bits - security parameter - 2)."""
    info = ev.plan.cols[ref]
    if info.digits:
        steps = [(f"{ref}.th{j}", 16) for j in range(info.digits)]
    else:
        steps = [(f"{ref}.th", info.max - info.min + 1)] if info.max > info.min else []
    if any(part not in ev.raw for part, _ in [*steps, (f"{ref}.valid", 0)]):
        return None
    n = len(steps)
    weights = [16 ** (n - 1 - j) if info.digits else 1 for j in range(n)]
    bounds = [(base - 1) * ev.rows for _, base in steps]
    if info.min > 0:  # the rest's count of rows, weighted by the minimum
        weights.append(info.min)
        bounds.append(ev.rows)
    top = info.max
    need = max([1, *(_need(r, top) for r in rules)])
    caps, sat_widest, rest = _saturation(need, weights, bounds)
    lmax = ev.ctx.prime.bit_length() - ev.mpc.options.sec_param - 2
    clamps, rule_widest = _clamps(rules, top, rest, lmax)
    if any(c is not None for c in clamps):
        sat_widest = max(sat_widest, rest)
    digit_sum = sum(base - 1 for _, base in steps)
    layout = _Layout(
        ref,
        info.min,
        steps,
        weights,
        caps,
        clamps,
        _bits(max(ev.rows, digit_sum)),
        _bits(sat_widest),
        _bits(rule_widest),
    )
    return layout if max(layout.l_small, layout.l_sat, layout.l_rule) <= lmax else None


def _digit_values(ev: _Eval, layout: _Layout) -> np.ndarray:
    """This party's shares (rows x digits, int64) of every row's digits: th row sums."""
    cols = []
    for part, _ in layout.steps:
        th = ev.raw_int(part)  # shares in [0, p) < 2^61: split to sum without overflow
        lo = (th & 0xFFFFFFFF).sum(axis=1).astype(object)
        hi = (th >> 32).sum(axis=1).astype(object)
        cols.append(np.mod(hi * (1 << 32) + lo, ev.ctx.prime).astype(np.int64))
    return np.stack(cols, axis=1)


def _largest_two(ev: _Eval, layout: _Layout, c: Value) -> tuple[Value, ...]:
    """Digits of x1 and x2, per-digit sums of the group (G x digits) and the ties of x1."""
    mpc = ev.mpc
    d1, top = _walk(ev, layout.ref, c, "max", keep_last=True)
    d2, _ = _walk(ev, layout.ref, c - top, "max")  # MAX over the other rows
    sums = _times_local(ev, c, _digit_values(ev, layout))
    ties = mpc.np_sum(top, axis=1)
    return mpc.np_stack(d1, axis=1), mpc.np_stack(d2, axis=1), sums, ties


def _terms(ev: _Eval, layout: _Layout, c: Value) -> tuple[Value, Value, Value, list[Value]]:
    """x1, x2, [T > 0] and the rest's terms (one vector over groups per weight)."""
    mpc = ev.mpc
    gn = c.shape[0]
    size = mpc.np_sum(c, axis=1)  # selected non-NULL rows per group
    shifted: list[Value] = []
    first: Value = None
    second: Value = None
    sums: Value = None
    if layout.steps:
        first, second, sums, ties = _largest_two(ev, layout, c)
        shifted.append(ties - 2)
    if layout.low > 0:
        shifted += [size - 1, size - 2]
    else:  # [x1 > 0]: some digit of x1 is not 0
        shifted.append(first @ np.ones(len(layout.steps), dtype=np.int64) - 1)
    ge = _ge0(mpc, mpc.np_concatenate(shifted), layout.l_small).reshape(len(shifted), gn)
    x1: Value = 0
    x2: Value = 0
    rest: list[Value] = []
    if layout.steps:
        ties2 = ge[0].reshape(gn, 1)  # x1 held by two rows or more: x2 = x1
        chosen = second + ties2 * (first - second)
        w = np.array(layout.weights[: len(layout.steps)], dtype=object)
        x1, x2 = first @ w, chosen @ w
        left = sums - first - chosen
        rest = [left[:, j] for j in range(len(layout.steps))]
    if layout.low > 0:
        one, two = ge[-2], ge[-1]  # the group has a row; two rows
        x1, x2 = x1 + one * layout.low, x2 + two * layout.low
        rest.append(size - one - two)
        return x1, x2, one, rest
    return x1, x2, ge[-1], rest


def _rest_sum(ev: _Eval, layout: _Layout, rest: list[Value]) -> Value:
    """R with every term saturated at its cap (exact when R is below the rules' need)."""
    mpc = ev.mpc
    total: Value = 0
    capped = [(t, w, cap) for t, w, cap in zip(rest, layout.weights, layout.caps, strict=True)]
    plain = [(t, w) for t, w, cap in capped if cap is None]
    for t, w in plain:
        total = total + t * w
    sat = [(t, w, cap) for t, w, cap in capped if cap is not None]
    if sat:
        x = mpc.np_stack([t for t, _, _ in sat], axis=1)  # G x S
        caps = np.array([cap for _, _, cap in sat], dtype=object)
        diff = x - caps
        below = mpc.np_sgn(diff, l=layout.l_sat, LT=True)  # [term < cap]
        kept = below * diff + caps  # min(term, cap)
        total = total + kept @ np.array([w for _, w, _ in sat], dtype=object)
    return total


def _column_failures(ev: _Eval, ref: str, sel: Value, groups: list[Value], spec: CheckSpec) -> Any:
    """Secure number of groups whose sum of ``ref`` fails dominance (see the module)."""
    mpc = ev.mpc
    info = ev.plan.cols[ref]
    rules, always = rules_of(spec)
    if info.min < 0 or info.max == 0 or not (rules or always):
        return 0  # not non-negative / every contribution is 0 / no rule can fail
    layout = _layout(ev, ref, [] if always else rules)
    if layout is None:
        return len(groups)  # cannot be checked: every cell counts as failing
    sv = ev.mul(sel, ev.valid(ref))
    c = mpc.np_stack([ev.secure(ev.mul(sv, g)) for g in groups])  # G x rows
    x1, x2, positive, rest = _terms(ev, layout, c)
    if always:  # k = 0: every cell with T > 0 fails
        return mpc.np_sum(positive, keepdims=True)
    r = _rest_sum(ev, layout, rest)
    return mpc.np_sum(positive * _rules_fail(ev, layout, rules, r, x1, x2), keepdims=True)


def _rules_fail(
    ev: _Eval, layout: _Layout, rules: list[Rule], r: Value, x1: Value, x2: Value
) -> Value:
    """[some rule fails] per group, from the (saturated) rest r and x1, x2."""
    mpc = ev.mpc
    clamped = [(i, cap) for i, cap in enumerate(layout.clamps) if cap is not None]
    rs = [r] * len(rules)
    if clamped:  # min(r, need of the rule), for rules whose range is too wide
        diffs = [r - cap for _, cap in clamped]
        below = mpc.np_sgn(mpc.np_concatenate(diffs), l=layout.l_sat, LT=True)
        below = below.reshape(len(clamped), -1)
        for n, (i, cap) in enumerate(clamped):
            rs[i] = below[n] * diffs[n] + cap
    xs = [ri * ar + x1 * a1 + x2 * a2 for ri, (ar, a1, a2) in zip(rs, rules, strict=True)]
    lt = mpc.np_sgn(mpc.np_concatenate(xs), l=layout.l_rule, LT=True).reshape(len(rules), -1)
    either = lt[0]
    for n in range(1, len(rules)):
        either = either + lt[n] - either * lt[n]
    return either


# ----- the programs' entry points ---------------------------------------------------------
async def open_counts(mpc: Any, named: Mapping[str, Any]) -> dict[str, int | None]:
    """``named`` with every secure count opened (to all parties, one output round)."""
    secret = [k for k, v in named.items() if v is not None and not isinstance(v, int)]
    out: dict[str, int | None] = {
        k: (None if v is None else int(v)) for k, v in named.items() if k not in secret
    }
    if secret:
        opened = await mpc.output(mpc.np_concatenate([named[k] for k in secret]))
        for key, value in zip(secret, np.asarray(opened).reshape(-1), strict=True):
            out[key] = int(value)
    return {k: out[k] for k in named}


async def sql_checks(
    ev: _Eval, doc: Mapping[str, Any], sel: Value, groups: list[Value], cells: Any
) -> dict[str, int | None]:
    """``meta["checks"]`` of a SQL job (``cells``: measures x groups, before any noise);
    writes this party's cohort share to ``cohort.npy`` for a single-table query."""
    spec = CheckSpec.from_dict(doc)
    labelled = [None not in labels for labels in ev.plan.combos()]
    small, zeros = count_failures(ev.mpc, cells[0], spec, ev.rows, labelled)  # 0: COUNT(*)
    dominance: Any = 0
    for ref in summed_columns(ev.plan):
        dominance = dominance + _column_failures(ev, ref, sel, groups, spec)
    single = ev.plan.join is None
    differencing = _differencing(ev, sel, spec) if single else None
    if single:
        ev.ctx.write_cohort(await _cohort_shares(ev, sel))
    named = {
        "threshold": small,
        "dominance": dominance,
        "zeros": zeros,
        "differencing": differencing,
    }
    return await open_counts(ev.mpc, named)


async def knn_checks(mpc: Any, doc: Mapping[str, Any], counts: Any, rows: int) -> dict[str, Any]:
    """``meta["checks"]`` of a recommendation: threshold and zeros on the per-treatment
    neighbour ``counts``; dominance and differencing are not computed (None)."""
    spec = CheckSpec.from_dict(doc)
    small, zeros = count_failures(mpc, counts, spec, rows)
    named = {"threshold": small, "dominance": None, "zeros": zeros, "differencing": None}
    return await open_counts(mpc, named)
