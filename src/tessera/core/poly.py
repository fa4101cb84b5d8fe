"""Polynomials over any :class:`~tessera.core.fields.Field`.

A polynomial is a list of coefficients, lowest degree first: ``[a0, a1, a2]`` is
``a0 + a1*x + a2*x^2``.  The zero polynomial is ``[]``; functions return trimmed lists
(no trailing zeros) unless they say otherwise.  Everything here is scalar Python; bulk
byte-string arithmetic lives in :mod:`tessera.core.robust` and the Shamir modules.

>>> from tessera.core.fields import GF256, PrimeField
>>> F = PrimeField(97)
>>> evaluate(F, [5, 3, 2], 4)  # 5 + 3*4 + 2*16
49
>>> interpolate(F, [(1, 10), (2, 19), (3, 32)])
[5, 3, 2]
>>> lagrange_coefficients(GF256, [1, 2, 3])
[1, 1, 1]
"""

from __future__ import annotations

from collections.abc import Sequence

from tessera.core.fields import Field

__all__ = [
    "add",
    "degree",
    "divmod_poly",
    "evaluate",
    "interpolate",
    "lagrange_coefficients",
    "lagrange_matrix",
    "mul",
    "scale",
    "sub",
    "trim",
]


def trim(coeffs: Sequence[int]) -> list[int]:
    """``coeffs`` without trailing zero coefficients."""
    end = len(coeffs)
    while end and coeffs[end - 1] == 0:
        end -= 1
    return list(coeffs[:end])


def degree(coeffs: Sequence[int]) -> int:
    """Degree of the polynomial; -1 for the zero polynomial."""
    return len(trim(coeffs)) - 1


def evaluate(field: Field, coeffs: Sequence[int], x: int) -> int:
    """f(x) by Horner's rule."""
    acc = 0
    for c in reversed(coeffs):
        acc = field.add(field.mul(acc, x), c)
    return acc


def add(field: Field, a: Sequence[int], b: Sequence[int]) -> list[int]:
    """a + b."""
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    out = list(longer)
    for i, c in enumerate(shorter):
        out[i] = field.add(out[i], c)
    return trim(out)


def sub(field: Field, a: Sequence[int], b: Sequence[int]) -> list[int]:
    """a - b."""
    out = list(a) + [0] * max(0, len(b) - len(a))
    for i, c in enumerate(b):
        out[i] = field.sub(out[i], c)
    return trim(out)


def scale(field: Field, a: Sequence[int], c: int) -> list[int]:
    """c * a for a scalar c."""
    return trim([field.mul(x, c) for x in a])


def mul(field: Field, a: Sequence[int], b: Sequence[int]) -> list[int]:
    """a * b (schoolbook)."""
    a, b = trim(a), trim(b)
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        if ai == 0:
            continue
        for j, bj in enumerate(b):
            out[i + j] = field.add(out[i + j], field.mul(ai, bj))
    return trim(out)


def divmod_poly(
    field: Field, num: Sequence[int], den: Sequence[int]
) -> tuple[list[int], list[int]]:
    """(quotient, remainder) of num / den; ZeroDivisionError if den is zero."""
    den = trim(den)
    if not den:
        raise ZeroDivisionError("polynomial division by zero")
    rem = trim(num)
    if len(rem) < len(den):
        return [], rem
    lead_inv = field.inv(den[-1])
    quot = [0] * (len(rem) - len(den) + 1)
    for shift in range(len(rem) - len(den), -1, -1):
        c = field.mul(rem[shift + len(den) - 1], lead_inv)
        quot[shift] = c
        if c:
            for j, dj in enumerate(den):
                rem[shift + j] = field.sub(rem[shift + j], field.mul(c, dj))
    return trim(quot), trim(rem[: len(den) - 1])


def _check_distinct(xs: Sequence[int]) -> None:
    if len(set(xs)) != len(xs):
        raise ValueError("x-coordinates must be distinct")


def lagrange_coefficients(field: Field, xs: Sequence[int], at: int = 0) -> list[int]:
    """Weights w_i with f(at) = sum(w_i * f(xs[i])) for every f of degree < len(xs).

    Raises ValueError if ``xs`` is empty or holds duplicates.
    """
    return lagrange_matrix(field, xs, [at])[0]


def lagrange_matrix(field: Field, xs: Sequence[int], ats: Sequence[int]) -> list[list[int]]:
    """One row of :func:`lagrange_coefficients` per point in ``ats``, in O(k^2 + k*len(ats)).

    Uses the barycentric form w_i(at) = L(at) * b_i / (at - x_i) with L = prod(X - x_j)
    and b_i = 1 / prod_{j != i}(x_i - x_j).
    """
    if not xs:
        raise ValueError("need at least one x-coordinate")
    xs = [field.add(0, x) for x in xs]  # canonical representatives (x mod p)
    ats = [field.add(0, at) for at in ats]
    _check_distinct(xs)
    bary = []
    for i, xi in enumerate(xs):
        den = 1
        for j, xj in enumerate(xs):
            if i != j:
                den = field.mul(den, field.sub(xi, xj))
        bary.append(field.inv(den))
    index = {x: i for i, x in enumerate(xs)}
    rows = []
    for at in ats:
        if at in index:
            row = [0] * len(xs)
            row[index[at]] = 1
            rows.append(row)
            continue
        diffs = [field.sub(at, x) for x in xs]
        whole = 1
        for d in diffs:
            whole = field.mul(whole, d)
        rows.append(
            [field.mul(field.mul(whole, b), field.inv(d)) for b, d in zip(bary, diffs, strict=True)]
        )
    return rows


def interpolate(field: Field, points: Sequence[tuple[int, int]]) -> list[int]:
    """The unique polynomial of degree < len(points) through ``points`` (trimmed).

    Raises ValueError on duplicate x-coordinates.
    """
    xs = [field.add(0, x) for x, _ in points]
    _check_distinct(xs)
    # Newton's divided differences, then expand the Newton form.
    coef = [y for _, y in points]
    n = len(points)
    for level in range(1, n):
        for i in range(n - 1, level - 1, -1):
            diff = field.sub(coef[i], coef[i - 1])
            coef[i] = field.mul(diff, field.inv(field.sub(xs[i], xs[i - level])))
    result: list[int] = []
    for i in range(n - 1, -1, -1):
        # result = result * (x - xs[i]) + coef[i]
        shifted = [0, *result]
        for j, c in enumerate(result):
            shifted[j] = field.sub(shifted[j], field.mul(c, xs[i]))
        shifted[0] = field.add(shifted[0], coef[i])
        result = shifted
    return trim(result)
