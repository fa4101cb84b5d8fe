"""Finite fields: GF(2^8) with the AES polynomial, and prime fields GF(p).

Both implement the small :class:`Field` protocol (scalar arithmetic on ``int``) that the
generic algorithms (Lagrange interpolation, Berlekamp-Welch decoding) are written
against.  Bulk GF(2^8) arithmetic on whole blocks lives in :mod:`tessera.core.bitslice`.

>>> GF256.mul(0x57, 0x83)  # FIPS-197, section 4.2
193
>>> GF256.inv(0x53)
202
>>> F = PrimeField(2**61 - 1)
>>> F.mul(F.inv(12345), 12345)
1
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = ["AES_POLY", "GF256", "Field", "GaloisField256", "PrimeField"]

AES_POLY: Final = 0x11B


class Field(Protocol):
    """Scalar arithmetic in a finite field whose elements are ``int``."""

    @property
    def order(self) -> int:
        """Number of elements."""
        ...

    def add(self, a: int, b: int) -> int:
        """a + b."""
        ...

    def sub(self, a: int, b: int) -> int:
        """a - b."""
        ...

    def mul(self, a: int, b: int) -> int:
        """a * b."""
        ...

    def inv(self, a: int) -> int:
        """Multiplicative inverse; ZeroDivisionError for 0."""
        ...


def _xtime_mul(a: int, b: int) -> int:
    result = 0
    while b:
        if b & 1:
            result ^= a
        a <<= 1
        if a & 0x100:
            a ^= AES_POLY
        b >>= 1
    return result


class GaloisField256:
    """GF(2^8) = GF(2)[x]/(x^8 + x^4 + x^3 + x + 1), as in AES; 3 generates it."""

    order: Final = 256

    def __init__(self) -> None:
        exp = [0] * 512
        log = [0] * 256
        value = 1
        for i in range(255):
            exp[i] = value
            log[value] = i
            value = _xtime_mul(value, 3)
        for i in range(255, 512):
            exp[i] = exp[i - 255]
        self._exp: tuple[int, ...] = tuple(exp)
        self._log: tuple[int, ...] = tuple(log)

    def add(self, a: int, b: int) -> int:
        """a + b (XOR)."""
        return a ^ b

    sub = add

    def mul(self, a: int, b: int) -> int:
        """a * b."""
        if a == 0 or b == 0:
            return 0
        return self._exp[self._log[a] + self._log[b]]

    def inv(self, a: int) -> int:
        """a^-1; ZeroDivisionError for 0."""
        if a == 0:
            raise ZeroDivisionError("0 has no inverse in GF(2^8)")
        return self._exp[255 - self._log[a]]

    def pow(self, a: int, e: int) -> int:
        """a ** e for e >= 0."""
        if e == 0:
            return 1
        if a == 0:
            return 0
        return self._exp[(self._log[a] * e) % 255]

    def mul_table(self) -> list[list[int]]:
        """The full 256 x 256 product table (row a, column b)."""
        exp, log = self._exp, self._log
        table = [[0] * 256 for _ in range(256)]
        for a in range(1, 256):
            la = log[a]
            row = table[a]
            for b in range(1, 256):
                row[b] = exp[la + log[b]]
        return table


GF256: Final = GaloisField256()


class PrimeField:
    """GF(p) for a prime ``p`` (the caller vouches for primality)."""

    def __init__(self, p: int) -> None:
        if p < 3:
            raise ValueError("p must be an odd prime")
        self.p: Final = p

    @property
    def order(self) -> int:
        """p."""
        return self.p

    def add(self, a: int, b: int) -> int:
        """(a + b) mod p."""
        return (a + b) % self.p

    def sub(self, a: int, b: int) -> int:
        """(a - b) mod p."""
        return (a - b) % self.p

    def mul(self, a: int, b: int) -> int:
        """(a * b) mod p."""
        return (a * b) % self.p

    def inv(self, a: int) -> int:
        """a^-1 mod p; ZeroDivisionError for 0."""
        if a % self.p == 0:
            raise ZeroDivisionError("0 has no inverse")
        return pow(a, -1, self.p)

    def __repr__(self) -> str:
        return f"PrimeField({self.p})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrimeField) and other.p == self.p

    def __hash__(self) -> int:
        return hash(("PrimeField", self.p))
