"""Generate tests/vectors/prime_shamir.json: Shamir over GF(p) with fixed coefficients.

Independent of Tessera: shares are computed here with plain Python (Horner's rule) in
MPyC's convention (party i holds f(i+1), f(0) = secret, degree t), and every valid case
is cross-checked with ``mpyc.thresha.recombine`` before it is written.

Run: .venv/bin/python tests/vectors/gen_prime.py  (rewrites the JSON next to it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mpyc import finfields, thresha

PRIMES = {
    "p97": 97,
    "mpyc_secint32": 2**64 - 189,  # MPyC SecInt(32) default prime
    "mersenne61": 2**61 - 1,
    "mersenne127": 2**127 - 1,
}


def coeffs_for(label: str, count: int, p: int) -> list[int]:
    """Fixed, reproducible coefficients: SHA-256 of a label, reduced mod p."""
    out = []
    for j in range(count):
        digest = hashlib.sha256(f"tessera prime vector {label} {j}".encode()).digest()
        out.append(int.from_bytes(digest, "big") % p)
    return out


def shares_of(secret: int, coeffs: list[int], n: int, p: int) -> list[int]:
    """f(1..n) for f(x) = secret + coeffs[0] x + ... + coeffs[t-1] x^t."""
    poly = [secret % p, *coeffs]
    out = []
    for x in range(1, n + 1):
        acc = 0
        for c in reversed(poly):
            acc = (acc * x + c) % p
        out.append(acc)
    return out


def mpyc_recombine(p: int, parties: list[int], shares: list[int]) -> int:
    field = finfields.GF(p)
    points = [(i + 1, [field(shares[i])]) for i in parties]
    return int(thresha.recombine(field, points)[0].value)


def main() -> None:
    valid = []
    cases = [
        ("p97", 1, 3, 42),
        ("p97", 2, 5, -5),
        ("mpyc_secint32", 1, 3, 123456789),
        ("mpyc_secint32", 1, 3, -1),
        ("mpyc_secint32", 2, 5, -(2**31)),
        ("mersenne61", 3, 7, 2**60),
        ("mersenne127", 2, 5, 2**126 + 12345),
        ("mersenne127", 0, 2, 99),
    ]
    for idx, (pname, t, n, secret) in enumerate(cases):
        p = PRIMES[pname]
        coeffs = coeffs_for(f"{idx}", t, p)
        shares = shares_of(secret, coeffs, n, p)
        assert mpyc_recombine(p, list(range(t + 1)), shares) == secret % p
        assert mpyc_recombine(p, list(range(n - t - 1, n)), shares) == secret % p
        valid.append(
            {
                "p": str(p),
                "t": t,
                "n": n,
                "secret": str(secret),
                "coeffs": [str(c) for c in coeffs],
                "shares": [str(s) for s in shares],
            }
        )
    invalid = []
    # One tampered share among n = 5, t = 1: Berlekamp-Welch names it.
    p = PRIMES["mpyc_secint32"]
    shares = shares_of(7, coeffs_for("bad0", 1, p), 5, p)
    shares[3] = (shares[3] + 1) % p
    invalid.append(
        {
            "comment": "party 3 tampered",
            "p": str(p),
            "t": 1,
            "shares": {str(i): str(s) for i, s in enumerate(shares)},
            "error": "InconsistentSharesError",
            "bad_parties": [3],
        }
    )
    # Two tampered among n = 7, t = 2: (7-3)//2 = 2 can be named.
    shares = shares_of(-3, coeffs_for("bad1", 2, p), 7, p)
    shares[0] = (shares[0] + 5) % p
    shares[6] = 0
    invalid.append(
        {
            "comment": "parties 0 and 6 tampered",
            "p": str(p),
            "t": 2,
            "shares": {str(i): str(s) for i, s in enumerate(shares)},
            "error": "InconsistentSharesError",
            "bad_parties": [0, 6],
        }
    )
    # t + 2 shares with one wrong: detected, cannot be named.
    shares = shares_of(11, coeffs_for("bad2", 1, p), 3, p)
    shares[1] = (shares[1] + 1) % p
    invalid.append(
        {
            "comment": "one of t+2 wrong: detected, not named",
            "p": str(p),
            "t": 1,
            "shares": {str(i): str(s) for i, s in enumerate(shares)},
            "error": "InconsistentSharesError",
            "bad_parties": [],
        }
    )
    # Fewer than t + 1 shares.
    shares = shares_of(11, coeffs_for("bad3", 2, p), 5, p)
    invalid.append(
        {
            "comment": "t shares only",
            "p": str(p),
            "t": 2,
            "shares": {"1": str(shares[1]), "4": str(shares[4])},
            "error": "InsufficientSharesError",
            "bad_parties": [],
        }
    )
    doc = {
        "description": "Shamir over GF(p), MPyC convention: party i holds f(i+1); "
        "f(x) = secret + coeffs[0] x + ... + coeffs[t-1] x^t. Integers are decimal strings.",
        "generator": "tests/vectors/gen_prime.py",
        "valid": valid,
        "invalid": invalid,
    }
    out = Path(__file__).with_name("prime_shamir.json")
    out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
