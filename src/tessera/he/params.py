"""CKKS parameters chosen from a computation's multiplicative depth, at 128-bit security.

The security bound is the Homomorphic Encryption Standard's (Albrecht et al.,
*Homomorphic Encryption Security Standard*, HomomorphicEncryption.org, 2018; table of
the classical 128-bit level for a ternary or uniform secret and error of standard
deviation 3.2): for a ring degree ``N`` the modulus ``Q`` may have at most
:data:`MAX_LOG_Q_128` ``[N]`` bits.  Microsoft SEAL enforces the same table.

A depth-``d`` chain is ``[60] + [40] * d + [60]`` bits: a 60-bit first prime that holds
the result (20 bits of headroom over the 40-bit scale), ``d`` 40-bit primes, one per
rescaling, and a 60-bit special prime for key switching.  ``N`` is the smallest degree
whose 128-bit bound admits the chain (never below 8,192: a depth-0 chain, 120 bits,
does not fit 4,096).  ``N / 2`` values are packed into one ciphertext.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.errors import InputError, UnsupportedError

__all__ = [
    "FIRST_PRIME_BITS",
    "MAX_DEPTH",
    "MAX_LOG_Q_128",
    "MIDDLE_PRIME_BITS",
    "SCALE_BITS",
    "Params",
    "params_for_depth",
]

#: Largest log2(Q) for 128-bit classical security (HE Standard 2018, Table 1).
MAX_LOG_Q_128: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}
FIRST_PRIME_BITS = 60
MIDDLE_PRIME_BITS = 40
SPECIAL_PRIME_BITS = 60
SCALE_BITS = 40
#: The deepest chain that fits N = 32,768 at 128 bits: (881 - 120) // 40.
MAX_DEPTH = (MAX_LOG_Q_128[32768] - FIRST_PRIME_BITS - SPECIAL_PRIME_BITS) // MIDDLE_PRIME_BITS
_MIN_DEGREE = 8192


@dataclass(frozen=True)
class Params:
    """A CKKS parameter set: ring degree, modulus chain (bits), scale (bits), depth."""

    poly_modulus_degree: int
    coeff_mod_bits: tuple[int, ...]
    depth: int
    scale_bits: int = SCALE_BITS
    security_bits: int = 128

    def __post_init__(self) -> None:
        limit = MAX_LOG_Q_128.get(self.poly_modulus_degree)
        if limit is None:
            raise InputError(
                f"ring degree {self.poly_modulus_degree} is not a supported power of 2"
            )
        if self.security_bits != 128:
            raise InputError("only 128-bit security parameters are supported")
        if not 0 <= self.depth <= MAX_DEPTH or len(self.coeff_mod_bits) != self.depth + 2:
            raise InputError("the modulus chain does not match the stated depth")
        if not all(isinstance(b, int) and 20 <= b <= 60 for b in self.coeff_mod_bits):
            raise InputError("modulus primes must have 20 to 60 bits")
        if self.total_bits > limit:
            raise InputError(
                f"{self.total_bits} modulus bits exceed the 128-bit bound of {limit} for "
                f"N = {self.poly_modulus_degree} (HE Standard)"
            )
        if not 20 <= self.scale_bits <= min(self.coeff_mod_bits):
            raise InputError("the scale must not exceed any prime of the chain")

    @property
    def slots(self) -> int:
        """Values packed into one ciphertext (N / 2)."""
        return self.poly_modulus_degree // 2

    @property
    def total_bits(self) -> int:
        """log2(Q), special prime included (what the security bound limits)."""
        return sum(self.coeff_mod_bits)

    @property
    def max_bits(self) -> int:
        """The HE Standard's 128-bit bound for this ring degree."""
        return MAX_LOG_Q_128[self.poly_modulus_degree]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with the security statement spelled out."""
        return {
            "scheme": "CKKS",
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bits": list(self.coeff_mod_bits),
            "depth": self.depth,
            "scale_bits": self.scale_bits,
            "slots": self.slots,
            "security_bits": self.security_bits,
            "log_q": self.total_bits,
            "max_log_q": self.max_bits,
            "standard": "HomomorphicEncryption.org Security Standard (2018), classical, "
            "ternary secret",
        }

    @classmethod
    def from_dict(cls, doc: Any) -> Params:
        """Inverse of :meth:`to_dict`; InputError when malformed or below 128 bits."""
        if not isinstance(doc, dict) or doc.get("scheme") != "CKKS":
            raise InputError("not a CKKS parameter set")
        try:
            bits = doc["coeff_mod_bits"]
            if not isinstance(bits, list) or len(bits) > MAX_DEPTH + 2:
                raise ValueError("coeff_mod_bits")
            return cls(
                poly_modulus_degree=_int(doc["poly_modulus_degree"]),
                coeff_mod_bits=tuple(_int(b) for b in bits),
                depth=_int(doc["depth"]),
                scale_bits=_int(doc.get("scale_bits", SCALE_BITS)),
                security_bits=_int(doc.get("security_bits", 128)),
            )
        except (KeyError, TypeError, ValueError):
            raise InputError("malformed CKKS parameters") from None

    def describe(self) -> str:
        """One line for people: ``CKKS N=8192, 160-bit modulus (60+40+60), depth 1, 128-bit``."""
        chain = "+".join(map(str, self.coeff_mod_bits))
        return (
            f"CKKS N={self.poly_modulus_degree} ({self.slots} slots), {self.total_bits}-bit "
            f"modulus ({chain}) of at most {self.max_bits}, depth {self.depth}, "
            f"{self.security_bits}-bit security (HE Standard)"
        )


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def params_for_depth(depth: int) -> Params:
    """The smallest 128-bit parameter set that evaluates ``depth`` multiplications."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise InputError("the multiplicative depth is a whole number >= 0")
    if depth > MAX_DEPTH:
        raise UnsupportedError(
            f"depth {depth} needs more than N = 32768 at 128-bit security (at most {MAX_DEPTH})"
        )
    bits = (FIRST_PRIME_BITS, *([MIDDLE_PRIME_BITS] * depth), SPECIAL_PRIME_BITS)
    total = sum(bits)
    degree = min(n for n, top in MAX_LOG_Q_128.items() if n >= _MIN_DEGREE and top >= total)
    return Params(degree, bits, depth)
