"""Robust reconstruction: Reed-Solomon decoding of Shamir shares.

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
Python) and uses Gao's algorithm, which decodes exactly what Berlekamp-Welch decodes
(unique decoding up to ``e`` errors) in O(m^2) field operations instead of O(m^3).

:func:`find_bad_rows` and :func:`decode_bytes` handle byte strings over GF(2^8): every
column (byte position) of an ``(m, L)`` share matrix is one codeword.  They predict every
row of every column from ``k`` trusted rows at once with numpy (table lookups), accept
each column that agrees with the prediction in all but at most ``e`` rows (that is its
unique decoding), and run :func:`decode` only on a column that is still unresolved,
then retry the rest with a basis avoiding the rows it named.  A few corrupted rows thus
cost a few decoder runs, not one per byte.

>>> from tessera.core.fields import PrimeField
>>> F = PrimeField(101)
>>> pts = [(x, (7 + 3 * x) % 101) for x in range(1, 6)]
>>> pts[2] = (3, 55)  # one corrupted share
>>> decode(F, pts, k=2)
Decoded(coeffs=[7, 3], bad_xs=[3])
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.core import poly
from tessera.core.fields import GF256, Field
from tessera.errors import InsufficientSharesError, RecoveryError

__all__ = [
    "Decoded",
    "Resolution",
    "UncorrectableError",
    "decode",
    "decode_bytes",
    "find_bad_rows",
    "interpolate_bytes",
    "resolve_columns",
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


def _gao(field: Field, pts: Sequence[tuple[int, int]], k: int) -> list[int] | None:
    """Gao's decoder (an O(m^2) equivalent of Berlekamp-Welch), or None on failure.

    With g0 = prod(X - x_i) and g1 the interpolant of all points, run the extended
    Euclidean algorithm on (g0, g1) until the remainder g has degree < (m + k) / 2;
    with v the cofactor of g1 at that step, the message is g / v if v divides g.
    """
    m = len(pts)
    g0: list[int] = [1]
    for x, _ in pts:
        g0 = poly.mul(field, g0, [field.sub(0, x), 1])
    r_prev, r = g0, poly.interpolate(field, pts)
    v_prev: list[int] = []
    v: list[int] = [1]
    while 2 * len(r) - 2 >= m + k:  # deg r >= (m + k) / 2
        q, rem = poly.divmod_poly(field, r_prev, r)
        r_prev, r = r, rem
        v_prev, v = v, poly.sub(field, v_prev, poly.mul(field, q, v))
    f, rem = poly.divmod_poly(field, r, v)
    if rem or len(f) > k:
        return None
    return f


def _pad(coeffs: list[int], k: int) -> list[int]:
    return coeffs + [0] * (k - len(coeffs))


def decode(field: Field, points: Sequence[tuple[int, int]], k: int) -> Decoded:
    """Decode ``points`` of a polynomial of degree < k, correcting up to (m-k)//2 errors.

    Raises InsufficientSharesError when m < k, UncorrectableError when no polynomial of
    degree < k agrees with at least m - (m-k)//2 points, ValueError on duplicate x.
    """
    _check_points(points, k)
    # Canonical representatives (reduced mod p); GF(2^8) rejects values outside 0..255.
    pts = [(field.add(0, x), field.add(0, y)) for x, y in points]
    if any(not (0 <= x < field.order and 0 <= y < field.order) for x, y in pts):
        raise ValueError("points must be field elements")
    _check_points(pts, k)
    m = len(pts)
    # Fast path: the first k points determine a candidate; most inputs are clean.
    candidate = poly.interpolate(field, pts[:k])
    bad = [x for x, y in pts[k:] if poly.evaluate(field, candidate, x) != y]
    if not bad:
        return Decoded(_pad(candidate, k), [])
    e = (m - k) // 2
    if e == 0:
        raise UncorrectableError("shares are inconsistent and too few to name the bad ones")
    p = _gao(field, pts, k)
    if p is None:
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


# Bound on the (targets x basis x columns) product tensor built by _predict.
_PREDICT_CHUNK = 1 << 22


def _predict(xs: Sequence[int], basis: Sequence[int], sub: U8) -> U8:
    """Every row of ``sub`` as predicted by interpolating its rows ``basis``."""
    table = _mul_table()
    weights = np.array(
        poly.lagrange_matrix(GF256, [xs[j] for j in basis], xs), dtype=np.uint8
    )  # (m, k)
    base = sub[list(basis)]  # (k, c)
    m, k = weights.shape
    out = np.empty_like(sub)
    step = max(1, _PREDICT_CHUNK // max(1, m * k))
    for lo in range(0, sub.shape[1], step):
        products = table[weights[:, :, None], base[None, :, lo : lo + step]]
        out[:, lo : lo + step] = np.bitwise_xor.reduce(products, axis=1)
    return out


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


@dataclass(frozen=True)
class Resolution:
    """Per-column decoding of an (m, L) share matrix.

    ``bad[r, c]`` is True where row r is wrong in column c; ``bases`` lists groups of
    columns with ``k`` rows that are correct in every column of the group.
    """

    bad: npt.NDArray[np.bool_]
    bases: list[tuple[list[int], npt.NDArray[np.intp]]]

    def bad_rows(self) -> list[int]:
        """Rows wrong in at least one column."""
        return [int(r) for r in np.flatnonzero(self.bad.any(axis=1))]


Mismatches = Callable[[list[int], npt.NDArray[np.intp]], npt.NDArray[np.bool_]]


def resolve_columns(
    field: Field,
    xs: Sequence[int],
    k: int,
    length: int,
    mismatches: Mismatches,
    column: Callable[[int], list[int]],
) -> Resolution:
    """Decode every column of an (m, length) share matrix, each a codeword at ``xs``.

    ``mismatches(basis, cols)`` returns an (m, len(cols)) mask of the entries that differ
    from the interpolation of rows ``basis`` (k row indices) in columns ``cols``;
    ``column(c)`` returns column c's m values.  Vectorised passes do the bulk; each
    column still unresolved is decoded alone and names rows to avoid in the next basis.
    Raises UncorrectableError when some column has more than (m-k)//2 wrong rows.
    """
    m = len(xs)
    e = (m - k) // 2
    bad = np.zeros((m, length), dtype=bool)
    bases: list[tuple[list[int], npt.NDArray[np.intp]]] = []
    unresolved = np.arange(length, dtype=np.intp)
    basis = list(range(k))
    if m == k:
        return Resolution(bad, [(basis, unresolved)])
    suspects: set[int] = set()
    while unresolved.size:
        mismatch = mismatches(basis, unresolved)
        ok = mismatch.sum(axis=0) <= e
        if ok.any():
            # Agreeing with m - e rows makes the prediction the column's unique decoding.
            done = unresolved[ok]
            bad[:, done] = mismatch[:, ok]
            bases.append((basis, done))
            suspects.update(np.flatnonzero(mismatch[:, ok].any(axis=1)).tolist())
            unresolved = unresolved[~ok]
        if not unresolved.size:
            break
        col = int(unresolved[0])
        if e == 0:
            raise UncorrectableError("shares are inconsistent and too few to name the bad ones")
        try:
            found = decode(field, list(zip(xs, column(col), strict=True)), k)
        except UncorrectableError:
            raise UncorrectableError(
                f"position {col}: more than {e} of {m} shares are wrong"
            ) from None
        position = {x: r for r, x in enumerate(xs)}
        col_bad = {position[x] for x in found.bad_xs}
        suspects.update(col_bad)
        trusted = [r for r in range(m) if r not in suspects]
        if len(trusted) < k:
            trusted = [r for r in range(m) if r not in col_bad]
        basis = trusted[:k]
    return Resolution(bad, bases)


def _analyse(xs: Sequence[int], rows: U8, k: int) -> Resolution:
    def mismatches(basis: list[int], cols: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
        sub = rows[:, cols]
        result: npt.NDArray[np.bool_] = _predict(xs, basis, sub) != sub
        return result

    def column(col: int) -> list[int]:
        return [int(v) for v in rows[:, col]]

    return resolve_columns(GF256, xs, k, rows.shape[1], mismatches, column)


def find_bad_rows(xs: Sequence[int], rows: U8, k: int) -> list[int]:
    """Indices of the rows of ``rows`` (row j = share at x = xs[j]) wrong in any column.

    Each column must have at most (m-k)//2 wrong rows, else UncorrectableError; with
    m == k nothing can be checked and [] is returned.
    """
    _check_rows(xs, rows, k)
    return _analyse(list(xs), rows, k).bad_rows()


def decode_bytes(xs: Sequence[int], rows: U8, k: int) -> tuple[bytes, list[int]]:
    """(the secret at x = 0, indices of wrong rows), correcting (m-k)//2 per column."""
    _check_rows(xs, rows, k)
    xs = list(xs)
    analysis = _analyse(xs, rows, k)
    secret = np.zeros(rows.shape[1], dtype=np.uint8)
    for basis, cols in analysis.bases:
        w = poly.lagrange_coefficients(GF256, [xs[j] for j in basis], at=0)
        secret[cols] = _combine(w, rows[basis][:, cols])
    return secret.tobytes(), analysis.bad_rows()


def interpolate_bytes(xs: Sequence[int], rows: U8, ats: Sequence[int]) -> U8:
    """Rows at every x in ``ats`` of the byte-wise polynomial of degree < len(xs) through
    ``rows`` (row j at x = xs[j]) over GF(2^8); no error checking, for k trusted rows."""
    weights = poly.lagrange_matrix(GF256, list(xs), list(ats))
    return np.stack([_combine(w, rows) for w in weights])
