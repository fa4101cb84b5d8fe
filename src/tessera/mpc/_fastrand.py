"""Faster Shamir resharing randomness for MPyC (imported inside party processes only).

MPyC 0.11 draws every random coefficient with ``secrets.randbelow`` one Python call at
a time, which dominates a 30,000-element secure multiplication.  For prime fields below
2^62 this draws the same uniform coefficients from ``os.urandom`` in one call (61-bit
masks, rejection of the few values >= p) and then computes exactly MPyC's shares.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["install"]


def _uniform(count: int, p: int) -> Any:
    bits = p.bit_length()
    mask = np.uint64((1 << bits) - 1)
    c = np.frombuffer(os.urandom(8 * count), dtype=np.uint64) & mask
    bad = c >= np.uint64(p)
    while bad.any():
        c = c.copy()
        c[bad] = np.frombuffer(os.urandom(8 * int(bad.sum())), dtype=np.uint64) & mask
        bad = c >= np.uint64(p)
    return c.astype(object)


def install() -> None:
    """Replace ``mpyc.thresha.np_random_split`` for prime fields below 2^62."""
    from mpyc import thresha

    original = thresha.np_random_split
    if getattr(original, "_tessera", False):
        return

    def np_random_split(field: Any, s: Any, t: int, m: int) -> Any:
        p = field.modulus
        if not isinstance(p, int) or p.bit_length() > 62 or field.order != p:
            return original(field, s, t, m)
        if isinstance(s, field.array):
            s = s.value
        n = len(s)
        coeffs = _uniform(t * n, p).reshape(t, n)
        v = np.vander(np.array(list(range(1, m + 1)), dtype="O"), N=t + 1, increasing=True)
        return (v @ np.concatenate((s.reshape(1, n), coeffs))) % p

    np_random_split._tessera = True  # type: ignore[attr-defined]
    thresha.np_random_split = np_random_split
