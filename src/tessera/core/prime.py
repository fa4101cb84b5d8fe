"""Shamir secret sharing over a prime field GF(p), with MPyC's conventions.

Party ``i`` (0-based) holds ``f(i + 1)`` where ``f`` has degree ``t`` and ``f(0)`` is the
secret; any ``t + 1`` parties reconstruct, ``t`` learn nothing.  This is exactly what
``mpyc.thresha.random_split`` / ``recombine`` compute, so shares made here can be loaded
into MPyC parties as ``secint.field.array(shares[i])`` and vice versa.

Arrays: every array this module returns has ``dtype=object`` and holds Python ``int``
values in ``[0, p)`` (p may be up to ~2^127 and MPyC's default primes such as
``2**64 - 189`` overflow uint64 products).  Inputs may be any integer dtype or an object
array of ints; values are reduced mod p (a negative v becomes p - |v| mod p).
:func:`to_signed` maps field elements back to signed integers.

>>> from tessera.core.rng import Drbg
>>> p = 2**64 - 189
>>> shares = share_array([42, -7], n=3, t=1, p=p, rng=Drbg.from_seed(bytes(32)))
>>> shares.shape
(3, 2)
>>> to_signed(reconstruct_array({0: shares[0], 2: shares[2]}, t=1, p=p), p).tolist()
[42, -7]
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.core import poly, robust
from tessera.core.fields import PrimeField
from tessera.core.rng import RandomSource, default_rng
from tessera.errors import InsufficientSharesError, InvalidShareError, RecoveryError

__all__ = [
    "InconsistentSharesError",
    "random_elements",
    "reconstruct",
    "reconstruct_array",
    "reconstruct_robust",
    "refresh",
    "repair",
    "share",
    "share_array",
    "to_signed",
    "zero_sharing",
]

ObjArray = npt.NDArray[np.object_]
IntArrayLike = npt.NDArray[Any] | Sequence[int]


class InconsistentSharesError(InvalidShareError):
    """Shares disagree; ``parties`` names the 0-based parties found to be wrong."""

    code = "inconsistent_shares"

    def __init__(self, message: str, parties: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.parties: tuple[int, ...] = tuple(parties)


def _check_params(n: int | None, t: int, p: int) -> None:
    if p < 3:
        raise ValueError("p must be an odd prime")
    if t < 0:
        raise ValueError("t must be >= 0")
    if n is not None and not t < n < p:
        raise ValueError("need 0 <= t < n < p")


_to_int = np.frompyfunc(operator.index, 1, 1)


def _as_field_array(values: IntArrayLike, p: int) -> ObjArray:
    """Values as an object array of Python ints in [0, p); TypeError for non-integers."""
    # Python ints beyond int64 would silently become float64 under plain np.asarray.
    arr = values if isinstance(values, np.ndarray) else np.array(values, dtype=object)
    if arr.dtype.kind in "iub":
        obj = arr.astype(object)
    elif arr.dtype == object:
        obj = np.asarray(_to_int(arr), dtype=object) if arr.size else arr.astype(object)
    else:
        raise TypeError(f"expected integers, got dtype {arr.dtype}")
    result: ObjArray = np.asarray(obj % p, dtype=object)
    return result


def random_elements(count: int, p: int, rng: RandomSource | None = None) -> list[int]:
    """``count`` uniform elements of GF(p) (rejection sampling on whole bytes)."""
    rng = default_rng() if rng is None else rng
    nbytes = (p.bit_length() + 7) // 8
    top_bits = p.bit_length()
    mask = (1 << top_bits) - 1
    out: list[int] = []
    while len(out) < count:
        need = count - len(out)
        # Masked to p's bit length, each draw is accepted with probability > 1/2.
        raw = rng.random_bytes(nbytes * (2 * need + 8))
        for i in range(0, len(raw), nbytes):
            v = int.from_bytes(raw[i : i + nbytes], "little") & mask
            if v < p:
                out.append(v)
                if len(out) == count:
                    break
    return out


def _share_with_coeffs(secret: ObjArray, coeffs: Sequence[ObjArray], n: int, p: int) -> ObjArray:
    """Shares f(1..n) of f(x) = secret + coeffs[0] x + ... + coeffs[t-1] x^t."""
    out = np.empty((n, *secret.shape), dtype=object)
    for i in range(n):
        x = i + 1
        acc: ObjArray = np.zeros(secret.shape, dtype=object)
        for c in reversed(coeffs):
            acc = (acc + c) * x % p
        out[i] = (acc + secret) % p
    return out


def share_array(
    values: IntArrayLike,
    *,
    n: int,
    t: int,
    p: int,
    rng: RandomSource | None = None,
) -> ObjArray:
    """Shares of every value, shape (n, *values.shape); row i is party i's share f(i+1)."""
    _check_params(n, t, p)
    secret = _as_field_array(values, p)
    size = secret.size
    flat = random_elements(t * size, p, rng)
    coeffs = []
    for j in range(t):
        c = np.empty(size, dtype=object)
        c[:] = flat[j * size : (j + 1) * size]
        coeffs.append(c.reshape(secret.shape))
    return _share_with_coeffs(secret, coeffs, n, p)


