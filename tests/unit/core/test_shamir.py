"""Byte-string Shamir over GF(2^8): known answers, properties, secrecy statistics."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core.bitslice import from_elements, to_elements
from tessera.core.fields import GF256
from tessera.core.poly import lagrange_coefficients
from tessera.core.rng import Drbg
from tessera.core.shamir import as_planes, combine_bytes, split_block, split_bytes

VECTORS = json.loads(
    (Path(__file__).parents[2] / "vectors" / "gf256_shamir.json").read_text(encoding="utf-8")
)


class _Fixed:
    """A RandomSource that hands out fixed blocks in order (known-answer tests only)."""

    def __init__(self, blocks: list[bytes]) -> None:
        self.blocks = list(blocks)

    def random_bytes(self, n: int) -> bytes:
        raise AssertionError("not used")

    def fill(self, out: np.ndarray) -> None:  # type: ignore[override]
        out[:] = np.frombuffer(self.blocks.pop(0), dtype=np.uint8)


@pytest.mark.parametrize("a,b,c", VECTORS["products"], ids=lambda v: f"{v:#04x}")
def test_fips197_products(a: int, b: int, c: int) -> None:
    assert GF256.mul(a, b) == c
    assert GF256.mul(b, a) == c


@pytest.mark.parametrize(
    "case", VECTORS["shamir"], ids=[f"gf256_shamir[{i}]" for i in range(len(VECTORS["shamir"]))]
)
def test_known_answer_shares(case: dict[str, object]) -> None:
    k, n = int(case["k"]), int(case["n"])  # type: ignore[call-overload]
    secret = bytes.fromhex(case["secret"])  # type: ignore[arg-type]
    randoms = [bytes.fromhex(r) for r in case["random_fragments"]]  # type: ignore[attr-defined]
    outs = [np.empty((8, 1), dtype=np.uint64) for _ in range(n)]
    split_block(as_planes(np.frombuffer(secret, np.uint8)), outs, k, _Fixed(randoms))  # type: ignore[arg-type]
    assert [o.tobytes().hex() for o in outs] == case["shares"]
    shares = {i + 1: bytes.fromhex(s) for i, s in enumerate(case["shares"])}  # type: ignore[attr-defined]
    for xs in itertools.combinations(range(1, n + 1), k):
        assert combine_bytes({x: shares[x] for x in xs}) == secret


def test_layout_round_trip() -> None:
    data = bytes(range(256)) * 2
    assert to_elements(from_elements(data)).tobytes() == data
    assert from_elements(to_elements(data)).tobytes() == data


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 7).flatmap(lambda k: st.tuples(st.just(k), st.integers(k, 9))),
    st.integers(1, 4),
    st.data(),
)
def test_any_k_of_n_restore(kn: tuple[int, int], blocks: int, data: st.DataObject) -> None:
    k, n = kn
    secret = data.draw(st.binary(min_size=64 * blocks, max_size=64 * blocks))
    shares = split_bytes(secret, k=k, n=n)
    chosen = data.draw(st.permutations(range(1, n + 1)))[:k]
    assert combine_bytes({x: shares[x - 1] for x in chosen}) == secret


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 6), st.binary(min_size=64, max_size=64))
def test_k_minus_1_shares_give_a_different_value(k: int, secret: bytes) -> None:
    shares = split_bytes(secret, k=k, n=k + 1)
    # k-1 shares define a lower-degree polynomial: its value at 0 is not the secret
    # except by (negligible, 2^-512) chance.
    assert combine_bytes({x: shares[x - 1] for x in range(2, k + 1)}) != secret


def test_shares_lie_on_one_polynomial_of_degree_k_minus_1() -> None:
    secret = bytes(range(64))
    k, n = 3, 6
    shares = [to_elements(s) for s in split_bytes(secret, k=k, n=n)]
    elems = to_elements(secret)
    for pos in (0, 17, 63):
        points = [(0, int(elems[pos]))] + [(x, int(shares[x - 1][pos])) for x in range(1, n + 1)]
        w = lagrange_coefficients(GF256, [p[0] for p in points[:k]], at=5)
        predicted = 0
        for wi, (_x, y) in zip(w, points[:k], strict=True):
            predicted ^= GF256.mul(wi, y)
        assert predicted == points[5][1]


def test_fewer_than_k_shares_are_independent_of_the_secret() -> None:
    """Chi-square: shares 2 and 4 of a 3-of-5 sharing have the same joint distribution
    for the all-zero and the all-0xFF secret (deterministic DRBG: no flakiness)."""
    rng = Drbg.from_seed(bytes(range(32)))
    size = 64 * 256
    hist = {}
    for label, byte in (("zero", 0x00), ("ones", 0xFF)):
        counts = np.zeros(256, dtype=np.int64)
        for _ in range(8):
            shares = split_bytes(bytes([byte]) * size, k=3, n=5, rng=rng)
            a = to_elements(shares[1]).astype(np.int64)
            b = to_elements(shares[3]).astype(np.int64)
            counts += np.bincount((a >> 4) * 16 + (b >> 4), minlength=256)
        hist[label] = counts
    # Two-sample chi-square on 256 cells (255 degrees of freedom); the 0.1% critical
    # value is ~330.  A secret-dependent joint distribution scores in the thousands.
    total = hist["zero"] + hist["ones"]
    expected = total / 2
    chi2 = float(((hist["zero"] - expected) ** 2 / expected).sum() * 2)
    assert chi2 < 330
    # And the test has teeth: the secret itself with one share is far from uniform.
    leak = np.bincount(
        (to_elements(bytes(size)).astype(np.int64) >> 4) * 16
        + (to_elements(split_bytes(bytes(size), k=3, n=5, rng=rng)[1]).astype(np.int64) >> 4),
        minlength=256,
    )
    assert (leak[16:] == 0).all()


def test_parameter_checks() -> None:
    with pytest.raises(ValueError):
        split_bytes(bytes(64), k=1, n=3)
    with pytest.raises(ValueError):
        split_bytes(bytes(64), k=4, n=3)
    with pytest.raises(ValueError):
        split_bytes(bytes(64), k=2, n=256)
    with pytest.raises(ValueError):
        split_bytes(bytes(63), k=2, n=3)
