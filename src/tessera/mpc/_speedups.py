"""Speed-ups for MPyC inside Tessera's party processes (never imported elsewhere).

1. Resharing randomness: MPyC 0.11 draws every random coefficient with
   ``secrets.randbelow``, one Python call per value, which dominates a 30,000-element
   secure multiplication.  For prime fields below 2^62 the same uniform coefficients
   come from one ``os.urandom`` call (61-bit masks, rejection of values >= p).
2. Local matrix products of shares: MPyC multiplies object arrays of Python ints.  For
   p < 2^62 the product is computed exactly with int64 matrix products of 21-bit limbs
   (nine products, sums of at most 2^20 terms of 42 bits fit in 63 bits) and reduced
   mod p; the result is identical.
3. TLS set-up: MPyC's ``ssl.create_default_context`` loads the system CA store (~0.1 s
   each, three times) before loading Tessera's own CA; parties trust only Tessera's CA,
   so the system store is skipped.

:func:`install` also binds MPyC seats to TLS certificates (:mod:`tessera.mpc._seats`).
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import numpy as np

from tessera.mpc import _seats

__all__ = ["install", "limb_matmul", "random_split"]

_LIMB = 21
_MASK = (1 << _LIMB) - 1
_MAX_INNER = 1 << 20


def _uniform(count: int, p: int) -> Any:
    return _uniform_u64(count, p).astype(object)


def _uniform_u64(count: int, p: int) -> Any:
    bits = p.bit_length()
    mask = np.uint64((1 << bits) - 1)
    c = np.frombuffer(os.urandom(8 * count), dtype=np.uint64) & mask
    bad = c >= np.uint64(p)
    while bad.any():
        c = c.copy()
        c[bad] = np.frombuffer(os.urandom(8 * int(bad.sum())), dtype=np.uint64) & mask
        bad = c >= np.uint64(p)
    return c


def random_split(s: Any, t: int, m: int, p: int) -> Any:
    """Shamir shares (m x n object array; row i is f(i+1)) of the values ``s`` in [0, p).

    Same distribution as ``mpyc.thresha.np_random_split``; for m <= 7 and p < 2^61 every
    Horner step stays below 2^64, so it runs in uint64.
    """
    n = len(s)
    if m <= 7 and p.bit_length() <= 61:
        secret = np.asarray(s).astype(np.uint64)
        coeffs = _uniform_u64(t * n, p).reshape(t, n)
        q = np.uint64(p)
        out = np.empty((m, n), dtype=np.uint64)
        for i in range(1, m + 1):
            acc = np.zeros(n, dtype=np.uint64)
            for c in coeffs[::-1]:
                acc = ((acc + c) % q) * np.uint64(i) % q
            out[i - 1] = (acc + secret) % q
        return out.astype(object)
    coeffs = _uniform(t * n, p).reshape(t, n)
    v = np.vander(np.array(list(range(1, m + 1)), dtype="O"), N=t + 1, increasing=True)
    return (v @ np.concatenate((np.asarray(s, dtype=object).reshape(1, n), coeffs))) % p


def _limbs(a: Any) -> list[Any]:
    x = np.asarray(a).astype(np.int64)
    return [x & _MASK, (x >> _LIMB) & _MASK, x >> (2 * _LIMB)]


def limb_matmul(a: Any, b: Any, p: int) -> Any | None:
    """``a @ b mod p`` for integer arrays with entries in [0, p), p < 2^62; None if unfit."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim not in (1, 2) or b.ndim not in (1, 2) or p.bit_length() > 62:
        return None
    inner = a.shape[-1]
    if inner != b.shape[0] or inner > _MAX_INNER or inner == 0:
        return None
    la, lb = _limbs(a), _limbs(b)
    out: Any = None
    for i in range(3):
        for j in range(3):
            part = (la[i] @ lb[j]).astype(object)
            term = part << (_LIMB * (i + j)) if i + j else part
            out = term if out is None else out + term
    return out % p


def _no_system_store(purpose: Any = ssl.Purpose.SERVER_AUTH, **kwargs: Any) -> ssl.SSLContext:
    if kwargs:
        return _ORIGINAL_CONTEXT(purpose, **kwargs)
    side = (
        ssl.PROTOCOL_TLS_SERVER if purpose == ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if side == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


_ORIGINAL_CONTEXT = ssl.create_default_context


def install() -> None:
    """Apply the speed-ups (idempotent)."""
    from mpyc import finfields, thresha

    original = thresha.np_random_split
    if getattr(original, "_tessera", False):
        return

    def np_random_split(field: Any, s: Any, t: int, m: int) -> Any:
        p = field.modulus
        if not isinstance(p, int) or p.bit_length() > 62 or field.order != p:
            return original(field, s, t, m)
        if isinstance(s, field.array):
            s = s.value
        return random_split(np.asarray(s), t, m, p)

    np_random_split._tessera = True  # type: ignore[attr-defined]
    thresha.np_random_split = np_random_split

    cls = finfields.PrimeFieldArray
    orig_matmul = cls.__matmul__

    def __matmul__(self: Any, other: Any) -> Any:  # noqa: N807
        p = self.field.modulus
        theirs = other.value if isinstance(other, cls) else other
        if isinstance(theirs, np.ndarray) and isinstance(p, int):
            fast = limb_matmul(
                self.value, np.mod(theirs, p) if theirs.dtype != object else theirs, p
            )
            if fast is not None:
                return type(self)(fast) if isinstance(fast, np.ndarray) else self.field(int(fast))
        return orig_matmul(self, other)

    cls.__matmul__ = __matmul__
    ssl.create_default_context = _no_system_store
    _seats.install()  # after the context factory above: it wraps it