def share(value: int, *, n: int, t: int, p: int, rng: RandomSource | None = None) -> list[int]:
    """Shares of one integer: element i is party i's share f(i+1)."""
    return [int(s) for s in share_array(np.array(value, dtype=object), n=n, t=t, p=p, rng=rng)]


def zero_sharing(
    shape: tuple[int, ...], *, n: int, t: int, p: int, rng: RandomSource | None = None
) -> ObjArray:
    """A fresh random sharing of zeros, shape (n, *shape)."""
    return share_array(np.zeros(shape, dtype=np.int64), n=n, t=t, p=p, rng=rng)


def refresh(shares: IntArrayLike, *, t: int, p: int, rng: RandomSource | None = None) -> ObjArray:
    """Proactive refresh of a full (n, ...) share array: same secret, independent shares.

    Old and new shares do not mix: t + 1 shares taken from both generations
    reconstruct garbage.
    """
    arr = _as_field_array(shares, p)
    if arr.ndim < 1:
        raise ValueError("shares must have a leading party axis")
    result: ObjArray = (arr + zero_sharing(arr.shape[1:], n=arr.shape[0], t=t, p=p, rng=rng)) % p
    return result


def _weights(parties: Sequence[int], p: int, at: int) -> list[int]:
    return poly.lagrange_coefficients(PrimeField(p), [i + 1 for i in parties], at=at)


def _combine(weights: Sequence[int], arrays: Sequence[ObjArray], p: int) -> ObjArray:
    acc: ObjArray = np.zeros(arrays[0].shape, dtype=object)
    for w, a in zip(weights, arrays, strict=True):
        acc = acc + a * w
    result: ObjArray = acc % p
    return result


def _prepare(shares: Mapping[int, IntArrayLike], t: int, p: int) -> dict[int, ObjArray]:
    _check_params(None, t, p)
    if any(not isinstance(i, int) or i < 0 or i + 1 >= p for i in shares):
        raise ValueError("party indices must be ints in 0..p-2")
    if len(shares) < t + 1:
        raise InsufficientSharesError(f"need {t + 1} shares, got {len(shares)}")
    prepared = {i: _as_field_array(shares[i], p) for i in sorted(shares)}
    shapes = {a.shape for a in prepared.values()}
    if len(shapes) != 1:
        raise ValueError("all shares must have the same shape")
    return prepared


