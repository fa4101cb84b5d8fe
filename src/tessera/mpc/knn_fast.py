"""Local arithmetic fast paths for MPyC party programs on a prime below 2^62.

MPyC 0.11 keeps field arrays as numpy ``dtype=object`` arrays of Python ints.  Two local
steps then dominate a party's CPU time on 20,000-record tables, and both have exact,
vectorised equivalents here:

- :func:`matmul_mod`: a matrix product mod p.  Operands are split into 16-bit limbs and
  multiplied as float64 matrices (BLAS); every limb product is < 2^32 and an inner
  dimension below 2^21 keeps each sum below 2^53, so the float results are exact.
- :func:`np_random_split`: the resharing step of every secure multiplication draws
  ``t * n`` random coefficients with ``secrets.randbelow`` one at a time.  This does the
  same with bulk AES-CTR randomness (:class:`tessera.core.rng.Drbg`, a fresh key from
  ``secrets`` per party process) and uint64 Horner evaluation.  Installed by
  :func:`install` in the party process only; other moduli fall back to MPyC's own.

Nothing here imports ``mpyc.runtime`` (which parses ``sys.argv``); ``install`` takes
the ``thresha`` module in.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.core.rng import Drbg

__all__ = [
    "MERSENNE61",
    "install",
    "matmul_mod",
    "mul_mod",
    "mulmod61",
    "random_coefficients",
    "split_uint64",
]

ObjArray = npt.NDArray[np.object_]
U64 = npt.NDArray[np.uint64]

MERSENNE61 = 2**61 - 1  # the prime of Tessera's shared tables
_M31 = np.uint64((1 << 31) - 1)
_M30 = np.uint64((1 << 30) - 1)
_P61 = np.uint64(MERSENNE61)
_LIMB = 16
_LIMBS = 4  # 64 bits
_MAX_INNER = 1 << 21


def _limbs(a: U64) -> list[npt.NDArray[np.float64]]:
    mask = np.uint64((1 << _LIMB) - 1)
    return [((a >> np.uint64(_LIMB * i)) & mask).astype(np.float64) for i in range(_LIMBS)]


def matmul_mod(a: Any, b: Any, p: int) -> ObjArray:
    """(a @ b) mod p for integer arrays with entries in [0, p), p < 2^64; object result."""
    if p >= 1 << 64:
        raise ValueError("matmul_mod needs p < 2^64")
    a64 = np.asarray(a).astype(np.uint64)
    b64 = np.asarray(b).astype(np.uint64)
    inner = a64.shape[-1]
    if inner >= _MAX_INNER:
        raise ValueError("inner dimension too large for exact float limbs")
    al, bl = _limbs(a64), _limbs(b64)
    acc: ObjArray | None = None
    for s in range(2 * _LIMBS - 1):
        part: npt.NDArray[np.int64] | None = None
        for i in range(max(0, s - _LIMBS + 1), min(s, _LIMBS - 1) + 1):
            prod = (al[i] @ bl[s - i]).astype(np.int64)  # < 2^53: exact in float64
            part = prod if part is None else part + prod  # < 2^55 in int64
        assert part is not None
        term: ObjArray = np.asarray(part.astype(object) << (_LIMB * s), dtype=object)
        acc = term if acc is None else acc + term
    assert acc is not None
    result: ObjArray = np.asarray(acc % p, dtype=object)
    return result


def mulmod61(a: U64, b: U64 | np.uint64) -> U64:
    """a * b mod 2^61 - 1 element-wise for uint64 values below the prime (no overflow)."""
    a0, a1 = a & _M31, a >> np.uint64(31)
    b0, b1 = b & _M31, b >> np.uint64(31)
    mid = a1 * b0 + a0 * b1  # < 2^62
    # a*b = a1 b1 2^62 + mid 2^31 + a0 b0, and 2^61 = 1 (mod p): every term below 2^62.
    x = ((a1 * b1) << np.uint64(1)) + (mid >> np.uint64(30))
    x = x + ((mid & _M30) << np.uint64(31)) + a0 * b0  # < 2^63 + 2^33
    x = (x & _P61) + (x >> np.uint64(61))
    out: U64 = np.where(x >= _P61, x - _P61, x)
    return out


def mul_mod(a: Any, b: Any, p: int) -> ObjArray:
    """a * b mod p element-wise (broadcasting) for values in [0, p); object result."""
    if p == MERSENNE61:
        a64 = np.asarray(a).astype(np.uint64)
        b64 = np.asarray(b).astype(np.uint64)
        return np.asarray(mulmod61(a64, b64), dtype=np.uint64).astype(object)
    result: ObjArray = np.asarray(
        (np.asarray(a, dtype=object) * np.asarray(b, dtype=object)) % p, dtype=object
    )
    return result


def recombine61(weights: list[int], shares: list[U64]) -> U64:
    """sum_j weights[j] * shares[j] mod 2^61 - 1 (Lagrange recombination)."""
    acc = np.zeros(shares[0].shape, dtype=np.uint64)
    for w, sh in zip(weights, shares, strict=True):
        acc = acc + mulmod61(sh, np.uint64(w))  # two values below 2^61: no overflow
        acc = np.where(acc >= _P61, acc - _P61, acc)
    return acc


def random_coefficients(rng: Drbg, count: int, p: int) -> U64:
    """``count`` uniform values in [0, p) for p < 2^62 (masking, then rejection)."""
    mask = np.uint64((1 << p.bit_length()) - 1)
    out = np.frombuffer(rng.random_bytes(8 * count), dtype=np.uint64) & mask
    bad = out >= np.uint64(p)
    while bad.any():
        out = out.copy()
        fresh = np.frombuffer(rng.random_bytes(8 * int(bad.sum())), dtype=np.uint64) & mask
        out[bad] = fresh
        bad = out >= np.uint64(p)
    return out


def split_uint64(secret: U64, t: int, m: int, p: int, rng: Drbg) -> U64:
    """Shamir shares (m, n) of every secret: row i is f(i+1), degree t, p < 2^62."""
    if p >= 1 << 62 or m > 7:
        raise ValueError("split_uint64 needs p < 2^62 and at most 7 parties")
    n = secret.shape[0]
    coeffs = random_coefficients(rng, t * n, p).reshape(t, n) if t else None
    pp = np.uint64(p)
    out = np.empty((m, n), dtype=np.uint64)
    for i in range(m):
        x = np.uint64(i + 1)
        acc = np.zeros(n, dtype=np.uint64)
        for j in range(t):
            assert coeffs is not None
            acc = (acc + coeffs[j]) % pp * x % pp  # each step stays below 2^64
        out[i] = (acc + secret) % pp
    return out


def install(thresha: ModuleType) -> Callable[..., Any]:
    """Bulk resharing in ``thresha`` (split, and recombine for 2^61 - 1); returns the old split.

    Shares travel as uint64 arrays (pickled as raw buffers instead of Python ints).
    """
    original: Callable[..., Any] = getattr(thresha, "np_random_split")  # noqa: B009
    original_recombine: Callable[..., Any] = getattr(thresha, "np_recombine")  # noqa: B009
    vector: Callable[..., list[int]] = getattr(thresha, "_recombination_vector")  # noqa: B009
    rng = Drbg()

    def np_random_split(field: Any, s: Any, t: int, m: int) -> Any:
        p = field.modulus
        if not isinstance(p, int) or p >= 1 << 62 or m > 7:
            return original(field, s, t, m)
        if isinstance(s, field.array):
            s = s.value
        values = np.asarray(s).astype(np.uint64)
        return split_uint64(values, t, m, p, rng)

    def np_recombine(field: Any, points: Any, x_rs: Any = 0) -> Any:
        if field.modulus != MERSENNE61 or not isinstance(x_rs, int):
            return original_recombine(field, points, x_rs)
        xs, shares = zip(*points, strict=True)
        arrays = [
            np.asarray(sh.value if isinstance(sh, field.array) else sh).astype(np.uint64)
            for sh in shares
        ]
        weights = vector(field, tuple(xs), x_rs)
        return field.array(recombine61(weights, arrays).astype(object), check=False)

    setattr(thresha, "np_random_split", np_random_split)  # noqa: B010 - a module attribute
    setattr(thresha, "np_recombine", np_recombine)  # noqa: B010
    return original
