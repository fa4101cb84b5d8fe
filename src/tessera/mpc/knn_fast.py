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

__all__ = ["install", "matmul_mod", "random_coefficients", "split_uint64"]

ObjArray = npt.NDArray[np.object_]
U64 = npt.NDArray[np.uint64]

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
    """Replace ``thresha.np_random_split`` by the bulk version; returns the original."""
    original: Callable[..., Any] = getattr(thresha, "np_random_split")  # noqa: B009
    rng = Drbg()

    def np_random_split(field: Any, s: Any, t: int, m: int) -> Any:
        p = field.modulus
        if not isinstance(p, int) or p >= 1 << 62 or m > 7:
            return original(field, s, t, m)
        if isinstance(s, field.array):
            s = s.value
        values = np.asarray(s).astype(np.uint64)
        return split_uint64(values, t, m, p, rng).astype(object)

    setattr(thresha, "np_random_split", np_random_split)  # noqa: B010 - a module attribute
    return original