def _resolve(prepared: dict[int, ObjArray], t: int, p: int) -> robust.Resolution:
    """Decode every position of the parties' shares (RecoveryError if impossible)."""
    parties = list(prepared)
    xs = [i + 1 for i in parties]
    field = PrimeField(p)
    flat = np.stack([prepared[i].reshape(-1) for i in parties])  # (m, size), object

    def mismatches(basis: list[int], cols: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
        sub = flat[:, cols]
        weights = poly.lagrange_matrix(field, [xs[j] for j in basis], xs)
        out = np.zeros(sub.shape, dtype=bool)
        for r, row_weights in enumerate(weights):
            if r not in basis:
                predicted = _combine(row_weights, [sub[j] for j in basis], p)
                out[r] = np.asarray(predicted != sub[r], dtype=bool)
        return out

    def column(col: int) -> list[int]:
        return [int(v) for v in flat[:, col]]

    return robust.resolve_columns(field, xs, t + 1, flat.shape[1], mismatches, column)


def reconstruct_array(
    shares: Mapping[int, IntArrayLike], *, t: int, p: int, check: bool = True
) -> ObjArray:
    """f(0) from the shares of parties ``shares.keys()`` (0-based), as an object array.

    Uses the t+1 lowest-numbered parties.  With more and ``check``, verifies that every
    share lies on the same degree-t polynomial at every position, else raises
    InconsistentSharesError (an InvalidShareError) naming the wrong parties when at most
    (m-t-1)//2 are wrong at each position, or saying they cannot be named.
    """
    prepared = _prepare(shares, t, p)
    parties = list(prepared)
    basis = parties[: t + 1]
    if check and len(parties) > t + 1:
        try:
            bad = [parties[r] for r in _resolve(prepared, t, p).bad_rows()]
        except RecoveryError:
            raise InconsistentSharesError(
                "shares are inconsistent and too many are wrong to name them"
            ) from None
        if bad:
            raise InconsistentSharesError(
                f"shares of parties {', '.join(map(str, bad))} are inconsistent", bad
            )
    return _combine(_weights(basis, p, at=0), [prepared[i] for i in basis], p)


def reconstruct_robust(
    shares: Mapping[int, IntArrayLike], *, t: int, p: int
) -> tuple[ObjArray, list[int]]:
    """(f(0), wrong parties), correcting up to (m-t-1)//2 wrong shares at every position.

    Raises InsufficientSharesError below t+1 shares and InconsistentSharesError when some
    position has more wrong shares than can be corrected.
    """
    prepared = _prepare(shares, t, p)
    parties = list(prepared)
    try:
        resolution = _resolve(prepared, t, p)
    except RecoveryError:
        raise InconsistentSharesError(
            "shares are inconsistent and too many are wrong to correct them"
        ) from None
    shape = prepared[parties[0]].shape
    flat = {i: a.reshape(-1) for i, a in prepared.items()}
    out = np.empty(flat[parties[0]].size, dtype=object)
    for basis, cols in resolution.bases:
        chosen = [parties[r] for r in basis]
        out[cols] = _combine(_weights(chosen, p, at=0), [flat[i][cols] for i in chosen], p)
    return out.reshape(shape), [parties[r] for r in resolution.bad_rows()]


def reconstruct(shares: Mapping[int, int], *, t: int, p: int, check: bool = True) -> int:
    """f(0) from scalar shares keyed by 0-based party index."""
    arrays = {i: np.array(v, dtype=object) for i, v in shares.items()}
    return int(reconstruct_array(arrays, t=t, p=p, check=check))


def repair(shares: Mapping[int, IntArrayLike], party: int, *, t: int, p: int) -> ObjArray:
    """Party ``party``'s share f(party+1), recomputed from t+1 others (checked if more)."""
    prepared = _prepare(shares, t, p)
    if party < 0 or party + 1 >= p:
        raise ValueError("party index out of range")
    reconstruct_array(prepared, t=t, p=p, check=True)  # consistency check only
    basis = list(prepared)[: t + 1]
    return _combine(_weights(basis, p, at=party + 1), [prepared[i] for i in basis], p)


def to_signed(values: Any, p: int) -> Any:
    """Field elements as signed ints (v > p//2 becomes v - p); int in, int out."""
    if isinstance(values, int | np.integer):
        v = int(values) % p
        return v - p if v > p // 2 else v
    arr = _as_field_array(values, p)
    half = p // 2
    result: ObjArray = np.where(arr > half, arr - p, arr).astype(object)
    return result
