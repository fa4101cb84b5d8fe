"""Generate tests/vectors/gf256_shamir.json (deterministic).

GF(2^8) products come from FIPS-197 section 4.2 and are recomputed here with a plain
shift-and-add loop (no Tessera code).  Shamir known answers: shares of a fixed secret
with fixed polynomial values, computed element by element with that loop and the
Lagrange basis, then laid out in the bit-sliced block layout of docs/formats.md by a
plain bit loop, so the vectors check the layout too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def gmul(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return r


def ginv(a: int) -> int:
    return next(b for b in range(1, 256) if gmul(a, b) == 1)


def lagrange_at(xs: list[int], x: int) -> list[int]:
    out = []
    for j, xj in enumerate(xs):
        num = den = 1
        for m, xm in enumerate(xs):
            if m != j:
                num = gmul(num, x ^ xm)
                den = gmul(den, xj ^ xm)
        out.append(gmul(num, ginv(den)))
    return out


def bitslice(elements: list[int]) -> bytes:
    """Element j has bit p equal to bit j of plane p (little-endian bits)."""
    size = len(elements)
    plane_bytes = size // 8
    out = bytearray(size)
    for p in range(8):
        for j, e in enumerate(elements):
            if (e >> p) & 1:
                out[p * plane_bytes + j // 8] |= 1 << (j % 8)
    return bytes(out)


def shamir_case(k: int, n: int, label: str) -> dict[str, object]:
    size = 64
    secret = list(hashlib.sha256(label.encode()).digest() * 2)
    # f(0) = secret and f(1..k-1) fixed "random" values, as tessera draws them.
    randoms = [list(hashlib.sha256(f"{label}/{i}".encode()).digest() * 2) for i in range(1, k)]
    known = [0, *range(1, k)]
    shares = []
    for x in range(1, n + 1):
        w = lagrange_at(known, x)
        elems = []
        for pos in range(size):
            values = [secret[pos]] + [r[pos] for r in randoms]
            acc = 0
            for wi, v in zip(w, values, strict=True):
                acc ^= gmul(wi, v)
            elems.append(acc)
        shares.append(bitslice(elems).hex())
    return {
        "k": k,
        "n": n,
        "secret": bitslice(secret).hex(),
        "random_fragments": [bitslice(r).hex() for r in randoms],
        "shares": shares,
    }


def main() -> None:
    products = [
        [0x57, 0x83, 0xC1],
        [0x57, 0x13, 0xFE],
        [0x57, 0x02, 0xAE],
        [0x57, 0x04, 0x47],
        [0x57, 0x08, 0x8E],
        [0x57, 0x10, 0x07],
        [0x53, 0xCA, 0x01],
    ]
    for a, b, c in products:
        assert gmul(a, b) == c, (a, b, c)
    doc = {
        "source": "FIPS-197 4.2 products; Shamir cases from gen_gf256.py",
        "products": products,
        "shamir": [shamir_case(2, 3, "a"), shamir_case(3, 5, "b"), shamir_case(4, 7, "c")],
    }
    path = Path(__file__).with_name("gf256_shamir.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
