"""Robust reconstruction: Reed-Solomon decoding of Shamir shares (Berlekamp-Welch).

Shamir shares of a degree-(k-1) polynomial at m distinct points form a Reed-Solomon
codeword of length m and dimension k, minimum distance d = m - k + 1.  Hence:

* up to ``e = (m - k) // 2`` wrong values are **corrected and named** (unique decoding);
* up to ``m - k`` wrong values are always **detected** (the word is no codeword), but
  when more than ``e`` values are wrong the word may lie within distance ``e`` of a
  *different* codeword.  No decoder can tell that case apart from an honest one, so
  :func:`decode` then either raises :class:`UncorrectableError` or returns a polynomial
  that agrees with at least ``m - e`` of the points (never the true one).  It never
  returns a polynomial that disagrees with more than ``e`` points;
* with ``m - k + 1`` or more wrong values nothing can be promised.

:func:`decode` is generic over :class:`~tessera.core.fields.Field` (scalar, pure
Python).  :func:`find_bad_rows` and :func:`decode_bytes` handle byte strings over
GF(2^8): every column (byte position) of an ``(m, L)`` share matrix is one codeword.
They check all columns at once with numpy and run Berlekamp-Welch only on a column that
is inconsistent with the rows trusted so far, so a few corrupted rows cost a few
Berlekamp-Welch runs, not one per byte.

>>> from tessera.core.fields import PrimeField
>>> F = PrimeField(101)
>>> pts = [(x, (7 + 3 * x) % 101) for x in range(1, 6)]
>>> pts[2] = (3, 55)  # one corrupted share
>>> decode(F, pts, k=2)
Decoded(coeffs=[7, 3], bad_xs=[3])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.core import poly
from tessera.core.fields import GF256, Field
from tessera.errors import InsufficientSharesError, RecoveryError

__all__ = [
    "Decoded",
    "UncorrectableError",
    "decode",
    "decode_bytes",
    "find_bad_rows",
]

U8 = npt.NDArray[np.uint8]


class UncorrectableError(RecoveryError):
    """Shares are inconsistent and more are wrong than can be corrected."""

    code = "uncorrectable_shares"


@dataclass(frozen=True)
class Decoded:
    """A decoded polynomial (``k`` coefficients, lowest first) and the x of wrong points."""

    coeffs: list[int]
    bad_xs: list[int]


def _check_points(points: Sequence[tuple[int, int]], k: int) -> None:
    if k < 1:
        raise ValueError("k must be >= 1")
    xs = [x for x, _ in points]
    if len(set(xs)) != len(xs):
        raise ValueError("x-coordinates must be distinct")
    if len(points) < k:
        raise InsufficientSharesError(f"need at least {k} shares, got {len(points)}")


def _solve(field: Field, matrix: list[list[int]], ncols: int) -> list[int] | None:
    """One solution of the augmented system ``matrix`` (free variables 0), or None."""
    rows = [list(r) for r in matrix]
    pivots: list[int] = []
    r = 0
    for c in range(ncols):
        pivot = next((i for i in range(r, len(rows)) if rows[i][c] != 0), None)
        if pivot is None:
            continue
        rows[r], rows[pivot] = rows[pivot], rows[r]
        inv = field.inv(rows[r][c])
        rows[r] = [field.mul(v, inv) for v in rows[r]]
        for i in range(len(rows)):
            if i != r and rows[i][c] != 0:
                f = rows[i][c]
                rows[i] = [
                    field.sub(a, field.mul(f, b)) for a, b in zip(rows[i], rows[r], strict=True)
                ]
        pivots.append(c)
        r += 1
        if r == len(rows):
            break
    if any(row[ncols] != 0 for row in rows[r:]):
        return None
    solution = [0] * ncols
    for i, c in enumerate(pivots):
        solution[c] = rows[i][ncols]
    return solution


def _pad(coeffs: list[int], k: int) -> list[int]:
    return coeffs + [0] * (k - len(coeffs))


def decode(field: Field, points: Sequence[tuple[int, int]], k: int) -> Decoded:
    """Decode ``points`` of a polynomial of degree < k, correcting up to (m-k)//2 errors.

    Raises InsufficientSharesError when m < k, UncorrectableError when no polynomial of
    degree < k agrees with at least m - (m-k)//2 points, ValueError on duplicate x.
    """
    _check_points(points, k)
    pts = [(x, field.add(0, y)) for x, y in points]
    m = len(pts)
    # Fast path: the first k points determine a candidate; most inputs are clean.
    candidate = poly.interpolate(field, pts[:k])
    bad = [x for x, y in pts[k:] if poly.evaluate(field, candidate, x) != y]
    if not bad:
        return Decoded(_pad(candidate, k), [])
    e = (m - k) // 2
    if e == 0:
        raise UncorrectableError("shares are inconsistent and too few to name the bad ones")
    # Berlekamp-Welch: find E (monic, degree e) and Q (degree < e + k) with
    # Q(x_i) = y_i * E(x_i) for all i; then P = Q / E.
    nq = e + k
    ncols = nq + e
    system = []
    for x, y in pts:
        powers = [1]
        for _ in range(nq):
            powers.append(field.mul(powers[-1], x))
        row = powers[:nq] + [field.sub(0, field.mul(y, powers[j])) for j in range(e)]
        row.append(field.mul(y, powers[e]))
        system.append(row)
    solution = _solve(field, system, ncols)
    if solution is None:
        raise UncorrectableError(f"more than {e} of {m} shares are wrong")
    q = solution[:nq]
    err_locator = [*solution[nq:], 1]
    p, rem = poly.divmod_poly(field, q, err_locator)
    if rem or len(p) > k:
        raise UncorrectableError(f"more than {e} of {m} shares are wrong")
    bad = sorted(x for x, y in pts if poly.evaluate(field, p, x) != y)
    if len(bad) > e:
        raise UncorrectableError(f"more than {e} of {m} shares are wrong")
    return Decoded(_pad(p, k), bad)


# ---- GF(2^8) byte strings ---------------------------------------------------------


@functools.cache
def _mul_table() -> U8:
    table = np.array(GF256.mul_table(), dtype=np.uint8)
    table.setflags(write=False)
    return table


def _combine(weights: Sequence[int], rows: U8) -> U8:
    """sum_j weights[j] * rows[j] over GF(2^8), row-wise (rows has shape (len(w), c))."""
    table = _mul_table()
    out = np.zeros(rows.shape[1], dtype=np.uint8)
    for w, row in zip(weights, rows, strict=True):
        if w == 1:
            out ^= row
        elif w:
            out ^= table[w][row]
    return out


def _check_rows(xs: Sequence[int], rows: U8, k: int) -> None:
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != 2:
        raise ValueError("rows must be a 2-D uint8 array")
    if len(xs) != rows.shape[0]:
        raise ValueError("need one x per row")
    if any(not 0 <= x <= 255 for x in xs):
        raise ValueError("x-coordinates must be in 0..255")
    _check_points([(x, 0) for x in xs], k)


@dataclass
class _Analysis:
    bad: npt.NDArray[np.bool_]  # (m, L): True where a row is wrong in that column
    bases: list[tuple[list[int], npt.NDArray[np.intp]]]  # trusted k rows per column group


def _analyse(xs: Sequence[int], rows: U8, k: int) -> _Analysis:
    m, length = rows.shape
    e = (m - k) // 2
    bad = np.zeros((m, length), dtype=bool)
    bases: list[tuple[list[int], npt.NDArray[np.intp]]] = []
    unresolved = np.arange(length, dtype=np.intp)
    if m == k:
        bases.append((list(range(k)), unresolved))
        return _Analysis(bad, bases)
    basis = list(range(k))
    suspects: set[int] = set()
    while unresolved.size:
        sub = rows[:, unresolved]
        bxs = [xs[j] for j in basis]
        mismatch = np.zeros(sub.shape, dtype=bool)
        for r in range(m):
            if r not in basis:
                w = poly.lagrange_coefficients(GF256, bxs, at=xs[r])
                mismatch[r] = _combine(w, sub[basis]) != sub[r]
        ok = mismatch.sum(axis=0) <= e
        if ok.any():
            done = unresolved[ok]
            bad[:, done] = mismatch[:, ok]
            bases.append((basis, done))
            suspects.update(np.flatnonzero(mismatch[:, ok].any(axis=1)).tolist())
            unresolved = unresolved[~ok]
        if not unresolved.size:
            break
        # Name the bad rows of the first unresolved column, then retry the rest with a
        # basis avoiding every row known to be bad somewhere.
        col = int(unresolved[0])
        if e == 0:
            raise UncorrectableError("shares are inconsistent and too few to name the bad ones")
        try:
            found = decode(GF256, [(x, int(v)) for x, v in zip(xs, rows[:, col], strict=True)], k)
        except UncorrectableError:
            raise UncorrectableError(f"byte {col}: more than {e} of {m} shares are wrong") from None
        col_bad = {xs.index(x) for x in found.bad_xs}
        suspects.update(col_bad)
        trusted = [r for r in range(m) if r not in suspects]
        if len(trusted) < k:
            trusted = [r for r in range(m) if r not in col_bad]
        basis = trusted[:k]
    return _Analysis(bad, bases)


def find_bad_rows(xs: Sequence[int], rows: U8, k: int) -> list[int]:
    """Indices of the rows of ``rows`` (row j = share at x = xs[j]) wrong in any column.

    Each column must have at most (m-k)//2 wrong rows, else UncorrectableError; with
    m == k nothing can be checked and [] is returned.
    """
    _check_rows(xs, rows, k)
    analysis = _analyse(list(xs), rows, k)
    return np.flatnonzero(analysis.bad.any(axis=1)).tolist()


def decode_bytes(xs: Sequence[int], rows: U8, k: int) -> tuple[bytes, list[int]]:
    """(the secret at x = 0, indices of wrong rows), correcting (m-k)//2 per column."""
    _check_rows(xs, rows, k)
    xs = list(xs)
    analysis = _analyse(xs, rows, k)
    secret = np.zeros(rows.shape[1], dtype=np.uint8)
    for basis, cols in analysis.bases:
        w = poly.lagrange_coefficients(GF256, [xs[j] for j in basis], at=0)
        secret[cols] = _combine(w, rows[basis][:, cols])
    return secret.tobytes(), np.flatnonzero(analysis.bad.any(axis=1)).tolist()
