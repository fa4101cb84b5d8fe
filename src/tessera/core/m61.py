"""Fast local arithmetic in GF(2^61 - 1), the field of every shared table.

Shares of Tessera's tables live in GF(p) for the Mersenne prime ``p = 2^61 - 1``.  A
value below p fits a uint64, a product of two fits 122 bits, and reducing mod p is a
shift and an add (2^61 = 1 mod p), so the local steps of sharing and of MPC (Shamir
splits, matrix products of shares with public or stored columns, element-wise
products) run on uint64 arrays instead of numpy object arrays of Python ints:

- :func:`share`: Shamir shares of a whole table part at once (row i is party i's
  ``f(i + 1)``, MPyC's convention), coefficients from an injected randomness source;
- :func:`matmul`: ``a @ b mod p`` with 128-bit accumulation, reading ``b`` (a stored,
  memory-mapped part) once and copying nothing;
- :func:`mul`: element-wise products mod p.

Each uses the compiled kernel (``tessera.core._xor``, built at install) when present and
an exact numpy fallback otherwise; both give identical results (tested).  :data:`KERNEL`
says which is in use.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.core.rng import RandomSource, default_rng

_kernel: ModuleType | None
try:  # the compiled kernel; optional at build time (see setup.py)
    from tessera.core import _xor as _kernel

    if not hasattr(_kernel, "m61_share"):  # an older build without these kernels
        _kernel = None
except ImportError:  # pragma: no cover - exercised on machines without a compiler
    _kernel = None

__all__ = [
    "KERNEL",
    "P",
    "axpy",
    "lincomb",
    "matmul",
    "matmul_nt",
    "mul",
    "random_below",
    "share",
    "to_field",
]

P = 2**61 - 1
KERNEL: str | None = "c" if _kernel is not None else None
"""``"c"`` when the compiled GF(2^61 - 1) kernels are loaded, None on the numpy fallback."""

U64 = npt.NDArray[np.uint64]
_P = np.uint64(P)
_M31 = np.uint64((1 << 31) - 1)
_M30 = np.uint64((1 << 30) - 1)
_FOLD = 32  # 128-bit sums of up to 32 products below 2^122 cannot overflow


def _reduce(x: U64) -> U64:
    """x mod p for uint64 x (any value): one fold, then one conditional subtraction."""
    y = (x & _P) + (x >> np.uint64(61))
    out: U64 = np.where(y >= _P, y - _P, y)
    return out


def _mul_np(a: U64, b: U64 | np.uint64) -> U64:
    """a * b mod p element-wise for uint64 values below p (numpy, no overflow)."""
    a0, a1 = a & _M31, a >> np.uint64(31)
    b0, b1 = b & _M31, b >> np.uint64(31)
    mid = a1 * b0 + a0 * b1  # < 2^62
    # a*b = a1 b1 2^62 + mid 2^31 + a0 b0, and 2^61 = 1 (mod p): every term below 2^62.
    x = ((a1 * b1) << np.uint64(1)) + (mid >> np.uint64(30))
    x = x + ((mid & _M30) << np.uint64(31)) + a0 * b0  # < 2^63 + 2^33
    return _reduce(x)


def to_field(values: Any) -> U64:
    """Integers (any integer dtype, negatives too, or an object array of ints) as uint64
    elements of GF(p), i.e. ``values mod p``."""
    arr = np.asarray(values)
    if arr.dtype == np.uint64:
        return _reduce(arr) if arr.size and int(arr.max()) >= P else arr
    if arr.dtype.kind in "iub":
        out: U64 = np.mod(arr.astype(np.int64), np.int64(P)).astype(np.uint64)
        return out
    return np.asarray(np.mod(arr.astype(object), P), dtype=object).astype(np.uint64)


def random_below(count: int, rng: RandomSource | None = None) -> U64:
    """``count`` uniform elements of GF(p): 61-bit draws, the value p itself redrawn."""
    rng = default_rng() if rng is None else rng
    out = np.empty(count, dtype=np.uint64)
    if count:
        fill = getattr(rng, "fill", None)
        if fill is not None:
            fill(out.view(np.uint8))
        else:
            out[:] = np.frombuffer(rng.random_bytes(8 * count), dtype=np.uint64)
        out &= _P
        while (bad := out == _P).any():
            redraw = np.frombuffer(rng.random_bytes(8 * int(bad.sum())), dtype=np.uint64)
            out[bad] = redraw & _P
    return out


def share(
    values: Any, *, n: int, t: int, rng: RandomSource | None = None, out: U64 | None = None
) -> U64:
    """Shamir shares (uint64, shape ``(n, *values.shape)``) of every value mod p: row i
    is ``f(i + 1)`` for a random ``f`` of degree ``t`` with ``f(0)`` the value.  ``out``:
    where to write them (C-contiguous, that shape), e.g. a reused buffer."""
    if not 0 <= t < n < P:
        raise ValueError("need 0 <= t < n")
    arr = np.asarray(values)
    if arr.dtype.kind in "ib" or (arr.dtype.kind == "u" and arr.dtype.itemsize < 8):
        signed = np.ascontiguousarray(arr, dtype=np.int64)  # the kernel reduces mod p
    else:
        signed = np.ascontiguousarray(to_field(arr)).view(np.int64)  # below p: non-negative
    shape = signed.shape
    size = signed.size
    if out is None:
        out = np.empty((n, *shape), dtype=np.uint64)
    elif out.shape != (n, *shape) or out.dtype != np.uint64 or not out.flags.c_contiguous:
        raise ValueError("share: out must be C-contiguous uint64 of shape (n, *values.shape)")
    flat_out = out.reshape(n, size)
    if _kernel is not None and size:
        raw = _random_words(t * size, rng)  # masked to 61 bits in the kernel
        if _kernel.m61_share(signed.reshape(-1), raw, t, flat_out):
            return out
        coeffs = random_below(t * size, rng)  # p itself was drawn (p ~ 2^-61): redraw
        _kernel.m61_share(signed.reshape(-1), coeffs, t, flat_out)
        return out
    coeffs = random_below(t * size, rng)
    flat = to_field(signed.reshape(-1))
    cs = coeffs.reshape(t, size) if t else coeffs.reshape(0, size)
    for i in range(n):
        x = np.uint64(i + 1)
        acc = np.zeros(size, dtype=np.uint64)
        for c in cs[::-1]:
            acc = _mul_np(_reduce(acc + c), x)
        flat_out[i] = _reduce(acc + flat)
    return out


def _random_words(count: int, rng: RandomSource | None) -> U64:
    rng = default_rng() if rng is None else rng
    out = np.empty(count, dtype=np.uint64)
    fill = getattr(rng, "fill", None)
    if fill is not None:
        fill(out.view(np.uint8))
    else:
        out[:] = np.frombuffer(rng.random_bytes(8 * count), dtype=np.uint64)
    return out


def mul(a: Any, b: Any) -> U64:
    """``a * b mod p`` element-wise (broadcasting) for uint64 values below p."""
    x = np.asarray(a, dtype=np.uint64)
    y = np.asarray(b, dtype=np.uint64)
    if _kernel is not None and x.shape == y.shape and x.size:
        x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
        out = np.empty(x.shape, dtype=np.uint64)
        _kernel.m61_mul(x.reshape(-1), y.reshape(-1), out.reshape(-1))
        return out
    return _mul_np(x, y)


def matmul(a: Any, b: Any) -> U64:
    """``a @ b mod p`` for 2-D uint64 arrays with entries below p; shape (rows, cols).

    ``b`` may be a read-only memory map (a stored table part): it is read once, row by
    row, and never copied.  Entries are not checked: values at or above p give a wrong
    result, never a crash.
    """
    x = np.ascontiguousarray(np.asarray(a, dtype=np.uint64))
    y = np.asarray(b)
    if y.dtype != np.uint64:
        y = y.astype(np.uint64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[0]:
        raise ValueError(f"matmul: shapes {x.shape} and {y.shape} do not fit")
    g, inner = x.shape
    k = y.shape[1]
    out = np.zeros((g, k), dtype=np.uint64)
    if not (g and k and inner):
        return out
    if _kernel is not None:
        y = np.ascontiguousarray(y)
        _kernel.m61_matmul(x, y, out, g, inner, k)
        return out
    # numpy: 21-bit limbs of x times y's 3 limbs in float64 would round; use exact
    # int64 products of 31-bit halves on blocks of rows instead.
    acc = np.zeros((g, k), dtype=np.uint64)
    step = 4096
    for start in range(0, inner, step):
        xs = x[:, start : start + step]
        ys = np.asarray(y[start : start + step], dtype=np.uint64)
        for j in range(g):
            prod = _mul_np(xs[j][:, None], ys)  # rows x k, each < p
            acc[j] = _reduce(acc[j] + _sum_mod(prod))
    out[:] = acc
    return out


def _sum_mod(prod: U64) -> U64:
    """Column sums mod p of a (rows x k) uint64 array of values below p."""
    lo = (prod & np.uint64((1 << 32) - 1)).sum(axis=0, dtype=np.uint64)  # < rows * 2^32
    hi = (prod >> np.uint64(32)).sum(axis=0, dtype=np.uint64)  # < rows * 2^29
    # value = hi * 2^32 + lo; 2^32 * hi = 2^32 (hi mod p) ... reduce each piece first
    hi_r = _reduce(hi)
    shifted = _mul_np(hi_r, np.uint64(1 << 32))
    return _reduce(shifted + _reduce(lo))


def matmul_nt(a: Any, bt: Any) -> U64:
    """``a @ bt.T mod p`` for 2-D uint64 arrays with entries below p: every row of ``a``
    times every row of ``bt`` (e.g. secret selections times a stored part's
    sub-columns, each contiguous); shape (rows of a, rows of bt)."""
    x = np.ascontiguousarray(np.asarray(a, dtype=np.uint64))
    y = np.ascontiguousarray(np.asarray(bt, dtype=np.uint64))
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"matmul_nt: shapes {x.shape} and {y.shape} do not fit")
    g, inner = x.shape
    k = y.shape[0]
    if _kernel is None or not (g and k and inner):
        return matmul(x, y.T)
    out = np.empty((g, k), dtype=np.uint64)
    _kernel.m61_matmul_nt(x, y, out, g, inner, k)
    return out


def axpy(acc: U64, x: Any, w: int) -> None:
    """``acc += w * x mod p`` in place (uint64 arrays of one shape, entries below p)."""
    w %= P
    xs = np.ascontiguousarray(np.asarray(x, dtype=np.uint64))
    if xs.shape != acc.shape:
        raise ValueError("axpy: shapes differ")
    if _kernel is not None and acc.flags.c_contiguous and acc.size:
        _kernel.m61_axpy(acc, xs, w)
        return
    acc[...] = _reduce(acc + _mul_np(xs, np.uint64(w)))


def lincomb(weights: list[int], arrays: list[Any]) -> U64:
    """``sum_j weights[j] * arrays[j] mod p`` (uint64 arrays of one shape, entries below
    p): e.g. Lagrange recombination of shares."""
    acc = np.zeros(np.asarray(arrays[0]).shape, dtype=np.uint64)
    for w, x in zip(weights, arrays, strict=True):
        axpy(acc, x, w)
    return acc
